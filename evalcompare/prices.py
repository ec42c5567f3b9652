"""Model prices for the runner's cost figures, read from EVALCOMPARE_MODEL_PRICES.

Pure Python (no Django imports beyond the exception), so settings.py can validate the variable
before anything else starts.
"""

import json
import math
import re

from django.core.exceptions import ImproperlyConfigured

# USD per million tokens (input, output) as list prices for OpenAI's API in 2025. These are
# DEFAULTS, not a source of truth: prices change and other providers differ, so override them with
# EVALCOMPARE_MODEL_PRICES.
DEFAULT_MODEL_PRICES = {
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4.1": {"input": 2.00, "output": 8.00},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "o3": {"input": 2.00, "output": 8.00},
    "o3-mini": {"input": 1.10, "output": 4.40},
    "o4-mini": {"input": 1.10, "output": 4.40},
    "gpt-3.5-turbo": {"input": 0.50, "output": 1.50},
}

_SETTING = "EVALCOMPARE_MODEL_PRICES"
_EXAMPLE = '{"my-model": {"input": 0.5, "output": 1.5}}'
# A dated snapshot ("gpt-4o-2024-08-06") costs what its model name costs unless priced itself.
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def parse_model_prices(text: str | None) -> dict[str, dict[str, float]]:
    """The price table: the defaults, updated by `text` (the variable's JSON), validated.

    `text` maps model names to {"input": usd_per_million, "output": usd_per_million}; an entry
    replaces the default of that name, and null removes a default (its cost becomes unknown).
    Raises ImproperlyConfigured with the offending entry for anything else.
    """
    prices = {name: dict(price) for name, price in DEFAULT_MODEL_PRICES.items()}
    if text is None or not text.strip():
        return prices
    try:
        given = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise ImproperlyConfigured(f"{_SETTING} is not valid JSON ({error}); expected e.g. {_EXAMPLE}") from None
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"{_SETTING} must be a JSON object of model names, e.g. {_EXAMPLE}")
    for model, price in given.items():
        if not model.strip():
            raise ImproperlyConfigured(f"{_SETTING} has an empty model name")
        if price is None:
            prices.pop(model, None)
            continue
        if not isinstance(price, dict):
            raise ImproperlyConfigured(f"{_SETTING}[{model!r}] must be an object like "
                                       f'{{"input": 0.5, "output": 1.5}}, not {json.dumps(price)}')
        unknown = sorted(set(price) - {"input", "output"})
        missing = sorted({"input", "output"} - set(price))
        if unknown or missing:
            problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + \
                       ([f"missing {', '.join(missing)}"] if missing else [])
            raise ImproperlyConfigured(f"{_SETTING}[{model!r}]: {'; '.join(problems)} "
                                       "(expected exactly input and output, USD per million tokens)")
        for key in ("input", "output"):
            value = price[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ImproperlyConfigured(f"{_SETTING}[{model!r}][{key!r}] must be a finite number ≥ 0 "
                                           f"(USD per million tokens), not {json.dumps(value)}")
        prices[model] = {"input": float(price["input"]), "output": float(price["output"])}
    return prices


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a price")


def price_for(prices: dict, model: str) -> dict | None:
    """The model's price entry: its own, else its dated snapshot's base name's; None when unknown."""
    if model in prices:
        return prices[model]
    return prices.get(_SNAPSHOT.sub("", model))


def cost_usd(prices: dict, model: str, input_tokens: int | None, output_tokens: int | None) -> float | None:
    """USD for one call; None when the model has no price or the endpoint reported no usage."""
    price = price_for(prices, model)
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    return ((input_tokens or 0) * price["input"] + (output_tokens or 0) * price["output"]) / 1_000_000
