import asyncio
import os
import signal
import threading
import time
from collections import defaultdict
from datetime import timedelta
from itertools import pairwise

import pytest

from comparisons.models import EvaluationRun, Evaluator, Feedback, Inference
from comparisons.queries import comparison_stats, resolve_comparison
from comparisons.runner import TaskResult, core, evaluate, openai_client
from comparisons.runner.core import FAILURE_TAG
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
    assert errors["question 5"] == ("the task returned an output that cannot be stored as JSON: "
                                   "TypeError: Object of type object is not JSON serializable")
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


def test_ctrl_c_after_the_last_task_still_writes_every_row_and_completes(evaluation):
    seen = []

    def on_item(item):  # runs in the calling thread, between the tasks' end and the last write
        seen.append(item)
        if len(seen) == 12:
            os.kill(os.getpid(), signal.SIGINT)

    result = evaluate(evaluation, "v", sample_tasks.sync_task, concurrency=4, progress=False, on_item=on_item)
    result.run.refresh_from_db()
    assert result.status == result.run.status == "completed" and result.signal is None
    assert Inference.objects.filter(run=result.run).count() == 12


def test_an_exception_in_on_item_fails_the_run_with_the_reason_keeping_what_finished(evaluation):
    seen = []

    def on_item(item):  # e.g. `run_evaluation --format jsonl | head -1`
        seen.append(item)
        if len(seen) == 3:
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        evaluate(evaluation, "v", sample_tasks.sync_task, concurrency=1, progress=False, on_item=on_item)
    run = EvaluationRun.objects.get()
    assert run.status == "failed" and run.finished_at is not None
    assert run.tags[FAILURE_TAG] == "BrokenPipeError in evaluate(): [Errno 32] Broken pipe"
    recorded_ids = set(Inference.objects.filter(run=run).values_list("id", flat=True))
    assert {item.inference_id for item in seen} <= recorded_ids


def test_the_heartbeat_is_refreshed_while_the_run_runs(evaluation, monkeypatch):
    monkeypatch.setattr(core, "HEARTBEAT_S", 0.0)  # every poll, instead of every 10 s
    beats = []

    def task(input):
        time.sleep(0.06)  # longer than a poll, so that polls (and beats) happen between items
        return "x"

    def on_item(item):
        beats.append(EvaluationRun.objects.values_list("heartbeat_at", flat=True).get())

    result = evaluate(evaluation, "v", task, concurrency=1, progress=False, on_item=on_item)
    assert beats[0] is not None and len(set(beats)) > 1 and beats == sorted(beats)
    result.run.refresh_from_db()
    assert result.run.heartbeat_at >= beats[-1] and not result.run.interrupted


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


def test_a_blocking_call_in_an_async_task_is_named_in_the_summary(evaluation):
    async def sleepy(input):
        if input["question"] == "question 4":
            time.sleep(0.3)  # blocks the event loop: the mistake the warning is for
        await asyncio.sleep(0)
        return f"answer {input['question'].split()[-1]}"

    result = evaluate(evaluation, "v", sleepy, concurrency=4, progress=False)
    assert result.blocking is not None and result.blocking.where == "the task"
    assert 0.25 < result.blocking.seconds < 5
    assert "the event loop was blocked for" in result.format() and "by the task" in result.format()
    assert result.as_dict()["loop_blocked"]["by"] == "the task"


def test_a_blocking_async_scorer_is_named_and_a_healthy_run_has_no_warning(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="slow", kind="custom", value_type="float")

    async def slow(output, reference, input):
        if output == "answer 7":
            time.sleep(0.3)
        return 1.0

    result = evaluate(evaluation, "v", sample_tasks.perfect, scorers={"slow": slow}, timeout=10, progress=False)
    assert result.blocking is not None and result.blocking.where == "scorer 'slow'"
    healthy = evaluate(evaluation, "w", sample_tasks.perfect, scorers={"slow": lambda o, r, i: 1.0}, progress=False)
    assert healthy.blocking is None and "warning" not in healthy.format()


