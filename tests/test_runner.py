import asyncio
import os
import signal
import threading
import time
from datetime import timedelta
from itertools import pairwise

import pytest

from comparisons.models import Evaluator, Feedback, Inference
from comparisons.queries import comparison_stats, resolve_comparison
from comparisons.runner import TaskResult, evaluate, openai_client
from tests import sample_tasks
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, at
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db


@pytest.fixture
def evaluation():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match", cutoff=0.4)
    EvaluatorFactory(evaluation=evaluation, name="similar", kind="levenshtein", value_type="float")
    for i in range(12):
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i),
                         input={"question": f"question {i}"}, reference_output=f"answer {i}")
    return evaluation


def recorded(run):
    """What a run recorded, independent of ids and timing."""
    return sorted(
        (str(inf.datapoint_id), repr(inf.output), inf.error,
         tuple(sorted((f.metric, f.value) for f in inf.feedback.all())))
        for inf in Inference.objects.filter(run=run).prefetch_related("feedback")
    )


def test_sync_async_and_awaitable_tasks_record_identical_runs(evaluation):
    runs = [evaluate(evaluation, f"v-{name}", task, concurrency=3, progress=False)
            for name, task in [("sync", sample_tasks.sync_task), ("async", sample_tasks.async_task),
                               ("awaitable", sample_tasks.awaitable_task)]]
    assert all(r.status == "completed" and len(r.items) == 12 and r.errors == 0 for r in runs)
    first = recorded(runs[0].run)
    assert len(first) == 12 and all(len(row[3]) == 2 for row in first)
    assert recorded(runs[1].run) == first and recorded(runs[2].run) == first
    assert runs[0].metrics[0].mean == pytest.approx(0.5)


def test_async_concurrency_bound_holds(evaluation):
    DatapointFactory.create_batch(28, evaluation=evaluation, input={"question": "question 0"})
    in_flight, peak = 0, 0

    async def task(input):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return "x"

    result = evaluate(evaluation, "v", task, concurrency=5, progress=False)
    assert len(result.items) == 40 and peak == 5


def test_sync_concurrency_bound_holds(evaluation):
    lock, in_flight, peak = threading.Lock(), [0], [0]
    all_four_running = threading.Barrier(4, timeout=10)

    def task(input):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        if input["question"] in {f"question {i}" for i in range(8, 12)}:  # the first four (newest first)
            all_four_running.wait()
        time.sleep(0.002)
        with lock:
            in_flight[0] -= 1
        return "x"

    result = evaluate(evaluation, "v", task, concurrency=4, progress=False)
    assert len(result.items) == 12 and peak[0] == 4


def test_a_failing_or_slow_task_fails_only_its_datapoint(evaluation):
    async def task(input):
        number = int(input["question"].split()[-1])
        if number == 3:
            raise RuntimeError("provider exploded")
        if number == 4:
            await asyncio.sleep(10)
        if number == 5:
            return {"not json": object()}
        return f"answer {number}"

    result = evaluate(evaluation, "v", task, concurrency=12, timeout=0.5, progress=False)
    assert result.status == "completed" and len(result.items) == 12
    errors = {inf.datapoint.input["question"]: inf.error for inf in Inference.objects.filter(run=result.run)
              if inf.error}
    assert errors["question 3"] == "RuntimeError in task: provider exploded"
    assert errors["question 4"].startswith("TimeoutError: the task did not finish within 0.5 s")
    assert "not JSON-serializable" in errors["question 5"]
    assert len(errors) == 3
    assert Feedback.objects.filter(inference__run=result.run).count() == 9 * 2  # failed ones are not scored
    assert result.metrics[0].n == 9 and result.metrics[0].mean == 1.0


def test_a_failing_scorer_fails_only_its_datapoint(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="picky", kind="custom", value_type="float")

    def picky(output, reference, input):
        if output == "answer 2":
            raise ValueError("cannot score this one")
        return 0.5, "half right"

    result = evaluate(evaluation, "v", sample_tasks.perfect, scorers={"picky": picky}, progress=False)
    failed = Inference.objects.get(run=result.run, output="answer 2")
    assert failed.error == "ValueError in scorer 'picky': cannot score this one"
    assert set(failed.feedback.values_list("metric", flat=True)) == {"exact", "similar"}  # others kept
    picky_feedback = Feedback.objects.filter(inference__run=result.run, metric="picky")
    assert picky_feedback.count() == 11 and {f.reason for f in picky_feedback} == {"half right"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 7.0, -3.0, 1e308 * 10])
