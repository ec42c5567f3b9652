import json
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import CommandError, call_command

from comparisons.models import EvaluationRun, Inference
from tests.dburl import subprocess_database_url
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, at
from tests.fake_openai import FakeOpenAI


@pytest.fixture
def evaluation(db):
    evaluation = EvaluationFactory(name="qa", prompt_template="Answer briefly.\n\n{input}")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match")
    EvaluatorFactory(evaluation=evaluation, name="similar", kind="levenshtein", value_type="float", optimize="max")
    for i in range(6):
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i),
                         input={"question": f"question {i}"}, reference_output=f"answer {i}")
    return evaluation


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("run_evaluation", *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue()


def exit_code(*args):
    with pytest.raises(CommandError) as error:
        run(*args)
    return error.value.returncode, str(error.value)


def test_pretty_summary_and_exit_zero(evaluation):
    output = run("qa", "--variant", "v1", "--task", "tests.sample_tasks:perfect", "--cutoff", "exact=1",
                 "--tag", "branch=main")
    assert "6 of 6 datapoints" in output and "exact: mean 1.0000" in output and "✓ meets cutoff 1" in output
    assert "latency p50" in output and "/evaluations/qa/?run_ids=" in output
    run_ = EvaluationRun.objects.get()
    assert run_.tags == {"branch": "main"} and run_.config == {"task": "tests.sample_tasks:perfect"}


def test_failing_cutoff_exits_one_naming_the_metric(evaluation):
    code, message = exit_code("qa", "--variant", "v1", "--task", "tests.sample_tasks:sync_task",
                              "--cutoff", "exact=0.9", "--cutoff", "similar=0.1")
    assert code == 1
    assert "exact mean 0.5000 < cutoff 0.9" in message and "similar" not in message


@pytest.mark.parametrize("args, message", [
    (("missing", "--variant", "v", "--task", "tests.sample_tasks:perfect"), "no evaluation named 'missing'"),
    (("qa", "--variant", "v", "--task", "tests.nope:perfect"), "Cannot import task"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:broken"), "not callable"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--cutoff", "exact>1"), "Bad --cutoff"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--cutoff", "tone=1"), "unknown metric"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--concurrency", "0"), "at least 1"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--rpm", "0"), "--rpm must be a positive"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--rpm", "nan"), "--rpm must be a positive"),
    (("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--rpm", "-60"), "--rpm must be a positive"),
])
def test_bad_input_exits_two(evaluation, args, message):
    code, text = exit_code(*args)
    assert code == 2 and message in text
    assert not EvaluationRun.objects.exists()


def test_jsonl_prints_each_datapoint_then_a_summary(evaluation):
    lines = [json.loads(line) for line in run("qa", "--variant", "v", "--task", "tests.sample_tasks:sync_task",
                                               "--format", "jsonl", "--unpinned").splitlines()]
    assert len(lines) == 7 and all("datapoint_id" in line for line in lines[:6])
    assert {line["output"] for line in lines[:6]} == {"answer 0", "wrong", "answer 2", "answer 4"}
    summary = lines[-1]
    assert summary["summary"] and summary["inferences"] == 6 and summary["metrics"]["exact"]["mean"] == 0.5
    assert not Inference.objects.filter(variant_pinned=True).exists()


def test_openai_model_runs_the_prompt_template(evaluation):
    with FakeOpenAI([(200, "answer 5")]) as server:
        run("qa", "--variant", "model", "--openai-model", "small-model", "--openai-base-url", server.url)
    body = server.requests[0]["body"]
    assert body["model"] == "small-model"
    assert body["messages"] == [{"role": "user", "content": "Answer briefly.\n\nquestion 5"}] or \
        body["messages"][0]["content"].startswith("Answer briefly.")
    inference = Inference.objects.get(datapoint__input={"question": "question 5"})
    assert inference.output == [{"type": "text", "text": "answer 5"}]
    assert (inference.input_tokens, inference.output_tokens) == (11, 7)
    assert EvaluationRun.objects.get().config["model"] == "small-model"


@pytest.mark.django_db(transaction=True)
def test_the_real_process_exit_codes(evaluation):
    url = subprocess_database_url()
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "1"}

    def process(*args):
        return subprocess.run([sys.executable, "manage.py", "run_evaluation", "qa", "--variant", "v", "--no-progress",
                               *args], env=env, capture_output=True, text=True, timeout=120)

    assert process("--task", "tests.sample_tasks:perfect").returncode == 0
    failed = process("--task", "tests.sample_tasks:sync_task", "--cutoff", "exact=0.9")
    assert failed.returncode == 1 and "Cutoff failed: exact mean 0.5000" in failed.stderr
    assert process("--task", "tests.nope:x").returncode == 2


@pytest.mark.parametrize("value, mean_holds", [(".5", True), ("0.5", True), ("+.5", True), ("5e-1", True),
                                                ("1e-1", True), ("1E+0", False), ("1.", False), ("0.51", False)])
def test_cutoff_values_parse_as_decimal_numbers(evaluation, value, mean_holds):
    args = ("qa", "--variant", "v", "--task", "tests.sample_tasks:sync_task", "--cutoff", f"exact={value}")
    if mean_holds:  # exact's mean is 0.5
        assert "✓ meets cutoff" in run(*args)
    else:
        code, message = exit_code(*args)
        assert code == 1 and "Cutoff failed: exact mean 0.5000 <" in message
    assert EvaluationRun.objects.get().tags == {}