def test_cpu_bound_scorers_run_off_the_event_loop(evaluation, monkeypatch):
    """Levenshtein, BLEU, ROUGE-L and JSON match run in the run's threads, never on the event loop."""
    from comparisons.runner import scorers as scorer_module

    EvaluatorFactory(evaluation=evaluation, name="rouge", kind="rouge_l", value_type="float")
    EvaluatorFactory(evaluation=evaluation, name="bleu", kind="bleu", value_type="float")
    threads = defaultdict(set)
    for kind in ("levenshtein", "rouge_l", "bleu", "exact_match"):
        original = scorer_module.BUILTIN_SCORERS[kind]

        def spy(output, reference, config, kind=kind, original=original):
            threads[kind].add(threading.current_thread().name)
            return original(output, reference, config)

        monkeypatch.setitem(scorer_module.BUILTIN_SCORERS, kind, spy)
    long_text = " ".join(f"word{i % 97}" for i in range(6000))
    result = evaluate(evaluation, "v", lambda input: long_text + input["question"], concurrency=4, progress=False)
    assert result.errors == 0 and all(0 <= item.scores["rouge"][0] <= 1 for item in result.items)
    assert threads["exact_match"] == {"evalcompare-loop"}  # microseconds: stays on the loop
    for kind in ("levenshtein", "rouge_l", "bleu"):
        assert threads[kind] and "evalcompare-loop" not in threads[kind], kind


def test_levenshtein_is_exact_and_fast_on_long_texts():
    from comparisons.runner.scorers import levenshtein, levenshtein_distance

    assert levenshtein_distance("kitten", "sitting") == 3 and levenshtein_distance("", "abc") == 3
    assert levenshtein_distance("naïve ☃", "naive ☃") == 1
    assert levenshtein("a" * 1875, "b" * 1875) == 0.0 and levenshtein("", "") == 1.0


# --- per-datapoint failures stay per-datapoint ---------------------------------------------------


def number_of(input):
    return int(input["question"].split()[-1])


def test_nul_and_unpaired_surrogates_are_stored_as_replacement_characters_and_noted(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="seen", kind="custom", value_type="float", min_value=0,
                     max_value=1e6)
    seen = {}

    def scorer(output, reference, input):
        seen[number_of(input)] = output
        return 1.0, "reason with a NUL \x00 here"

    def task(input):
        number = number_of(input)
        if number == 1:
            return {"text": "a\x00b", "nested": [{"k\x00ey": "\x00"}], "emoji": "\ud83d\ude00", "ok": "é"}
        if number == 2:
            return TaskResult("lone \ud800 surrogate", tags={"source": "x\x00y"})
        if number == 3:
            raise ValueError("bad byte \x00 and \udfff in the message")
        return f"answer {number}"

    result = evaluate(evaluation, "v", task, scorers={"seen": scorer}, progress=False)
    assert result.status == "completed" and len(result.items) == 12
    by_number = {number_of(inf.datapoint.input): inf for inf in Inference.objects.filter(run=result.run)}
    first = by_number[1]
    assert first.error is None
    # The surrogate pair written as two code points is one real character, kept; NULs are replaced.
    assert first.output == {"text": "a\ufffdb", "nested": [{"k\ufffdey": "\ufffd"}], "emoji": "😀", "ok": "é"}
    assert first.tags["evalcompare::replaced_characters"] == "3"
    assert seen[1] == first.output  # the scorers saw what is recorded
    second = by_number[2]
    assert second.output == "lone \ufffd surrogate" and second.tags["source"] == "x\ufffdy"
    assert second.tags["evalcompare::replaced_characters"] == "2"
    assert by_number[3].error == "ValueError in task: bad byte \ufffd and \ufffd in the message"
    assert "evalcompare::replaced_characters" not in by_number[4].tags
    reasons = set(Feedback.objects.filter(inference__run=result.run, metric="seen").values_list("reason", flat=True))
    assert reasons == {"reason with a NUL \ufffd here"}
    assert Feedback.objects.filter(inference__run=result.run, metric="seen").count() == 11


@pytest.mark.parametrize("bad, problem", [
    ({"total": float("nan")}, "nan (JSON has no NaN or infinity) at ['total']"),
    ([1, {"x": [float("inf")]}], "inf (JSON has no NaN or infinity) at [1]['x'][0]"),
    (float("-inf"), "-inf (JSON has no NaN or infinity)"),
    (10 ** 5000, "ValueError: Exceeds the limit"),
    ({"when": object()}, "TypeError: Object of type object is not JSON serializable"),
    ({("a", "b"): 1}, "TypeError: keys must be str"),
], ids=["nan", "inf", "-inf", "huge-int", "object", "tuple-key"])
def test_outputs_json_cannot_hold_fail_only_their_datapoint(evaluation, bad, problem):
    def task(input):
        return bad if number_of(input) == 7 else f"answer {number_of(input)}"

    result = evaluate(evaluation, "v", task, progress=False)
    assert result.status == "completed" and result.errors == 1
    failed = Inference.objects.get(run=result.run, error__isnull=False)
    assert failed.datapoint.input == {"question": "question 7"} and failed.output is None
    assert failed.error.startswith("the task returned an output that cannot be stored as JSON: ")
    assert problem in failed.error
    assert not failed.feedback.exists()
    assert Inference.objects.filter(run=result.run, error__isnull=True).count() == 11