def test_a_scorer_value_outside_the_metric_range_fails_its_datapoint_with_the_reason(evaluation, bad):
    EvaluatorFactory(evaluation=evaluation, name="rouge", kind="custom", value_type="float", min_value=0,
                     max_value=1)

    def rouge(output, reference, input):
        return bad if output == "answer 3" else 0.5

    result = evaluate(evaluation, "v", sample_tasks.perfect, scorers={"rouge": rouge}, progress=False)
    failed = Inference.objects.get(run=result.run, output="answer 3")
    assert "scorer 'rouge' returned" in failed.error
    assert ("finite" in failed.error) if bad != bad or abs(bad) == float("inf") else "from 0 to 1" in failed.error
    assert Feedback.objects.filter(inference__run=result.run, metric="rouge").count() == 11  # the run went on
    assert not Feedback.objects.filter(inference=failed, metric="rouge").exists()


def test_a_task_raising_cancelled_error_cancels_the_run_keeping_what_finished(evaluation):
    calls = []

    async def task(input):
        calls.append(input)
        if len(calls) == 6:
            raise asyncio.CancelledError()
        return "x"

    result = evaluate(evaluation, "v", task, concurrency=1, progress=False)
    assert result.status == "cancelled" and len(result.items) == 5
    result.run.refresh_from_db()
    assert result.run.status == "cancelled" and result.run.finished_at is not None
    assert Inference.objects.filter(run=result.run).count() == 5


def test_ctrl_c_cancels_the_run_keeping_what_finished(evaluation):
    calls = []

    def task(input):
        calls.append(input)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C
            time.sleep(0.5)
        return "x"

    result = evaluate(evaluation, "v", task, concurrency=1, progress=False)
    assert result.status == "cancelled"
    assert 5 <= len(result.items) < 12
    assert Inference.objects.filter(run=result.run).count() == len(result.items)
    result.run.refresh_from_db()
    assert result.run.status == "cancelled"


def test_variant_pinned_is_recorded_both_ways(evaluation):
    pinned = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=2)
    sampled = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=2, pinned=False)
    for inference in Inference.objects.filter(run=pinned.run):
        assert inference.variant_pinned and inference.tags["tensorzero::variant_pinned"] == "true"
        assert inference.tags["tensorzero::evaluation_run_id"] == str(pinned.run.id)
    for inference in Inference.objects.filter(run=sampled.run):
        assert not inference.variant_pinned and "tensorzero::variant_pinned" not in inference.tags


def test_task_results_carry_usage_and_tags(evaluation):
    def task(input):
        return TaskResult("answer 0", input_tokens=10, output_tokens=4, cost=0.002, tags={"model": "m1"})

    result = evaluate(evaluation, "v", task, progress=False, max_datapoints=3)
    inference = Inference.objects.filter(run=result.run).first()
    assert (inference.input_tokens, inference.output_tokens, float(inference.cost)) == (10, 4, 0.002)
    assert inference.tags["model"] == "m1"
    assert result.totals() == {"input_tokens": 30, "output_tokens": 12, "cost": pytest.approx(0.006)}


def test_newest_first_limit_and_window_at_run_start(evaluation):
    gone = DatapointFactory(evaluation=evaluation, created=at(1), input={"question": "question 99"})
    gone.retire(when=at(2))
    result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=3)
    assert [item.output for item in result.items] == ["answer 11", "answer 10", "answer 9"]
    everything = evaluate(evaluation, "v", sample_tasks.perfect, progress=False)
    assert "answer 99" not in {item.output for item in everything.items}


def test_bad_arguments_are_refused_before_anything_is_recorded(evaluation):
    with pytest.raises(ValueError, match="no evaluation named"):
        evaluate("nope", "v", sample_tasks.perfect)
    with pytest.raises(ValueError, match="unknown metric 'tone'"):
        evaluate(evaluation, "v", sample_tasks.perfect, cutoffs={"tone": 1})
    with pytest.raises(ValueError, match="concurrency"):
        evaluate(evaluation, "v", sample_tasks.perfect, concurrency=0)
    with pytest.raises(ValueError, match="not current datapoints"):
        evaluate(evaluation, "v", sample_tasks.perfect, datapoint_ids=["01a00000-0000-7000-8000-000000000000"])
    assert not evaluation.runs.exists()


