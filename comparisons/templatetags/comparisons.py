"""Template filters for showing untrusted LLM inputs, outputs and metric values."""

import json

from django import template
from django.utils.http import urlencode

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
