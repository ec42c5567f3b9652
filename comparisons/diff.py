"""An escaped, word-level diff of two texts for the datapoint page, bounded in time and size.

Google's diff-match-patch (its C++ implementation, through `fast_diff_match_patch`) diffs the
texts word by word: each distinct word or run of whitespace is mapped to one character, the
character strings are diffed (Myers' O(ND) algorithm with a deadline), and a semantic clean-up
merges the confetti of small equalities into readable passages. When the deadline comes first, the
parts not yet compared are shown as removed and added wholesale: the diff stays correct, only
coarser. Texts past `MAX_WORDS` are not diffed at all.
"""

import re
import time
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from fast_diff_match_patch import diff as dmp_diff

_TOKENS = re.compile(r"\s+|[^\s]+")
_WORD = re.compile(r"[^\s]+")

BUDGET_S = 0.15  # the diff's own time limit; tokenising and escaping 10,000 words add ~30 ms
PAGE_BUDGET_S = 0.5  # all the diffs of one page (up to two per run) together
MAX_WORDS = 50_000  # per text; past this even tokenising and escaping cost more than a page should
_FIRST_CODE = 0x100  # token codes skip control characters and, below, the surrogate range
_SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True)
class WordDiff:
    """A diff for the page: `html` (escaped, with <del>/<ins>), or none when the texts are too long."""

    html: SafeString
    too_large: bool = False
    timed_out: bool = False  # the time limit came first: some passages are whole removals and additions
    words: int = 0  # words in the longer text


def _code(index: int) -> str:
    code = _FIRST_CODE + index
    return chr(code + len(_SURROGATES) if code >= _SURROGATES.start else code)


def word_diff(old: str, new: str, *, budget_s: float = BUDGET_S, max_words: int | None = None) -> WordDiff:
    """How `new` differs from `old`: removed words in <del>, added words in <ins>.

    Takes at most about `budget_s` in the diff itself, whatever the texts (see the module docstring);
    texts of more than `max_words` words (default MAX_WORDS) are not diffed (`too_large`).
    Both texts are untrusted: every piece is escaped before it is wrapped.
    """
    old, new = old or "", new or ""
    words = max(len(_WORD.findall(old)), len(_WORD.findall(new)))
    if words > (MAX_WORDS if max_words is None else max_words):
        return WordDiff(mark_safe(""), too_large=True, words=words)
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    codes: dict[str, str] = {}
    for token in a:
        if token not in codes:
            codes[token] = _code(len(codes))
    for token in b:
        if token not in codes:
            codes[token] = _code(len(codes))
    encoded_a = "".join(codes[t] for t in a)
    encoded_b = "".join(codes[t] for t in b)
    # fast_diff_match_patch reads a time limit of 0 as "no limit": never pass less than 1 ms.
    limit = max(budget_s, 0.001)
    started = time.perf_counter()
    ops = dmp_diff(encoded_a, encoded_b, timelimit=limit, checklines=False, cleanup="Semantic", counts_only=True)
    timed_out = time.perf_counter() - started >= limit
    parts, i, j = [], 0, 0
    for op, length in ops:
        if op == "=":
            parts.append(escape("".join(a[i:i + length])))
            i += length
            j += length
        elif op == "-":
            parts.append(f"<del>{escape(''.join(a[i:i + length]))}</del>")
            i += length
        else:
            parts.append(f"<ins>{escape(''.join(b[j:j + length]))}</ins>")
            j += length
    html = mark_safe("".join(parts))  # noqa: S308 -- every fragment above is escaped
    return WordDiff(html, timed_out=timed_out, words=words)


class DiffBudget:
    """The time all the diffs of one page may take: each gets at most BUDGET_S and what is left."""

    def __init__(self, total_s: float = PAGE_BUDGET_S):
        self.deadline = time.perf_counter() + total_s

    def word_diff(self, old: str, new: str) -> WordDiff:
        return word_diff(old, new, budget_s=min(BUDGET_S, self.deadline - time.perf_counter()))