def test_cutoffs_respect_optimize(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="cost", kind="custom", value_type="float", optimize="min",
                     cutoff=0.5)
    result = evaluate(evaluation, "v", sample_tasks.sync_task, scorers={"cost": lambda o, r, i: 0.7},
                      progress=False)
    failed = {m.name: m for m in result.failed_cutoffs}
    assert set(failed) == {"cost"}  # 0.7 > 0.5 where lower is better; exact (0.5 >= 0.4) holds
    relaxed = evaluate(evaluation, "v", sample_tasks.sync_task, scorers={"cost": lambda o, r, i: 0.7},
                       cutoffs={"cost": 0.8, "exact": 0.9}, progress=False)
    assert [m.name for m in relaxed.failed_cutoffs] == ["exact"]
    assert not relaxed.passed


def test_the_recorded_run_matches_the_comparison_page(evaluation):
    result = evaluate(evaluation, "v", sample_tasks.async_task, progress=False)
    stats = comparison_stats(resolve_comparison(evaluation, [result.run.id]))
    for summary, metric in zip(stats.metrics, result.metrics, strict=True):
        page = summary.per_run[0]
        assert (page.n, page.mean) == (metric.n, pytest.approx(metric.mean))
        assert page.ci.low == pytest.approx(metric.ci.low) and page.ci.high == pytest.approx(metric.ci.high)
    assert stats.coverage[result.run.id].inferences == 12
    assert result.comparison_url.endswith(f"/evaluations/qa/?run_ids={result.run.id}")
    second = evaluate(evaluation, "v2", sample_tasks.async_task, progress=False)
    assert second.comparison_url.endswith(f"?run_ids={result.run.id},{second.run.id}")


# --- the LLM judge against a fake endpoint ------------------------------------------------------


@pytest.fixture
def judged(evaluation):
    def add_judge(server, value_type="boolean", **config):
        EvaluatorFactory(evaluation=evaluation, name="judge", kind="llm_judge", value_type=value_type,
                         config={"model": "judge-model", "base_url": server.url, "api_key": "k",
                                 "backoff_s": 0.01, "max_retries": 2, **config})
    return add_judge


def test_llm_judge_retries_429_then_scores(evaluation, judged):
    with FakeOpenAI([(429, "slow down"), (200, '{"score": true, "reason": "correct steps"}')]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=1)
    assert result.errors == 0
    feedback = Feedback.objects.get(inference__run=result.run, metric="judge")
    assert (feedback.value, feedback.reason) == (1.0, "correct steps")
    assert len(server.requests) == 2 and server.requests[0]["auth"] == "Bearer k"
    prompt = server.requests[1]["body"]["messages"][1]["content"]
    assert "question 11" in prompt and "answer 11" in prompt


def test_llm_judge_float_and_malformed_and_exhausted(evaluation, judged):
    with FakeOpenAI([(200, "0.25")]) as server:
        judged(server, value_type="float")
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=2)
    assert [item.scores["judge"][0] for item in result.items] == [0.25, 0.25]
    Evaluator.objects.filter(name="judge").delete()

    with FakeOpenAI([(200, "maybe, it depends")]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=1)
    assert "malformed judge answer" in result.items[0].error and "maybe" in result.items[0].error
    assert set(result.items[0].scores) == {"exact", "similar"}
    Evaluator.objects.filter(name="judge").delete()

    with FakeOpenAI([(503, "overloaded")]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=1)
    assert "kept failing after 3 attempts" in result.items[0].error and "HTTP 503" in result.items[0].error
    assert len(server.requests) == 3


# --- usage, cost and rate limits of OpenAI-compatible calls --------------------------------------

PRICED = {"judge-model": {"input": 1000.0, "output": 2000.0}}  # USD per million: 11 in + 7 out = $0.025