@pytest.mark.parametrize("text, reason", [
    ("exact=nan", "'nan' is not a number"),
    ("exact=inf", "'inf' is not a number"),
    ("exact=-Infinity", "'-Infinity' is not a number"),
    ("exact=1e999", "'1e999' is too large; a cutoff is a finite number"),
    ("=", "use METRIC=VALUE"),
    ("=0.5", "use METRIC=VALUE"),
    ("exact=", "'' is not a number"),
    ("exact", "use METRIC=VALUE"),
    ("exact =0.5", "use METRIC=VALUE"),
    ("exact=0.5=1", "'0.5=1' is not a number"),
    ("exact=1_0", "'1_0' is not a number"),
    ("exact=٠.٥", "'٠.٥' is not a number"),  # Arabic-Indic digits: float() takes them, we do not
    ("exact=０.５", "'０.５' is not a number"),  # full-width digits
    ("exact=0.5\x00", "is not a number"),
    ("exact= 0.5", "' 0.5' is not a number"),
    ("exact=" + "9" * 5000, "too large"),
])
def test_hostile_cutoffs_exit_two_with_the_reason_and_record_nothing(evaluation, text, reason):
    code, message = exit_code("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--cutoff", text)
    assert code == 2 and message.startswith("Bad --cutoff") and reason in message
    assert len(message) < 400  # a huge argument is not echoed whole
    assert not EvaluationRun.objects.exists()


def test_a_cutoff_for_a_unicode_metric_name_is_an_unknown_metric(evaluation):
    code, message = exit_code("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--cutoff", "précis=.5")
    assert code == 2 and "cutoff for unknown metric 'précis'" in message
    assert not EvaluationRun.objects.exists()


def test_none_outputs_fail_their_datapoints_unless_allowed(evaluation):
    output = run("qa", "--variant", "v", "--task", "tests.sample_tasks:none_for_odd")
    assert "3 error(s)" in output and "exact: mean 1.0000" in output and "n=3" in output
    errors = set(Inference.objects.exclude(error=None).values_list("error", flat=True))
    assert errors == {"the task returned None (allow it with allow_none=True or --allow-none)"}
    allowed = run("qa", "--variant", "v2", "--task", "tests.sample_tasks:none_for_odd", "--allow-none")
    assert "0 error(s)" in allowed and "exact: mean 0.5000" in allowed and "n=6" in allowed


def test_every_datapoint_failing_exits_one_with_the_first_error_even_without_cutoffs(evaluation):
    code, message = exit_code("qa", "--variant", "v", "--task", "tests.sample_tasks:always_fails",
                              "--concurrency", "1")
    assert code == 1
    assert message == "every datapoint failed: RuntimeError in task: no model for question 5"
    assert EvaluationRun.objects.get().status == "completed" and Inference.objects.count() == 6


def test_every_datapoint_failing_in_jsonl_is_in_the_summary(evaluation):
    out = StringIO()
    with pytest.raises(CommandError) as error:
        call_command("run_evaluation", "qa", "--variant", "v", "--task", "tests.sample_tasks:always_fails",
                     "--format", "jsonl", "--no-progress", stdout=out)
    assert error.value.returncode == 1
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert summary["failure"].startswith("every datapoint failed: RuntimeError in task: no model for")
    assert summary["passed"] is False


def test_a_task_that_is_not_a_function_exits_two_before_anything_is_recorded(evaluation):
    code, message = exit_code("qa", "--variant", "v", "--task", "tests.sample_tasks:streams")
    assert code == 2 and "task is an async generator function (streams)" in message
    assert not EvaluationRun.objects.exists()


def test_openai_model_cost_comes_from_the_default_price_table(evaluation):
    with FakeOpenAI([(200, "answer")]) as server:  # usage: 11 in, 7 out
        output = run("qa", "--variant", "m", "--openai-model", "gpt-4o-mini", "--openai-base-url", server.url,
                     "--max-datapoints", "2")
    # gpt-4o-mini's default: $0.15 / $0.60 per million tokens in / out
    assert [i.cost for i in Inference.objects.all()] == [Decimal("0.00000585")] * 2
    assert "task tokens 22 in / 14 out · task cost $0.0000" in output and "cost unknown" not in output


def test_rpm_spreads_model_and_judge_requests_together_and_the_summary_splits_the_costs(evaluation, settings):
    settings.MODEL_PRICES = {"small-model": {"input": 1000.0, "output": 1000.0}}  # $0.018 a call
    with FakeOpenAI([(200, "true")]) as server:
        EvaluatorFactory(evaluation=evaluation, name="judge", kind="llm_judge",
                         config={"model": "judge-model", "base_url": server.url, "api_key": "k"})
        output = run("qa", "--variant", "m", "--openai-model", "small-model", "--openai-base-url", server.url,
                     "--max-datapoints", "2", "--concurrency", "2", "--rpm", "120")
    models = sorted(request["body"]["model"] for request in server.requests)
    assert models == ["judge-model", "judge-model", "small-model", "small-model"]
    arrivals = sorted(request["at"] for request in server.requests)
    assert all(b - a >= 0.45 for a, b in pairwise(arrivals))  # 120 a minute: one every 0.5 s, shared
    assert "task tokens 22 in / 14 out · task cost $0.0360" in output
    assert "judge tokens 22 in / 14 out" in output and "judge cost $" not in output
    assert output.count("cost unknown for judge-model: no price in EVALCOMPARE_MODEL_PRICES") == 1