def test_tags_json_cannot_hold_fail_only_their_datapoint(evaluation):
    def task(input):
        return TaskResult("x", tags={"score": float("nan")} if number_of(input) == 2 else {"score": 1})

    result = evaluate(evaluation, "v", task, progress=False)
    failed = Inference.objects.get(run=result.run, error__isnull=False)
    assert failed.error == ("the task returned tags that cannot be stored as JSON: "
                            "nan (JSON has no NaN or infinity) at ['score']")
    assert "score" not in failed.tags and Inference.objects.filter(run=result.run).count() == 12


@pytest.mark.parametrize("timeout", [None, 5])
def test_a_timeout_error_raised_by_the_task_is_its_own_error_not_the_runs_timeout(evaluation, timeout):
    EvaluatorFactory(evaluation=evaluation, name="slowpoke", kind="custom", value_type="float")

    async def task(input):
        number = number_of(input)
        if number == 1:
            raise TimeoutError("the upstream model timed out after 30 s")
        if number == 2:
            raise TimeoutError
        return f"answer {number}"

    def scorer(output, reference, input):
        if output == "answer 4":
            raise TimeoutError("judge queue timed out")
        return 0.5

    result = evaluate(evaluation, "v", task, timeout=timeout, scorers={"slowpoke": scorer}, progress=False)
    assert result.status == "completed" and len(result.items) == 12
    errors = {number_of(inf.datapoint.input): inf.error for inf in Inference.objects.filter(run=result.run)
              if inf.error}
    assert errors == {
        1: "TimeoutError in task: the upstream model timed out after 30 s",
        2: "TimeoutError in task: (no message)",
        4: "TimeoutError in scorer 'slowpoke': judge queue timed out",
    }


def test_the_runs_own_timeout_is_still_reported_as_such_for_tasks_and_scorers(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="slowpoke", kind="custom", value_type="float")

    async def task(input):
        if number_of(input) == 1:
            await asyncio.sleep(10)
        return f"answer {number_of(input)}"

    async def scorer(output, reference, input):
        if output == "answer 2":
            await asyncio.sleep(10)
        return 0.5

    result = evaluate(evaluation, "v", task, timeout=0.3, scorers={"slowpoke": scorer}, concurrency=12,
                      progress=False)
    errors = {number_of(inf.datapoint.input): inf.error for inf in Inference.objects.filter(run=result.run)
              if inf.error}
    assert errors == {1: "TimeoutError: the task did not finish within 0.3 s",
                      2: "scorer 'slowpoke' did not finish within 0.3 s"}


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")


@pytest.mark.parametrize("raised, expected", [
    (KeyError("answer"), "KeyError in task: 'answer'"),
    (StopIteration("done early"), "StopIteration in task: done early"),
    (StopAsyncIteration(), "StopAsyncIteration in task: (no message)"),
    (SystemExit(3), "SystemExit in task: 3"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "UnicodeDecodeError in task: 'utf-8'"),
    (Unprintable(), "Unprintable in task: (the message could not be read)"),
])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_any_exception_type_from_a_task_fails_only_its_datapoint(evaluation, raised, expected, kind):
    def sync_task(input):
        if number_of(input) == 5:
            raise raised
        return f"answer {number_of(input)}"

    async def async_task(input):
        return sync_task(input)

    # A timeout, so that a datapoint that never finishes (a sync StopIteration did) fails the test
    # instead of hanging it.
    result = evaluate(evaluation, "v", sync_task if kind == "sync" else async_task, timeout=5, progress=False)
    assert result.status == "completed" and len(result.items) == 12
    failed = Inference.objects.get(run=result.run, error__isnull=False)
    if isinstance(raised, StopIteration) and kind == "async":  # Python turns it into a RuntimeError
        assert failed.error == "RuntimeError in task: coroutine raised StopIteration"
    else:
        assert failed.error.startswith(expected)
    assert failed.datapoint.input == {"question": "question 5"}


