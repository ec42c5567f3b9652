"""What PostgreSQL can store: checks shared by the admin's forms and the TensorZero import.

PostgreSQL refuses NUL in text and in JSON strings (`\\u0000`), and JSON has no NaN or Infinity,
although Python's json module reads and writes them. Finding these before a write turns what
would be a database error (a 500, or an aborted import) into a message naming the value.
"""

import math

MAX_JSON_DEPTH = 200  # far beyond any real input; deeper values exhaust Python's recursion first


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored in a text column, or None."""
    if "\x00" in text:
        return "contains a NUL character (U+0000), which cannot be stored"
    return None


def json_problem(value) -> str | None:
    """Why the decoded JSON `value` cannot be stored in a jsonb column, or None. Walks without recursion."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            spelling = "NaN" if math.isnan(item) else "Infinity" if item > 0 else "-Infinity"
            return f"holds {spelling}, which JSON cannot represent (use null or a string)"
        if isinstance(item, str):
            if problem := text_problem(item):
                return f"has a string that {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (problem := text_problem(key)):
                    return f"has a key that {problem}"
                pending.append((child, depth + 1))
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return None