def test_judge_calls_record_tokens_and_cost_on_the_feedback(evaluation, judged, settings):
    settings.MODEL_PRICES = PRICED
    with FakeOpenAI([(200, '{"score": true, "reason": "ok"}')]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=2)
    judge_feedback = Feedback.objects.filter(inference__run=result.run, metric="judge")
    assert [f.tags for f in judge_feedback] == [{"judge_model": "judge-model", "judge_input_tokens": 11,
                                                 "judge_output_tokens": 7, "judge_cost": pytest.approx(0.025)}] * 2
    assert Feedback.objects.get(inference__run=result.run, metric="exact", inference=judge_feedback[0].inference).tags \
        == {}
    assert result.judge_totals() == {"judge_input_tokens": 22, "judge_output_tokens": 14,
                                     "judge_cost": pytest.approx(0.05)}
    assert result.unpriced_models == [] and result.totals()["cost"] is None  # the task reported no cost
    summary = result.format()
    assert "judge tokens 22 in / 14 out · judge cost $0.0500" in summary and "task cost" not in summary
    assert result.as_dict()["judge_cost"] == pytest.approx(0.05) and result.as_dict()["cost"] is None


def test_an_unknown_judge_model_leaves_the_cost_empty_and_says_so_once(evaluation, judged, settings):
    settings.MODEL_PRICES = {"gpt-4o": {"input": 2.5, "output": 10.0}}
    with FakeOpenAI([(200, "true")]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=3)
    tags = [f.tags for f in Feedback.objects.filter(inference__run=result.run, metric="judge")]
    assert len(tags) == 3 and all(t["judge_cost"] is None and t["judge_input_tokens"] == 11 for t in tags)
    assert result.judge_totals() == {"judge_input_tokens": 33, "judge_output_tokens": 21, "judge_cost": None}
    assert result.unpriced_models == ["judge-model"]
    summary = result.format()
    assert summary.count("cost unknown for judge-model") == 1 and "judge cost $" not in summary
    assert "judge tokens 33 in / 21 out" in summary
    assert result.as_dict()["unpriced_models"] == ["judge-model"]


def test_a_429_with_retry_after_is_waited_out(evaluation, judged):
    with FakeOpenAI([(429, "slow down", {"Retry-After": "1"}), (200, "true")]) as server:
        judged(server)  # backoff_s 0.01: without the header the retry would come at once
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=1)
    assert result.errors == 0 and len(server.requests) == 2
    gap = server.requests[1]["at"] - server.requests[0]["at"]
    assert 1.0 <= gap < openai_client.MAX_RETRY_AFTER_S


def test_a_retry_after_beyond_the_cap_waits_the_cap(evaluation, judged, monkeypatch):
    monkeypatch.setattr(openai_client, "MAX_RETRY_AFTER_S", 0.5)
    with FakeOpenAI([(503, "busy", {"Retry-After": "3600"}), (200, "true")]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=1)
    assert result.errors == 0
    gap = server.requests[1]["at"] - server.requests[0]["at"]
    assert 0.5 <= gap < 30  # capped: nowhere near the hour asked


def test_retries_back_off_exponentially_within_the_jitter_bounds(evaluation, judged):
    with FakeOpenAI([(503, "busy"), (503, "busy"), (200, "true")]) as server:
        judged(server, backoff_s=0.2)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=1)
    assert result.errors == 0 and len(server.requests) == 3
    first, second = (b["at"] - a["at"] for a, b in pairwise(server.requests))
    assert first >= 0.1 and second >= 0.2  # at least half of 0.2·2^attempt


def test_rpm_spreads_the_judge_requests_of_a_run(evaluation, judged):
    with FakeOpenAI([(200, "true")]) as server:
        judged(server)
        result = evaluate(evaluation, "v", sample_tasks.perfect, progress=False, max_datapoints=3, concurrency=3,
                          rpm=60)
    assert result.errors == 0 and len(server.requests) == 3
    arrivals = sorted(request["at"] for request in server.requests)
    assert all(b - a >= 0.9 for a, b in pairwise(arrivals))  # one a second, not three at once


def test_rpm_does_not_limit_plain_function_tasks(evaluation):
    calls = []

    def task(input):
        calls.append(time.monotonic())
        return "answer"

    result = evaluate(evaluation, "v", task, progress=False, rpm=1, concurrency=4)
    assert len(result.items) == 12 and result.errors == 0
    assert max(calls) - min(calls) < 30  # limited, 12 calls at 1 a minute would take 11 minutes


@pytest.mark.parametrize("rpm", [0, -5, float("nan"), float("inf")])
def test_a_bad_rpm_is_refused_before_anything_is_recorded(evaluation, rpm):
    with pytest.raises(ValueError, match="rpm must be a positive number"):
        evaluate(evaluation, "v", sample_tasks.perfect, progress=False, rpm=rpm)
    assert not Inference.objects.exists() and not evaluation.runs.exists()