def test_a_sync_scorer_raising_stop_iteration_fails_only_its_datapoint(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="picky", kind="custom", value_type="float")

    def picky(output, reference, input):
        if output == "answer 2":
            raise StopIteration
        return 0.5

    result = evaluate(evaluation, "v", sample_tasks.perfect, scorers={"picky": picky}, timeout=5, progress=False)
    assert Inference.objects.get(run=result.run, output="answer 2").error == \
        "StopIteration in scorer 'picky': (no message)"
    assert result.errors == 1


class AsyncGeneratorCall:
    async def __call__(self, input):
        yield input


class Model:
    def __call__(self, input):
        return "x"


def generator_task(input):
    yield "x"


@pytest.mark.parametrize("task, message", [
    (sample_tasks.streams, "task is an async generator function (streams), which yields instead of returning"),
    (generator_task, "task is a generator function (generator_task)"),
    (AsyncGeneratorCall(), "task is an async generator function"),
    (Model, "task is the class Model; pass an instance of it"),
    ("tests.sample_tasks:perfect", "task must be callable, not str 'tests.sample_tasks:perfect'"),
    (None, "task must be callable, not NoneType None"),
    (42, "task must be callable, not int 42"),
])
def test_things_that_are_not_tasks_are_refused_before_the_run_starts(evaluation, task, message):
    with pytest.raises(ValueError) as error:
        evaluate(evaluation, "v", task, progress=False)
    assert message in str(error.value) and "expected a function taking a datapoint's input" in str(error.value)
    assert not evaluation.runs.exists()


def test_a_callable_instance_is_a_task(evaluation):
    assert evaluate(evaluation, "v", Model(), progress=False).errors == 0


def test_a_none_output_fails_its_datapoint_unless_none_is_allowed(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="valid_json", kind="json_valid")

    def task(input):
        number = number_of(input)
        if number == 1:
            return TaskResult(None, input_tokens=3)
        return None if number % 2 else f'"answer {number}"'

    result = evaluate(evaluation, "v", task, progress=False)
    errors = {inf.error for inf in Inference.objects.filter(run=result.run, error__isnull=False)}
    assert errors == {"the task returned None (allow it with allow_none=True or --allow-none)"}
    assert result.errors == 6
    assert not Feedback.objects.filter(inference__run=result.run, inference__error__isnull=False).exists()
    assert next(m for m in result.metrics if m.name == "valid_json").n == 6

    allowed = evaluate(evaluation, "v", task, allow_none=True, progress=False)
    assert allowed.errors == 0
    none_rows = Inference.objects.filter(run=allowed.run, output__isnull=True)
    assert none_rows.count() == 0  # JSON null is stored as a JSON value, not SQL NULL
    assert Inference.objects.filter(run=allowed.run, output=None).count() == 6
    assert next(m for m in allowed.metrics if m.name == "valid_json").mean == 1.0


def test_a_run_where_every_datapoint_failed_says_so(evaluation):
    result = evaluate(evaluation, "v", sample_tasks.always_fails, progress=False, concurrency=1)
    assert result.status == "completed" and result.errors == 12
    assert result.failure == "every datapoint failed: RuntimeError in task: no model for question 11"
    assert not result.passed and result.as_dict()["failure"] == result.failure
    assert "every datapoint failed: RuntimeError in task" in result.format()

    def all_but_one(input):
        return "answer 3" if number_of(input) == 3 else sample_tasks.always_fails(input)

    partly = evaluate(evaluation, "v", all_but_one, progress=False)
    assert partly.errors == 11 and partly.failure is None


@pytest.mark.parametrize("cutoff", [float("nan"), float("inf"), "abc", None])
def test_cutoffs_that_are_not_finite_numbers_are_refused(evaluation, cutoff):
    with pytest.raises(ValueError, match="cutoff for 'exact' must be a"):
        evaluate(evaluation, "v", sample_tasks.perfect, cutoffs={"exact": cutoff}, progress=False)
    assert not evaluation.runs.exists()


@pytest.mark.parametrize("prompt", ["Is it right? {input}", "Does {Output} answer {input}?", ["{output}"]])
def test_a_judge_prompt_the_answer_is_not_in_is_refused_at_run_start(evaluation, prompt):
    from comparisons.runner.scorers import ScorerError

    EvaluatorFactory(evaluation=evaluation, name="judge", kind="llm_judge", config={"model": "m", "prompt": prompt})
    with pytest.raises(ScorerError, match="llm_judge evaluator 'judge': config.prompt"):
        evaluate(evaluation, "v", sample_tasks.perfect, progress=False)
    assert not evaluation.runs.exists()


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
