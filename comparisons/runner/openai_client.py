"""A minimal client for any OpenAI-compatible chat-completions endpoint, over httpx.

Retries 429 and 5xx answers and transport errors with exponential backoff (honouring a short
Retry-After), then gives up with a message that says what the endpoint answered.
"""

import asyncio
import json
from dataclasses import dataclass

import httpx

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


class ChatCompletionError(RuntimeError):
    """The endpoint refused, kept failing, or answered something that is not a chat completion."""


@dataclass
class ChatCompletion:
    content: str
    input_tokens: int | None
    output_tokens: int | None


async def chat_completion(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str,
    model: str,
    messages: list[dict],
    temperature: float | None = None,
    max_retries: int = 4,
    backoff_s: float = 0.5,
    response_format: dict | None = None,
) -> ChatCompletion:
    """POST {base_url}/chat/completions and return the first choice's text and token usage."""
    body = {"model": model, "messages": messages}
    if temperature is not None:
        body["temperature"] = temperature
    if response_format is not None:
        body["response_format"] = response_format
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/chat/completions"
    last_problem = ""
    for attempt in range(max_retries + 1):
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.TransportError as error:
            last_problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code not in RETRY_STATUSES:
                return _parse(response)
            last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            retry_after = response.headers.get("retry-after")
            if retry_after and attempt < max_retries:
                try:
                    await asyncio.sleep(min(float(retry_after), MAX_RETRY_AFTER_S))
                    continue
                except ValueError:
                    pass
        if attempt < max_retries:
            await asyncio.sleep(backoff_s * 2**attempt)
    raise ChatCompletionError(f"{url} kept failing after {max_retries + 1} attempts; last answer: {last_problem}")


def _parse(response: httpx.Response) -> ChatCompletion:
    if response.status_code >= 400:
        raise ChatCompletionError(f"{response.request.url} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ChatCompletionError(f"not a chat completion: {response.text[:300]}") from error
    usage = data.get("usage") or {}
    return ChatCompletion(content or "", usage.get("prompt_tokens"), usage.get("completion_tokens"))


def parse_judgement(text: str, boolean: bool) -> tuple[float, str]:
    """A judge's answer as (value, reason).

    Accepts JSON like {"score": true, "reason": "..."} (also "value"/"answer"/"passed"), or a bare
    answer: true/false, yes/no, pass/fail, 1/0 for booleans, a number for floats. Anything else
    raises ValueError quoting the answer.
    """
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    reason = ""
    candidate = stripped
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
    if isinstance(data, dict):
        reason = str(data.get("reason") or data.get("explanation") or "")
        candidate = next((data[k] for k in ("score", "value", "answer", "passed", "verdict") if k in data), None)
    elif data is not None:
        candidate = data
    value = _judgement_value(candidate, boolean)
    if value is None:
        raise ValueError(f"malformed judge answer (expected {'true/false' if boolean else 'a number'}): "
                         f"{text[:200]!r}")
    return value, reason


def _judgement_value(candidate, boolean: bool) -> float | None:
    if isinstance(candidate, bool):
        return float(candidate)
    if isinstance(candidate, (int, float)):
        if boolean and candidate not in (0, 1):
            return None
        return float(candidate)
    if isinstance(candidate, str):
        word = candidate.strip().strip(".!\"'").lower()
        if boolean:
            first = word.split()[0].strip(".,:;!") if word.split() else ""
            if first in {"true", "yes", "pass", "passed", "correct", "1"}:
                return 1.0
            if first in {"false", "no", "fail", "failed", "incorrect", "0"}:
                return 0.0
            return None
        try:
            return float(word)
        except ValueError:
            return None
    return None
