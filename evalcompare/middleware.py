"""Refuse control characters in the URL, cookies and form fields before any view, the admin's included,
sees them.

A NUL can never be stored or even looked up (PostgreSQL refuses it in text, psycopg raises before
sending it), and no name, id, filter value or cookie of the portal contains a control character, so
such a request is malformed: it gets a 400 naming where the character is, never a 500 and never a
silently cleaned value. Form fields may hold tabs and line breaks (a reason, a JSON input), so
there only NUL is refused. (A cookie can carry one as a quoted octal escape, "\\000", which Django
decodes; a session cookie holding NUL would otherwise fail the session lookup.)
"""

import re

from django.shortcuts import render

CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls and DEL
NUL = re.compile(r"\x00")
SHOWN = 60  # characters of an offending value quoted in the message


def _shown(text: str) -> str:
    """`text` shortened, with its control characters written as escapes so the message shows them."""
    short = text[:SHOWN] + ("…" if len(text) > SHOWN else "")
    return CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", short)


def _code(match) -> str:
    return f"U+{ord(match[0]):04X}"


def control_character_problem(request) -> str | None:
    """What is wrong with the request's path, query string, cookies or form fields, or None."""
    for segment in request.path_info.split("/"):
        if match := CONTROL.search(segment):
            return f"The URL path segment '{_shown(segment)}' contains a control character ({_code(match)})."
    for name, value in request.COOKIES.items():
        if match := CONTROL.search(name + value):
            return (f"The cookie '{_shown(name)}' contains a control character ({_code(match)}); "
                    "clear this site's cookies and sign in again.")
    for key, values in request.GET.lists():
        if match := CONTROL.search(key):
            return f"The name of the parameter '{_shown(key)}' contains a control character ({_code(match)})."
        for value in values:
            if match := CONTROL.search(value):
                return f"The parameter '{_shown(key)}' contains a control character ({_code(match)})."
    if request.method == "POST":
        for key, values in request.POST.lists():
            if NUL.search(key):
                return f"The name of the form field '{_shown(key)}' contains a NUL character (U+0000)."
            if any(NUL.search(value) for value in values):
                return f"The form field '{_shown(key)}' contains a NUL character (U+0000), which cannot be stored."
    return None


class ControlCharacterMiddleware:
    """Answer 400 with the portal's error page (or its `error-message` fragment for htmx) when
    `control_character_problem` finds one. Placed right after SecurityMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = control_character_problem(request)
        if problem is None:
            return self.get_response(request)
        fragment = request.headers.get("HX-Request") == "true" and not request.headers.get("HX-History-Restore-Request")
        template = "comparisons/error.html#error-message" if fragment else "comparisons/error.html"
        context = {"error": {"message": problem, "status": 400}, "heading": "Bad request"}
        return render(request, template, context, status=400)
