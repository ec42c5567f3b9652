"""The client's IP address, for login throttling.

Without a proxy it is REMOTE_ADDR. Behind EVALCOMPARE_TRUSTED_PROXIES reverse proxies, each of which
appends the address it received the request from to X-Forwarded-For, the client is the entry that
many places from the right: entries further left were sent by the client itself and can be forged.
"""

from django.conf import settings


def client_ip(request) -> str | None:
    """The address the outermost trusted proxy saw, or REMOTE_ADDR when no proxy is trusted."""
    trusted = settings.EVALCOMPARE_TRUSTED_PROXIES
    if trusted:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= trusted:
            return forwarded[-trusted]
    return request.META.get("REMOTE_ADDR")
