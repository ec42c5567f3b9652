"""EVALCOMPARE_TASKS: the Python tasks the portal may launch, by name (`{"name": "module:function"}`).

Validated when settings load, like EVALCOMPARE_MODEL_PRICES: a bad value stops every command at
once with the offending entry. Only these paths are ever imported by a worker for a portal run, so
what a run's config names cannot make a worker import arbitrary code.
"""

import json
import re

from django.core.exceptions import ImproperlyConfigured

_SETTING = "EVALCOMPARE_TASKS"
_EXAMPLE = '{"my-model": "mypackage.tasks:answer"}'
TASK_NAME = re.compile(r"\A[A-Za-z0-9_.:-]{1,100}\Z")
CALLABLE_PATH = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_tasks(text: str | None, default: dict[str, str] | None = None) -> dict[str, str]:
    """The registered tasks from the JSON text (the environment variable), else `default`."""
    if text is None or not text.strip():
        return dict(default or {})
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ImproperlyConfigured(f"{_SETTING} is not valid JSON ({error}); expected e.g. {_EXAMPLE}") from None
    return validate_tasks(value)


def validate_tasks(value) -> dict[str, str]:
    """`value` checked: an object of names (letters, digits, _ . : -) to `module:function` paths."""
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{_SETTING} must be a JSON object of task names, e.g. {_EXAMPLE}")
    for name, path in value.items():
        if not TASK_NAME.match(name):
            raise ImproperlyConfigured(f"{_SETTING} has a bad task name {name[:100]!r}: use 1 to 100 letters, "
                                       "digits and _ . : -")
        if not isinstance(path, str) or not CALLABLE_PATH.match(path):
            raise ImproperlyConfigured(f"{_SETTING}[{name!r}] must be 'module:function', not {str(path)[:100]!r}")
    return dict(value)


def parse_callable_path(setting: str, text: str) -> str:
    """A `module:function` setting (empty: unset), checked for its form."""
    text = text.strip()
    if text and not CALLABLE_PATH.match(text):
        raise ImproperlyConfigured(f"{setting} must be 'module:function', not {text[:100]!r}")
    return text
