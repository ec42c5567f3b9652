"""A task that calls an OpenAI-compatible model with the evaluation's prompt template (no code needed)."""

import json

import httpx
from django.conf import settings

from comparisons.runner.core import TaskResult
from comparisons.runner.openai_client import chat_completion
from comparisons.runner.scorers import _render, output_text
from evalcompare.prices import cost_usd, price_for


class OpenAIModelTask:
    """`await task(input)`: the evaluation's prompt filled with the input, sent to `model`.

    The template's `{input}` is replaced by the input's text; without `{input}` the template is the
    system prompt and the input's chat messages (or its text) follow. Chat functions get content
    blocks back, JSON functions `{"raw": ..., "parsed": ...}`. Each result carries the tokens the
    endpoint reported and their cost from settings.MODEL_PRICES (None when the model has no price,
    and then `unpriced_models` names it). `evaluate(..., rpm=N)` sets `rate_limiter`.
    """

    def __init__(self, *, model: str, base_url: str, api_key: str, prompt_template: str, function_kind: str,
                 temperature: float | None = None, max_retries: int = 4):
        self.model, self.base_url, self.api_key = model, base_url, api_key
        self.template = prompt_template or "{input}"
        self.json = function_kind == "json"
        self.temperature, self.max_retries = temperature, max_retries
        self.http = None
        self.rate_limiter = None
        self.unpriced_models: set[str] = set()

    def messages(self, input) -> list[dict]:
        if "{input}" in self.template:
            return [{"role": "user", "content": _render(self.template, input=_input_text(input))}]
        messages = [{"role": "system", "content": self.template}]
        if isinstance(input, dict) and isinstance(input.get("messages"), list):
            messages += [{"role": m.get("role", "user"), "content": output_text(m.get("content"))}
                         for m in input["messages"] if isinstance(m, dict)]
        else:
            messages.append({"role": "user", "content": _input_text(input)})
        return messages

    async def __call__(self, input):
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=httpx.Timeout(120.0))
        completion = await chat_completion(
            self.http, base_url=self.base_url, api_key=self.api_key, model=self.model,
            messages=self.messages(input), temperature=self.temperature, max_retries=self.max_retries,
            response_format={"type": "json_object"} if self.json else None, rate_limiter=self.rate_limiter,
        )
        cost = cost_usd(settings.MODEL_PRICES, self.model, completion.input_tokens, completion.output_tokens)
        if cost is None and price_for(settings.MODEL_PRICES, self.model) is None:
            self.unpriced_models.add(self.model)
        if self.json:
            try:
                parsed = json.loads(completion.content)
            except ValueError:
                parsed = None
            output = {"raw": completion.content, "parsed": parsed}
        else:
            output = [{"type": "text", "text": completion.content}]
        return TaskResult(output, completion.input_tokens, completion.output_tokens, cost)

    async def aclose(self):
        if self.http is not None:
            await self.http.aclose()
            self.http = None


def _input_text(input) -> str:
    if isinstance(input, dict) and isinstance(input.get("messages"), list):
        return "\n".join(output_text(m.get("content")) for m in input["messages"] if isinstance(m, dict))
    return output_text(input)
