"""Template filters for showing untrusted LLM inputs, outputs and metric values."""

import json

from django import template
from django.utils import dateformat
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import localtime

from comparisons.ids import short_id
from comparisons.runner.scorers import output_text

register = template.Library()

LONG_TEXT = 320


@register.filter
def as_text(value) -> str:
    """A readable text of an input, output or reference: chat messages as 'role: text', JSON indented."""
    if value is None:
        return ""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        lines = []
        system = value.get("system")
        if system:
            lines.append("system: " + (system if isinstance(system, str) else json.dumps(system, ensure_ascii=False)))
        for message in value["messages"]:
            content = message.get("content") if isinstance(message, dict) else message
            lines.append(f"{message.get('role', '?') if isinstance(message, dict) else '?'}: {output_text(content)}")
        return "\n".join(lines)
    if isinstance(value, dict) and "parsed" in value:
        parsed = value.get("parsed")
        return json.dumps(parsed, indent=2, ensure_ascii=False) if parsed is not None else str(value.get("raw", ""))
    if isinstance(value, (dict, list)) and not (isinstance(value, list) and value and isinstance(value[0], dict)
                                                 and "type" in value[0]):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return output_text(value)


@register.filter(name="short_id")
def short_id_filter(value) -> str:
    """An id's short form (`ids.short_id`), as every page and the admin show it."""
    return short_id(value)


@register.filter
def is_long(text: str) -> bool:
    return len(text) > LONG_TEXT or text.count("\n") > 5


@register.filter
def metric_value(value, evaluator) -> str:
    """A metric value for display: booleans as true/false, floats with three decimals."""
    if value is None:
        return "–"
    if evaluator is not None and evaluator.is_boolean:
        return "true" if value >= 0.5 else "false"
    return f"{value:.3f}"


@register.filter
def mean_value(value, evaluator) -> str:
    """A mean for display: booleans as a percentage, floats with three decimals."""
    if value is None:
        return "–"
    if evaluator is not None and evaluator.is_boolean:
        return f"{value * 100:.1f}%"
    return f"{value:.3f}"


@register.filter
def signed(value, evaluator=None) -> str:
    """A change with its sign; percentage points for boolean metrics."""
    if value is None:
        return "–"
    if evaluator is not None and evaluator.is_boolean:
        return f"{value * 100:+.1f} pp"
    return f"{value:+.3f}"


@register.filter
def passes(value, evaluator) -> bool | None:
    """Whether one metric value passes its evaluator (None when it has no pass/fail)."""
    return evaluator.passes(value)


@register.filter
def pass_class(passes) -> str:
    return {True: "pass", False: "fail"}.get(passes, "neutral")


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.simple_tag
def query(params: dict, **changes) -> str:
    """A query string from `params` with `changes` applied (a None or empty value drops the key)."""
    merged = {**params, **changes}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in (None, "")})


@register.filter
def json_pairs(value) -> list[tuple[str, str]]:
    """(key, text) pairs of a JSON object for a `{% for key, text in ... %}` loop; non-string values as JSON.

    A template cannot loop over `config.items` when the object has a key "items" (or "keys", "values"):
    the lookup finds the key first. Any other JSON value becomes one pair with an empty key.
    """
    if value is None or value == {}:
        return []
    if not isinstance(value, dict):
        return [("", json.dumps(value, ensure_ascii=False))]
    return [(str(key), item if isinstance(item, str) else json.dumps(item, ensure_ascii=False))
            for key, item in value.items()]


@register.simple_tag
def evalcompare_version() -> str:
    """The running version (package metadata), for the page footer."""
    import evalcompare

    return evalcompare.__version__


@register.filter
def duration_text(value) -> str:
    """A timedelta in words, to the minute: '15 minutes', '1 hour 30 minutes'."""
    minutes = max(round(value.total_seconds() / 60), 1)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours} hour{'s' if hours != 1 else ''}"] if hours else []
    if minutes or not hours:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return " ".join(parts)


PIN_ICON = mark_safe(  # noqa: S308 -- a constant
    '<svg class="pin" aria-label="variant pinned" role="img" width="10" height="10" viewBox="0 0 16 16">'
    '<path fill="currentColor" d="M5 1h6l-1 5 3 3H9v5l-1 2-1-2V9H3l3-3z"/></svg>')


@register.simple_tag
def badge(run, colour: int, pinned: bool = False) -> SafeString:
    """A run's coloured badge: its variant, with its id, run time and pinning in the tooltip. The one
    definition, for templates (`{% badge run colour pinned %}`) and for views that render it once per
    request (every row of the comparison shows it)."""
    started = dateformat.format(localtime(run.started_at), "Y-m-d H:i:s")
    pin_note = " · variant pinned by the caller" if pinned else ""
    return format_html('<span class="badge v{}" title="{} · run {} · {} UTC{}">{}{}</span>', colour, run.variant_name,
                       run.id, started, pin_note, run.variant_name, PIN_ICON if pinned else "")
