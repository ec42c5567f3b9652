import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from evalcompare.prices import DEFAULT_MODEL_PRICES, cost_usd, parse_model_prices, price_for


def test_without_the_variable_the_defaults_apply():
    assert parse_model_prices(None) == DEFAULT_MODEL_PRICES
    assert parse_model_prices("  ") == DEFAULT_MODEL_PRICES
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini"):
        assert parse_model_prices(None)[model]["input"] > 0


def test_entries_override_add_and_remove_defaults():
    prices = parse_model_prices('{"gpt-4o": {"input": 1, "output": 3}, "local-llama": {"input": 0, "output": 0},'
                                ' "o3-mini": null}')
    assert prices["gpt-4o"] == {"input": 1.0, "output": 3.0}
    assert prices["local-llama"] == {"input": 0.0, "output": 0.0}
    assert "o3-mini" not in prices
    assert prices["gpt-4o-mini"] == DEFAULT_MODEL_PRICES["gpt-4o-mini"]  # untouched defaults stay
    assert DEFAULT_MODEL_PRICES["gpt-4o"] != {"input": 1.0, "output": 3.0}  # the defaults are not mutated


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ('["gpt-4o"]', "must be a JSON object"),
    ('{"m": 2.5}', "must be an object like"),
    ('{"m": {"input": -1, "output": 1}}', "['m']['input'] must be a finite number ≥ 0"),
    ('{"m": {"input": 1, "output": NaN}}', "NaN is not a price"),
    ('{"m": {"input": Infinity, "output": 1}}', "Infinity is not a price"),
    ('{"m": {"input": 1e999, "output": 1}}', "['m']['input'] must be a finite number"),
    ('{"m": {"input": "2.5", "output": 1}}', 'not "2.5"'),
    ('{"m": {"input": true, "output": 1}}', "not true"),
    ('{"m": {"input": 1, "output": 2, "cached_input": 0.5}}', "unknown key(s) cached_input"),
    ('{"m": {"input": 1, "outptu": 2}}', "unknown key(s) outptu; missing output"),
    ('{" ": {"input": 1, "output": 2}}', "empty model name"),
])
def test_hostile_values_are_refused_naming_the_entry(text, message):
    with pytest.raises(ImproperlyConfigured) as error:
        parse_model_prices(text)
    assert message in str(error.value)
    assert "EVALCOMPARE_MODEL_PRICES" in str(error.value)


def test_cost_is_per_million_tokens_and_unknown_models_have_none():
    prices = {"m": {"input": 2.0, "output": 10.0}}
    assert cost_usd(prices, "m", 1_000_000, 100_000) == pytest.approx(3.0)
    assert cost_usd(prices, "m", 500, None) == pytest.approx(0.001)
    assert cost_usd(prices, "m", None, None) is None  # no usage reported: unknown, not free
    assert cost_usd(prices, "other", 10, 10) is None
    assert cost_usd({"m": {"input": 0.0, "output": 0.0}}, "m", 10, 10) == 0.0  # free is 0, unknown is None


def test_dated_snapshots_cost_what_their_model_costs_unless_priced_themselves():
    prices = {"gpt-4o": {"input": 2.5, "output": 10.0}, "gpt-4o-2024-05-13": {"input": 5.0, "output": 15.0}}
    assert price_for(prices, "gpt-4o-2024-08-06") == prices["gpt-4o"]
    assert price_for(prices, "gpt-4o-2024-05-13") == prices["gpt-4o-2024-05-13"]
    assert price_for(prices, "gpt-4o-mini") is None  # no prefix guessing between different models


def test_a_bad_variable_stops_django_at_settings_time_with_the_message():
    env = {**os.environ, "DEBUG": "1", "EVALCOMPARE_MODEL_PRICES": '{"gpt-4o": {"input": -2, "output": 10}}'}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.run([sys.executable, "-c", "import evalcompare.settings"], env=env, capture_output=True,
                             text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
    assert "EVALCOMPARE_MODEL_PRICES['gpt-4o']['input'] must be a finite number ≥ 0" in process.stderr
