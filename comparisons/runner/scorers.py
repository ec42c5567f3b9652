"""Built-in scorers, one per evaluator kind: pure functions of (output, reference, input, config).

Outputs come in TensorZero's shapes: a chat output is a list of content blocks
(`[{"type": "text", "text": ...}]`) or a plain string; a JSON output is `{"raw": ..., "parsed": ...}`
or any JSON value. `output_text` and `output_json` read either shape.
"""

import asyncio
import inspect
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
    """Edit distance (insertions, deletions, substitutions of one character each), by rapidfuzz (C++)."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


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


# Scorers whose time grows with the texts: they run in the run's thread pool so that they never
# stall the event loop (and every other datapoint's I/O) on long outputs. The rest take microseconds.
CPU_BOUND_KINDS = {"json_match", "levenshtein", "bleu", "rouge_l"}

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


# ---------------------------------------------------------------------------------------------
# Scorers as the runner uses them: one async interface whatever the evaluator kind.

JUDGE_SYSTEM = {
    True: 'You are a strict evaluator. Answer only with JSON: {"score": true or false, "reason": "<one sentence>"}.',
    False: 'You are a strict evaluator. Answer only with JSON: {"score": <number>, "reason": "<one sentence>"}.',
}
DEFAULT_JUDGE_PROMPT = (
    "Input:\n{input}\n\nReference answer:\n{reference}\n\nAnswer to judge:\n{output}\n\n"
    "Does the answer correctly and fully address the input?"
)


def judge_prompt_problem(prompt) -> str | None:
    """Why `prompt` cannot be an LLM judge's prompt (None when it can, or when unset: the default is
    used). A prompt without {output} would have the judge score an answer it never sees."""
    if prompt is None or prompt == "":
        return None
    if not isinstance(prompt, str):
        return f"config.prompt must be text, not {type(prompt).__name__}"
    if "{output}" not in prompt:
        return ("config.prompt has no {output} placeholder, so the judge would never see the answer; "
                "add {output} (and {input}, {reference} as needed)")
    return None


class Score(tuple):
    """A scorer's (value, reason); `usage` holds what scoring cost, recorded as the feedback's tags.

    An LLM judge's usage is {"judge_model", "judge_input_tokens", "judge_output_tokens",
    "judge_cost"} (tokens as the endpoint reported them, cost in USD from settings.MODEL_PRICES,
    null when the model has no price); other scorers' usage is empty.
    """

    def __new__(cls, value: float, reason: str, usage: dict | None = None):
        score = super().__new__(cls, (value, reason))
        score.usage = usage or {}
        return score


class ScorerError(Exception):
    """A scorer could not produce a value (bad configuration or a bad return value)."""


class RaisedInThread(Exception):
    """Carries an exception that an asyncio future cannot hold (StopIteration) out of a worker thread."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def call_in_thread(function, *args):
    """Call a sync task or scorer in a worker thread. asyncio refuses to set a StopIteration on a
    future (a TypeError inside the event loop), which would leave the datapoint waiting forever."""
    try:
        return function(*args)
    except StopIteration as error:
        raise RaisedInThread(error) from error


