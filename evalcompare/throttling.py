"""How django-axes identifies a login attempt: the client's IP address and the username tried.

Without a proxy the client is REMOTE_ADDR. Behind EVALCOMPARE_TRUSTED_PROXIES reverse proxies, each of
which appends the address it received the request from to X-Forwarded-For, the client is the entry that
many places from the right: entries further left were sent by the client itself and can be forged.
"""

from axes.backends import AxesStandaloneBackend
from django.conf import settings

# django-axes keeps the username in a 255-character column; Django's login forms do not bound it.
USERNAME_KEPT = 255


def client_ip(request) -> str | None:
    """The address the outermost trusted proxy saw, or REMOTE_ADDR when no proxy is trusted."""
    trusted = settings.EVALCOMPARE_TRUSTED_PROXIES
    if trusted:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= trusted:
            return forwarded[-trusted]
    return request.META.get("REMOTE_ADDR")


def login_username(request, credentials=None) -> str | None:
    """The username tried, cut to what axes can store: no real username is that long (150 at most), and
    a longer one must be refused like any wrong login, not break the login page."""
    source = credentials if credentials else getattr(request, "POST", {})
    username = source.get("username")
    return username[:USERNAME_KEPT] if isinstance(username, str) else username


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' check, for logins that come with a request (the login pages, the admin's).

    `authenticate()` without a request (`Client.login()` in tests, a script) is no web login: there is no
    client to throttle, so it goes on to the next backend instead of raising as axes' own backend does."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
