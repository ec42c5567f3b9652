"""A minimal client for any OpenAI-compatible chat-completions endpoint, over httpx.

Retries 429 and 5xx answers and transport errors with exponential backoff and jitter, waits at
least what a Retry-After header asks (seconds or an HTTP-date, capped at MAX_RETRY_AFTER_S), and
takes each request's slot from an optional shared RateLimiter; then gives up with a message that
says what the endpoint answered.
"""

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0
MAX_BACKOFF_S = 60.0


class ChatCompletionError(RuntimeError):
    """The endpoint refused, kept failing, or answered something that is not a chat completion."""


@dataclass
class ChatCompletion:
    content: str
    input_tokens: int | None
    output_tokens: int | None


class RateLimiter:
    """At most `rpm` requests a minute, evenly spaced, shared by every call that holds it.

    A token bucket of capacity one: each request takes the next free slot, 60/rpm seconds after the
    previous one, so a burst is spread out instead of tripping the provider's limit. Thread-safe, so
    one limiter may serve calls from several event loops.
    """

    def __init__(self, rpm: float):
        if not rpm > 0 or rpm == float("inf"):
            raise ValueError("rpm must be a positive number")
        self.interval_s = 60.0 / rpm
        self._next = 0.0
        self._lock = threading.Lock()

    async def wait(self):
        """Sleep until this request's slot."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval_s
        if slot > now:
            await asyncio.sleep(slot - now)


def backoff_delay(attempt: int, base_s: float, rng: random.Random | None = None) -> float:
    """Seconds before retry `attempt` (0-based): "equal jitter" in [step/2, step], step = base·2^attempt.

    The random half keeps many workers that failed together from retrying together; the fixed half
    keeps the wait growing. The step is capped at MAX_BACKOFF_S.
    """
    step = min(MAX_BACKOFF_S, base_s * 2**attempt)
    return step / 2 + (rng or random).uniform(0, step / 2)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header as seconds in [0, MAX_RETRY_AFTER_S]: delta-seconds or an HTTP-date.

    None when absent or unreadable (the caller falls back to its backoff).
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT by definition
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


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
    rate_limiter: RateLimiter | None = None,
) -> ChatCompletion:
    """POST {base_url}/chat/completions and return the first choice's text and token usage.

    Every attempt, retries included, takes a slot from `rate_limiter` when one is given.
    """
    body = {"model": model, "messages": messages}
    if temperature is not None:
        body["temperature"] = temperature
    if response_format is not None:
        body["response_format"] = response_format
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/chat/completions"
    last_problem = ""
    for attempt in range(max_retries + 1):
        if rate_limiter is not None:
            await rate_limiter.wait()
        asked = None
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.TransportError as error:
            last_problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code not in RETRY_STATUSES:
                return _parse(response)
            last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            asked = retry_after_s(response.headers.get("retry-after"))
        if attempt < max_retries:
            delay = backoff_delay(attempt, backoff_s)
            await asyncio.sleep(delay if asked is None else max(asked, delay))
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
