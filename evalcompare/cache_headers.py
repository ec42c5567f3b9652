"""Cache-Control for the portal's own responses: nothing it renders may be kept by a browser or a proxy."""

from django.utils.cache import patch_cache_control


class PrivateNoStoreMiddleware:
    """`Cache-Control: private, no-store` on every response that sets no Cache-Control of its own.

    Portal pages show one logged-in user's data, and the login page carries a CSRF token: no shared
    cache may keep them, and after logging out the back button must not show them from the browser's
    cache. Views that set their own header keep it (the login page and the admin use Django's
    `never_cache`, which says no-store too). Static files never get here: WhiteNoise, before this in
    MIDDLEWARE, answers them itself with long-lived caching for the hashed names.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response
