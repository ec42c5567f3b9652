"""An escaped, word-level diff of two texts for the datapoint page."""

import difflib
import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

_TOKENS = re.compile(r"\s+|[^\s]+")


def word_diff(old: str, new: str) -> SafeString:
    """HTML showing how `new` differs from `old`: removed words in <del>, added words in <ins>.

    Both texts are untrusted: every piece is escaped before it is wrapped.
    """
    a, b = _TOKENS.findall(old or ""), _TOKENS.findall(new or "")
    parts = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(escape("".join(a[a0:a1])))
            continue
        if op in ("delete", "replace"):
            parts.append(f"<del>{escape(''.join(a[a0:a1]))}</del>")
        if op in ("insert", "replace"):
            parts.append(f"<ins>{escape(''.join(b[b0:b1]))}</ins>")
    return mark_safe("".join(parts))  # noqa: S308 -- every fragment above is escaped
