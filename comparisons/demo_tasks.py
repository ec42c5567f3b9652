"""Offline stand-ins for the demo, so a new user can launch runs in `make demo` without an API key.

- `offline_model` is a deterministic model stand-in (seeded by the input): invoices are extracted
  by regular expressions, support questions are answered from the demo's help-center answers
  (fixtures/demo.json), each with seeded mistakes, latency (40–240 ms) and token usage priced as
  gpt-4o-mini. Registered in EVALCOMPARE_TASKS as `demo-offline` (the default with DEBUG=1).
- `offline_judge` stands in for the LLM judges (EVALCOMPARE_JUDGE_STANDIN, set by `make demo`): an
  answer resolves the question when its ROUGE-L against the vetted answer is at least 0.5. Runs
  scored by it record `judge_standin` in their config.
"""

import asyncio
import functools
import hashlib
import json
import random
import re

from django.conf import settings

from comparisons.runner.core import TaskResult
from comparisons.runner.scorers import output_text, rouge_l_score
from evalcompare.prices import cost_usd

PRICED_AS = "gpt-4o-mini"
WRONG_ANSWER = "You can find this under Settings → Profile → Preferences, then toggle the option on."


def _rng(input) -> random.Random:
    digest = hashlib.sha256(json.dumps(input, sort_keys=True, default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _question(input) -> str:
    messages = input.get("messages") if isinstance(input, dict) else None
    if isinstance(messages, list):
        return "\n".join(output_text(m.get("content")) for m in messages if isinstance(m, dict))
    return output_text(input)


@functools.cache
def _help_center() -> dict[str, str]:
    """Question text -> vetted answer, from the demo's support datapoints."""
    from comparisons.demo import DEMO_FILE

    answers = {}
    for datapoint in json.loads(DEMO_FILE.read_text())["datapoints"]:
        if isinstance(datapoint["reference_output"], str):
            answers[_question(datapoint["input"])] = datapoint["reference_output"]
    return answers


def _extract_invoice(text: str, rng: random.Random) -> dict:
    def find(pattern):
        match = re.search(pattern, text)
        return match.group(1).strip() if match else None

    total = find(r"Total due:\s*[A-Z]{3}\s*([0-9.]+)")
    fields = {"vendor": find(r"From:\s*(.+)"), "invoice_number": find(r"INVOICE\s+(\S+)"),
              "date": find(r"Issued:\s*(\S+)"), "currency": find(r"Total due:\s*([A-Z]{3})"),
              "total": float(total) if total else None}
    if fields["date"] and rng.random() < 0.12:  # a classic: the date in the document's own format
        year, month, day = fields["date"].split("-")
        fields["date"] = f"{day}/{month}/{year}"
    if rng.random() < 0.06:
        fields["currency"] = None
    return fields


async def offline_model(input):
    """A deterministic, seeded model stand-in for the demo's two functions (see the module docstring)."""
    rng = _rng(input)
    await asyncio.sleep(rng.uniform(0.04, 0.24))
    question = _question(input)
    if question.lstrip().startswith("INVOICE"):
        fields = _extract_invoice(question, rng)
        raw = json.dumps(fields) if rng.random() > 0.03 else json.dumps(fields)[:-9]  # now and then cut short
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        output = {"raw": raw, "parsed": parsed}
        text = raw
    else:
        answer = _help_center().get(question)
        if answer is None or rng.random() < 0.2:
            text = WRONG_ANSWER
        elif rng.random() < 0.35:
            text = "Happy to help. " + answer.split(". ")[0].rstrip(".") + "."
        else:
            text = answer
        output = [{"type": "text", "text": text}]
    input_tokens = 60 + len(question.split()) * 4 // 3 + rng.randrange(40)
    output_tokens = max(1, len(text.split()) * 4 // 3)
    return TaskResult(output, input_tokens, output_tokens,
                      cost_usd(settings.MODEL_PRICES, PRICED_AS, input_tokens, output_tokens))


def offline_judge(output, reference, input):
    """The LLM judges' offline stand-in: resolved when ROUGE-L against the reference is ≥ 0.5."""
    score = rouge_l_score(output_text(output), output_text(reference))
    verdict = score >= 0.5
    return verdict, f"offline stand-in judge: ROUGE-L {score:.2f} {'≥' if verdict else '<'} 0.5"