def import_callable(path: str):
    """`module:function` (or `module.function`) imported from the current directory or sys.path."""
    import importlib
    import os
    import sys

    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        raise ImportError(f"'{path}' is not of the form module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        target = getattr(module, attribute)
    except AttributeError as error:
        raise ImportError(f"module '{module_name}' has no attribute '{attribute}'") from error
    if not callable(target):
        raise ImportError(f"'{path}' is not callable")
    return target


def _render(template: str, **values) -> str:
    # str.replace, not str.format: inputs and outputs are full of JSON braces.
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


class Scorer:
    """Scores one output for one evaluator: `await scorer.score(output, reference, input, context)`.

    Returns (value, reason) with the value as the evaluator's type (booleans as 0.0/1.0).
    `context` carries the run's shared httpx client and a thread pool for sync custom scorers.
    """

    def __init__(self, evaluator, function=None, rate_limiter=None):
        self.evaluator = evaluator
        self.rate_limiter = rate_limiter  # shared by the run's OpenAI-compatible calls (evaluate's rpm)
        self.name = evaluator.name
        self.boolean = evaluator.value_type == "boolean"
        self.config = evaluator.config or {}
        kind = evaluator.kind
        self.offload = kind in CPU_BOUND_KINDS
        if kind in BUILTIN_SCORERS:
            self.function, self.mode = BUILTIN_SCORERS[kind], "builtin"
        elif kind == "llm_judge" and function is not None:  # a stand-in for the judge (scorers={name: fn})
            self.function, self.mode = function, "custom"
        elif kind == "llm_judge":
            if not self.config.get("model"):
                raise ScorerError(f"llm_judge evaluator '{self.name}' needs config.model")
            problem = judge_prompt_problem(self.config.get("prompt"))
            if problem:
                raise ScorerError(f"llm_judge evaluator '{self.name}': {problem}")
            self.function, self.mode = None, "judge"
        elif kind == "custom":
            function = function or (import_callable(self.config["callable"]) if self.config.get("callable") else None)
            if function is None:
                raise ScorerError(f"custom evaluator '{self.name}' needs a scorer: pass scorers={{'{self.name}': fn}} "
                                  "or set config.callable to 'module:function'")
            self.function, self.mode = function, "custom"
        else:
            raise ScorerError(f"evaluator '{self.name}' has unknown kind '{kind}'")

    async def score(self, output, reference, input, context) -> Score:
        usage = None
        if self.mode == "builtin" and self.offload:
            raw = await asyncio.get_running_loop().run_in_executor(
                context.executor, call_in_thread, self.function, output, reference, self.config)
        elif self.mode == "builtin":
            raw = self.function(output, reference, self.config)
        elif self.mode == "judge":
            raw, usage = await self._judge(output, reference, input, context)
        elif inspect.iscoroutinefunction(self.function):
            raw = await self.function(output, reference, input)
        else:
            raw = await asyncio.get_running_loop().run_in_executor(
                context.executor, call_in_thread, self.function, output, reference, input)
            if inspect.isawaitable(raw):
                raw = await raw
        return Score(*self._normalise(raw), usage)

    def _normalise(self, raw) -> tuple[float, str]:
        reason = ""
        if isinstance(raw, tuple) and len(raw) == 2:
            raw, reason = raw
        if isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, (int, float)):
            try:
                value = float(raw)
            except OverflowError:
                raise ScorerError(f"scorer '{self.name}' returned an integer too large for a score") from None
        else:
            raise ScorerError(f"scorer '{self.name}' returned {raw!r}; expected a bool, a number or (value, reason)")
        if self.boolean and value not in (0.0, 1.0):
            threshold = self.config.get("threshold")
            if threshold is None:
                raise ScorerError(f"scorer '{self.name}' returned {value:g} for a boolean metric "
                                  "(set config.threshold to turn scores into pass/fail)")
            value = float(value >= threshold)
        problem = self.evaluator.value_problem(value)
        if problem:  # the datapoint fails with the reason; the run goes on
            raise ScorerError(f"scorer '{self.name}' returned {value!r}: {problem}")
        return value, str(reason or "")

    async def _judge(self, output, reference, input, context):
        from django.conf import settings

        from comparisons.runner.openai_client import chat_completion, parse_judgement
        from evalcompare.prices import cost_usd

        prompt = _render(self.config.get("prompt") or DEFAULT_JUDGE_PROMPT,
                         input=output_text(input), output=output_text(output), reference=output_text(reference))
        completion = await chat_completion(
            context.http,
            base_url=self.config.get("base_url") or settings.OPENAI_BASE_URL,
            api_key=self.config.get("api_key") or settings.OPENAI_API_KEY,
            model=self.config["model"],
            messages=[{"role": "system", "content": JUDGE_SYSTEM[self.boolean]},
                      {"role": "user", "content": prompt}],
            temperature=self.config.get("temperature", 0),
            max_retries=int(self.config.get("max_retries", 4)),
            backoff_s=float(self.config.get("backoff_s", 0.5)),
            rate_limiter=self.rate_limiter,
        )
        usage = {"judge_model": self.config["model"], "judge_input_tokens": completion.input_tokens,
                 "judge_output_tokens": completion.output_tokens,
                 "judge_cost": cost_usd(settings.MODEL_PRICES, self.config["model"], completion.input_tokens,
                                        completion.output_tokens)}
        return parse_judgement(completion.content, self.boolean), usage
