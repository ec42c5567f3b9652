"""Built-in scorers, one per evaluator kind: pure functions of (output, reference, input, config).

Outputs come in TensorZero's shapes: a chat output is a list of content blocks
(`[{"type": "text", "text": ...}]`) or a plain string; a JSON output is `{"raw": ..., "parsed": ...}`
or any JSON value. `output_text` and `output_json` read either shape.
"""

import json
import re
from functools import lru_cache


def output_text(value) -> str:
    """The text of an output or reference: content blocks joined, JSON `raw`, or JSON dumped."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(block, dict) for block in value):
        texts = [block.get("text", "") for block in value if block.get("type", "text") == "text"]
        if any(texts):
            return "\n".join(t for t in texts if isinstance(t, str))
    if isinstance(value, dict) and "raw" in value and isinstance(value["raw"], str):
        return value["raw"]
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_NOT_JSON = object()


def output_json(value):
    """The JSON value of an output: `parsed` when present, a `raw` string parsed, or the value itself.

    Returns the module's _NOT_JSON marker when the output holds no valid JSON.
    """
    if isinstance(value, dict) and ("parsed" in value or "raw" in value):
        if value.get("parsed") is not None:
            return value["parsed"]
        value = value.get("raw")
    if isinstance(value, list) and value and all(isinstance(b, dict) and "type" in b for b in value):
        value = output_text(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return _NOT_JSON
    return value


def exact_match(output, reference, config=None) -> bool:
    """Output text equals the reference text (whitespace-trimmed; `case_sensitive` default true)."""
    config = config or {}
    a, b = output_text(output).strip(), output_text(reference).strip()
    if not config.get("case_sensitive", True):
        a, b = a.lower(), b.lower()
    return a == b


def contains(output, reference, config=None) -> bool:
    """Output contains `config["text"]` (or the reference text when no text is configured)."""
    config = config or {}
    needle = config.get("text") or output_text(reference)
    haystack = output_text(output)
    if not config.get("case_sensitive", False):
        needle, haystack = needle.lower(), haystack.lower()
    return needle in haystack


def regex(output, reference, config=None) -> bool:
    """Output matches `config["pattern"]` (re.search)."""
    pattern = (config or {}).get("pattern")
    if not pattern:
        raise ValueError("regex evaluator needs config.pattern")
    return re.search(pattern, output_text(output)) is not None


def json_valid(output, reference=None, config=None) -> bool:
    """Output holds valid JSON (and an object, when `config["require_object"]`)."""
    value = output_json(output)
    if value is _NOT_JSON:
        return False
    return isinstance(value, dict) if (config or {}).get("require_object") else True


def json_match_score(output_value, reference_value) -> float:
    """Share of the reference's top-level fields the output gets exactly right (1.0 if no fields)."""
    if not isinstance(reference_value, dict):
        return float(output_value == reference_value)
    if not reference_value:
        return 1.0
    if not isinstance(output_value, dict):
        return 0.0
    right = sum(1 for key, want in reference_value.items() if output_value.get(key) == want)
    return right / len(reference_value)


def json_match(output, reference, config=None) -> float:
    """Field-by-field match of the output JSON against the reference JSON, as a share in [0, 1]."""
    value = output_json(output)
    return 0.0 if value is _NOT_JSON else json_match_score(value, output_json(reference))


def levenshtein_distance(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), two-row dynamic programming."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def levenshtein(output, reference, config=None) -> float:
    """Similarity 1 − distance / max length, in [0, 1] (1.0 for two empty texts)."""
    a, b = output_text(output), output_text(reference)
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1 - levenshtein_distance(a, b) / longest


def bleu(output, reference, config=None) -> float:
    """Sentence BLEU from sacrebleu, scaled to [0, 1]."""
    import sacrebleu

    return sacrebleu.sentence_bleu(output_text(output), [output_text(reference)]).score / 100


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_score(prediction: str, target: str) -> float:
    """ROUGE-L F-measure of two texts, from the rouge-score package."""
    return _rouge_scorer().score(target, prediction)["rougeL"].fmeasure


def rouge_l(output, reference, config=None) -> float:
    """ROUGE-L F-measure of the output against the reference."""
    return rouge_l_score(output_text(output), output_text(reference))


BUILTIN_SCORERS = {
    "exact_match": exact_match,
    "contains": contains,
    "regex": regex,
    "json_valid": json_valid,
    "json_match": json_match,
    "levenshtein": levenshtein,
    "bleu": bleu,
    "rouge_l": rouge_l,
}
