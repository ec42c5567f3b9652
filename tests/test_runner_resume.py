"""Resuming a run (`resume=` / `--resume`) and stopping at a precision (`precision=` / `--precision`)."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from comparisons.models import EvaluationRun, Inference
from comparisons.runner import evaluate
from comparisons.runner.core import MIN_SCORED_FOR_PRECISION
from comparisons.stats import metric_interval
from tests import sample_tasks
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, at

pytestmark = pytest.mark.django_db


def add_datapoints(evaluation, numbers):
    for i in numbers:
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i),
                         input={"question": f"question {i}"}, reference_output=f"answer {i}")


@pytest.fixture
def evaluation():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match")
    EvaluatorFactory(evaluation=evaluation, name="similar", kind="levenshtein", value_type="float")
    add_datapoints(evaluation, range(12))
    return evaluation


def run_datapoints(run) -> list[str]:
    return sorted(str(i) for i in Inference.objects.filter(run=run).values_list("datapoint_id", flat=True))


def window_ids(run) -> list[str]:
    return sorted(str(i) for i in run.window_datapoints().values_list("id", flat=True))


def cancelled_partial_run(evaluation, **options):
    """A run that recorded only the newest 5 datapoints, then was cancelled."""
    partial = evaluate(evaluation, "v1", sample_tasks.sync_task, max_datapoints=5, progress=False, **options)
    EvaluationRun.objects.filter(id=partial.run.id).update(status=EvaluationRun.Status.CANCELLED)
    return EvaluationRun.objects.get(id=partial.run.id)


# -- resume ----------------------------------------------------------------------------------------


def test_resume_runs_exactly_the_missing_datapoints_in_the_same_run(evaluation):
    run = cancelled_partial_run(evaluation, config={"task": "tests.sample_tasks:sync_task"}, tags={"branch": "main"})
    before = {i.datapoint_id: i.id for i in Inference.objects.filter(run=run)}
    finished_before = run.finished_at
    ran = []

    def task(input):
        ran.append(input["question"])
        return sample_tasks.sync_task(input)

    result = evaluate(evaluation, None, task, resume=str(run.id), progress=False)

    assert result.run.id == run.id and EvaluationRun.objects.count() == 1
    assert sorted(ran) == sorted(f"question {i}" for i in range(7))  # the 7 oldest; the newest 5 were done
    assert result.status == "completed" and result.resumed == 5 and len(result.items) == 7
    assert run_datapoints(run) == window_ids(run)  # every datapoint once, none twice
    assert {i.datapoint_id: i.id for i in Inference.objects.filter(run=run, datapoint_id__in=before)} == before
    run.refresh_from_db()
    assert run.status == "completed" and run.finished_at > finished_before
    assert run.variant_name == "v1" and run.config == {"task": "tests.sample_tasks:sync_task"}
    assert run.tags == {"branch": "main"}
    assert set(Inference.objects.filter(run=run).values_list("variant_name", "variant_pinned")) == {("v1", True)}
    # The summary covers the whole run: 12 datapoints, half of them exact.
    exact = next(m for m in result.metrics if m.name == "exact")
    assert exact.n == 12 and exact.mean == pytest.approx(0.5)


def test_resume_keeps_the_runs_unpinned_variant_and_refuses_to_pin_it(evaluation):
    run = cancelled_partial_run(evaluation, pinned=False)
    with pytest.raises(ValueError, match="recorded its variant as sampled"):
        evaluate(evaluation, "v1", sample_tasks.sync_task, resume=run, pinned=True, progress=False)
    assert Inference.objects.filter(run=run).count() == 5
    evaluate(evaluation, "v1", sample_tasks.sync_task, resume=run, progress=False)
    assert set(Inference.objects.filter(run=run).values_list("variant_pinned", flat=True)) == {False}
    assert Inference.objects.filter(run=run).count() == 12


def test_resume_of_a_complete_run_does_nothing(evaluation):
    done = evaluate(evaluation, "v1", sample_tasks.sync_task, progress=False).run
    done.refresh_from_db()
    calls = []
    result = evaluate(evaluation, "v1", lambda input: calls.append(input), resume=done.id, progress=False)
    assert result.nothing_to_resume and result.items == [] and calls == []
    assert "is already complete: nothing to resume" in result.format()
    again = EvaluationRun.objects.get(id=done.id)
    assert again.finished_at == done.finished_at and again.status == "completed"
    assert Inference.objects.filter(run=done).count() == 12


def test_resume_runs_the_runs_own_window_not_todays_dataset(evaluation):
    run = cancelled_partial_run(evaluation)
    retired = evaluation.datapoints().in_window(run.started_at).order_by("id").first()  # not among the newest 5
    retired.retire()  # staled after the run started: still in its window
    added = DatapointFactory(evaluation=evaluation, input={"question": "question 500"})  # after the run started

    evaluate(evaluation, "v1", sample_tasks.sync_task, resume=run, progress=False)

    done = run_datapoints(run)
    assert str(added.id) not in done and str(retired.id) in done
    assert done == window_ids(run) and len(done) == 12


@pytest.mark.parametrize("resume, message", [
    ("not-a-uuid", "is not a run id"),
    (12, "is not a run id"),
    ("01a00000-0000-7000-8000-000000000000", "there is no run"),
])
def test_resume_of_an_unknown_or_malformed_run_is_refused(evaluation, resume, message):
    with pytest.raises(ValueError, match=message):
        evaluate(evaluation, None, sample_tasks.sync_task, resume=resume, progress=False)
    assert not EvaluationRun.objects.exists()


def test_resume_refuses_what_contradicts_the_run(evaluation):
    run = cancelled_partial_run(evaluation, config={"task": "a:b"}, tags={"k": "v"})
    other = EvaluationFactory(name="other")
    refused = [
        ({"evaluation": other}, "is a run of 'qa', not of 'other'"),
        ({"variant": "v2"}, "is of variant 'v1', not 'v2'"),
        ({"config": {"task": "c:d"}}, "keeps the run's own config"),
        ({"tags": {"k": "w"}}, "keeps the run's own tags"),
        ({"datapoint_ids": []}, "datapoint_ids cannot be combined with resume"),
        ({"precision": {"exact": 0.1}}, "cannot be combined with resume"),
    ]
    for changes, message in refused:
        arguments = {"evaluation": evaluation, "variant": None, **changes}
        with pytest.raises(ValueError, match=message):
            evaluate(arguments.pop("evaluation"), arguments.pop("variant"), sample_tasks.sync_task, resume=run,
                     progress=False, **arguments)
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.RUNNING)
    with pytest.raises(ValueError, match="is still running"):
        evaluate(evaluation, None, sample_tasks.sync_task, resume=run, progress=False)
    assert Inference.objects.filter(run=run).count() == 5
    assert EvaluationRun.objects.get(id=run.id).status == "running"


def test_resume_with_max_datapoints_takes_the_newest_missing(evaluation):
    run = cancelled_partial_run(evaluation)
    result = evaluate(evaluation, None, sample_tasks.perfect, resume=run, max_datapoints=3, progress=False)
    assert [item.output for item in result.items] == ["answer 6", "answer 5", "answer 4"]
    assert Inference.objects.filter(run=run).count() == 8


# -- precision -------------------------------------------------------------------------------------


def stop_point(target: float) -> int:
    """The number of all-correct boolean scores at which the Wilson half-width first meets `target`."""
    n = MIN_SCORED_FOR_PRECISION
    while True:
        interval = metric_interval(True, 1.0, 0.0, n)
        if (interval.high - interval.low) / 2 <= target:
            return n
        n += 1


@pytest.fixture
def large(evaluation):
    add_datapoints(evaluation, range(12, 400))
    return evaluation


@pytest.mark.parametrize("concurrency", [1, 6])
def test_precision_stops_early_and_records_why(large, concurrency):
    result = evaluate(large, "v", sample_tasks.perfect, precision={"exact": 0.03}, seed=11,
                      concurrency=concurrency, progress=False)
    expected = stop_point(0.03)
    assert 40 < expected < 100
    # The stop is decided as the expected-th item finishes; the others in flight then may still finish.
    assert expected <= len(result.items) <= expected + concurrency - 1
    assert Inference.objects.filter(run=result.run).count() == len(result.items)  # nothing finished is dropped
    run = EvaluationRun.objects.get(id=result.run.id)
    assert run.status == "completed" and result.status == "completed" and result.passed
    stopped = run.config["stopped"]
    assert stopped == result.stopped and stopped["reason"] == "precision reached"
    assert stopped["datapoints_run"] == stopped["datapoints_scored"] == len(result.items)
    assert stopped["datapoints_saved"] == 400 - len(result.items)
    assert stopped["metrics"]["exact"]["half_width"] <= 0.03 and stopped["metrics"]["exact"]["target"] == 0.03
    assert run.config["precision"] == {"exact": 0.03} and run.config["seed"] == 11
    assert f"{400 - len(result.items)} datapoint(s) saved" in result.format()
    numbers = [int(item.output.split()[-1]) for item in result.items]
    assert numbers != sorted(numbers, reverse=True)  # a random sample, not the newest first


def test_the_seed_reproduces_the_order_and_is_drawn_when_not_given(large):
    first = evaluate(large, "v", sample_tasks.perfect, precision={"exact": 0.05}, seed=3, concurrency=1,
                     progress=False)
    second = evaluate(large, "v", sample_tasks.perfect, precision={"exact": 0.05}, seed=3, concurrency=1,
                      progress=False)
    assert [i.output for i in first.items] == [i.output for i in second.items]
    assert len(first.items) == stop_point(0.05)
    drawn = evaluate(large, "v", sample_tasks.perfect, precision={"exact": 0.05}, concurrency=1, progress=False)
    assert isinstance(drawn.run.config["seed"], int)
    assert [i.output for i in drawn.items] != [i.output for i in first.items]


@pytest.mark.parametrize("precision", [{"exact": 0.45}, {"similar": 0.3}, {"exact": 0.45, "similar": 0.3}])
def test_precision_never_stops_before_twenty_scores(large, precision):
    result = evaluate(large, "v", sample_tasks.perfect, precision=precision, concurrency=1, progress=False)
    assert len(result.items) == MIN_SCORED_FOR_PRECISION
    assert set(result.stopped["metrics"]) == set(precision)


def test_a_float_metric_stops_on_its_wald_interval(large):
    # Alternating right and wrong: `similar` varies, so its Wald half-width shrinks like 1/√n.
    result = evaluate(large, "v", sample_tasks.sync_task, precision={"similar": 0.05}, seed=1, concurrency=1,
                      progress=False)
    similar = next(m for m in result.metrics if m.name == "similar")
    half_width = (similar.ci.high - similar.ci.low) / 2
    assert MIN_SCORED_FOR_PRECISION < len(result.items) < 400 and half_width <= 0.05
    assert result.stopped["metrics"]["similar"]["half_width"] == pytest.approx(half_width)


def test_a_precision_that_cannot_be_reached_runs_everything(large):
    result = evaluate(large, "v", sample_tasks.sync_task, precision={"exact": 0.01}, progress=False)
    assert len(result.items) == 400 and result.stopped is None
    assert "stopped" not in EvaluationRun.objects.get(id=result.run.id).config
    assert "stopped early" not in result.format()


def test_twelve_datapoints_never_reach_the_minimum(evaluation):
    result = evaluate(evaluation, "v", sample_tasks.perfect, precision={"exact": 0.4}, progress=False)
    assert len(result.items) == 12 and result.stopped is None


@pytest.mark.parametrize("precision, seed, message", [
    ({"tone": 0.1}, None, "precision for unknown metric 'tone'; this evaluation has: exact, similar"),
    ({"exact": 0}, None, "positive finite half-width"),
    ({"exact": -0.1}, None, "positive finite half-width"),
    ({"exact": float("nan")}, None, "positive finite half-width"),
    ({"exact": float("inf")}, None, "positive finite half-width"),
    ({"exact": 0.5}, None, "must be below 0.5"),
    ({"similar": 1e300}, None, "must be below 0.5"),
    ({"exact": "0.1"}, None, "must be a number"),
    ({"exact": True}, None, "must be a number"),
    ({}, None, "must map metric names"),
    (["exact"], None, "must map metric names"),
    ({"exact": 0.1}, -1, "seed must be an integer"),
    ({"exact": 0.1}, "7", "seed must be an integer"),
    ({"exact": 0.1}, 2**63, "seed must be an integer"),
    (None, 7, "a seed only applies with precision"),
])
def test_bad_precision_is_refused_before_anything_is_recorded(evaluation, precision, seed, message):
    with pytest.raises(ValueError, match=message):
        evaluate(evaluation, "v", sample_tasks.perfect, precision=precision, seed=seed, progress=False)
    assert not EvaluationRun.objects.exists()


def test_an_unbounded_metric_takes_any_positive_target(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="score", kind="custom", value_type="float",
                     min_value=None, max_value=None)
    result = evaluate(evaluation, "v", sample_tasks.perfect, precision={"score": 1e6},
                      scorers={"score": lambda output, reference, input: 3.5}, progress=False)
    assert result.run.config["precision"] == {"score": 1e6}


# -- the command -----------------------------------------------------------------------------------


def command(*args):
    out = StringIO()
    call_command("run_evaluation", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def command_error(*args):
    with pytest.raises(CommandError) as error:
        command(*args)
    return error.value.returncode, str(error.value)


def test_command_resume_uses_the_runs_own_task_and_variant(evaluation):
    command("qa", "--variant", "v1", "--task", "tests.sample_tasks:perfect", "--max-datapoints", "4", "--unpinned")
    run = EvaluationRun.objects.get()
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.CANCELLED)

    output = command("qa", "--resume", str(run.id), "--cutoff", "exact=1")

    assert EvaluationRun.objects.count() == 1 and "resumed: 4 datapoint(s)" in output
    assert "8 of 8 datapoints" in output and "exact: mean 1.0000" in output and "n=12" in output
    run.refresh_from_db()
    assert run.status == "completed" and run_datapoints(run) == window_ids(run)
    assert set(Inference.objects.filter(run=run).values_list("variant_name", "variant_pinned")) == {("v1", False)}

    finished = run.finished_at
    assert command("qa", "--resume", str(run.id)).strip() == f"run {run.id} is already complete: nothing to resume"
    run.refresh_from_db()
    assert run.finished_at == finished and Inference.objects.filter(run=run).count() == 12


def test_command_resume_refusals_exit_two_and_record_nothing(evaluation):
    command("qa", "--variant", "v1", "--task", "tests.sample_tasks:perfect", "--max-datapoints", "4")
    run = EvaluationRun.objects.get()
    other = EvaluationFactory(name="other")
    EvaluatorFactory(evaluation=other, name="exact", kind="exact_match")
    command("other", "--variant", "v1", "--task", "tests.sample_tasks:perfect")
    run_id = str(run.id)
    cases = [
        (("qa", "--resume", "garbage"), "'garbage' is not a run id"),
        (("qa", "--resume", str(uuid.UUID(int=run.id.int + 1))), "there is no run"),
        (("other", "--resume", run_id), "is a run of 'qa', not of 'other'"),
        (("qa", "--resume", run_id, "--variant", "v2"), "--variant 'v2' contradicts the run's 'v1'"),
        (("qa", "--resume", run_id, "--task", "tests.sample_tasks:sync_task"), "--task"),
        (("qa", "--resume", run_id, "--openai-model", "gpt-4o"), "--openai-model 'gpt-4o' contradicts"),
        (("qa", "--resume", run_id, "--unpinned"), "recorded its variant as pinned"),
        (("qa", "--resume", run_id, "--tag", "a=b"), "--tag cannot be combined with --resume"),
        (("qa", "--resume", run_id, "--precision", "exact=0.1"), "--precision cannot be combined"),
        (("qa", "--task", "tests.sample_tasks:perfect"), "--variant is required"),
        (("qa", "--variant", "v"), "one of --task or --openai-model is required"),
    ]
    for args, message in cases:
        code, text = command_error(*args)
        assert code == 2 and message in text, (args, text)
    assert EvaluationRun.objects.count() == 2 and Inference.objects.filter(run=run).count() == 4
    # --max-datapoints and a matching --variant/--task agree with resuming.
    command("qa", "--resume", run_id, "--variant", "v1", "--task", "tests.sample_tasks:perfect",
            "--max-datapoints", "2")
    assert Inference.objects.filter(run=run).count() == 6


def test_command_precision_stops_and_says_what_it_saved(evaluation):
    add_datapoints(evaluation, range(12, 112))
    output = command("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", "--precision", "exact=0.1",
                     "--precision", "similar=0.1", "--seed", "5", "--concurrency", "1")
    run = EvaluationRun.objects.get()
    assert run.config["seed"] == 5 and run.config["precision"] == {"exact": 0.1, "similar": 0.1}
    assert run.config["stopped"]["datapoints_saved"] == 92 and Inference.objects.filter(run=run).count() == 20
    assert "stopped early, precision reached" in output and "92 datapoint(s) saved" in output


@pytest.mark.parametrize("args, message", [
    (("--precision", "exact"), "Bad --precision 'exact': use METRIC=VALUE"),
    (("--precision", "exact=abc"), "is not a number"),
    (("--precision", "exact=nan"), "is not a number"),
    (("--precision", "exact=1e999"), "is too large"),
    (("--precision", "exact=0"), "positive finite half-width"),
    (("--precision", "exact=-0.1"), "positive finite half-width"),
    (("--precision", "exact=0.6"), "must be below 0.5"),
    (("--precision", "tone=0.1"), "unknown metric 'tone'"),
    (("--precision", "exact=0.1", "--seed", "abc"), "Bad --seed 'abc'"),
    (("--precision", "exact=0.1", "--seed", "-1"), "Bad --seed '-1'"),
    (("--precision", "exact=0.1", "--seed", "9999999999999999999"), "seed must be an integer"),
    (("--seed", "4"), "a seed only applies with precision"),
])
def test_command_bad_precision_exits_two(evaluation, args, message):
    code, text = command_error("qa", "--variant", "v", "--task", "tests.sample_tasks:perfect", *args)
    assert code == 2 and message in text
    assert not EvaluationRun.objects.exists()


# -- resuming interrupted and precision runs -------------------------------------------------------


def test_an_interrupted_run_is_resumable_and_a_live_one_is_not(evaluation):
    """A run left `running` by a killed process shows as interrupted once its heartbeat is stale."""
    run = cancelled_partial_run(evaluation)
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.RUNNING,
                                                   heartbeat_at=timezone.now() - timedelta(seconds=30))
    with pytest.raises(ValueError, match=r"is still running \(its process beat 3\d s ago\)"):
        evaluate(evaluation, None, sample_tasks.sync_task, resume=run, progress=False)
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now() - EvaluationRun.STALE_AFTER
                                                   - timedelta(seconds=1))
    assert EvaluationRun.objects.get(id=run.id).shown_status == "interrupted"
    result = evaluate(evaluation, None, sample_tasks.sync_task, resume=run, progress=False)
    assert result.status == "completed" and result.resumed == 5 and len(result.items) == 7
    assert run_datapoints(run) == window_ids(run)
    assert EvaluationRun.objects.get(id=run.id).shown_status == "completed"


def test_a_cancelled_precision_run_resumes_in_its_seeded_order_to_its_targets(large):
    whole = evaluate(large, "whole", sample_tasks.perfect, precision={"exact": 0.03}, seed=5, concurrency=1,
                     progress=False)
    order = [item.datapoint_id for item in whole.items]

    # The same run, cancelled after 10 items: the resume goes on from the 11th in the same order.
    partial = evaluate(large, "part", sample_tasks.perfect, precision={"exact": 0.03}, seed=5, concurrency=1,
                       progress=False, max_datapoints=10)
    assert partial.status == "completed" and partial.stopped is None  # max_datapoints, not precision, ended it
    EvaluationRun.objects.filter(id=partial.run.id).update(status=EvaluationRun.Status.CANCELLED)
    resumed = evaluate(large, None, sample_tasks.perfect, resume=partial.run, concurrency=1, progress=False)

    assert [item.datapoint_id for item in partial.items] == order[:10]
    assert [item.datapoint_id for item in resumed.items] == order[10:]  # stops where the whole run stopped
    assert resumed.status == "completed" and resumed.stopped["reason"] == "precision reached"
    assert resumed.stopped["datapoints_run"] == len(order)  # counted over the whole run, before and after
    run = EvaluationRun.objects.get(id=partial.run.id)
    assert run.config["stopped"] == resumed.stopped and run.config["seed"] == 5


def test_a_run_stopped_at_its_precision_has_nothing_to_resume(large):
    stopped = evaluate(large, "v", sample_tasks.perfect, precision={"exact": 0.05}, seed=2, progress=False)
    assert stopped.stopped is not None
    calls = []
    again = evaluate(large, None, lambda input: calls.append(input), resume=stopped.run, progress=False)
    assert again.nothing_to_resume and calls == []
    assert "stopped once its precision targets were reached: nothing to resume" in again.format()
    assert Inference.objects.filter(run=stopped.run).count() == len(stopped.items)


# -- runs launched from the portal: a queued run, should_stop ----------------------------------------


def test_a_queued_run_runs_as_a_resume_with_nothing_recorded(evaluation):
    run = EvaluationRun.objects.create(evaluation=evaluation, variant_name="queued", status=EvaluationRun.Status.QUEUED,
                                       config={"task": "tests.sample_tasks:sync_task"}, tags={"via": "portal"})
    result = evaluate(evaluation, None, sample_tasks.sync_task, resume=run, progress=False)
    run.refresh_from_db()
    assert (run.status, result.status, result.resumed) == ("completed", "completed", 0)
    assert run_datapoints(run) == window_ids(run)
    assert run.config == {"task": "tests.sample_tasks:sync_task"}
    assert run.tags == {"via": "portal"}


def test_should_stop_cancels_the_run_and_keeps_what_finished(evaluation):
    add_datapoints(evaluation, range(12, 200))
    asked = []

    def should_stop():
        asked.append(Inference.objects.filter(run__variant_name="stoppable").count())
        return asked[-1] >= 3

    result = evaluate(evaluation, "stoppable", sample_tasks.steady, concurrency=1, progress=False,
                      should_stop=should_stop)
    run = EvaluationRun.objects.get(id=result.run.id)
    assert run.status == EvaluationRun.Status.CANCELLED
    recorded = Inference.objects.filter(run=run).count()
    assert recorded == len(result.items)  # every finished item is recorded
    assert 3 <= recorded < 200
    assert asked[-1] >= 3 and all(count < 3 for count in asked[:-1])


def test_should_stop_that_never_says_stop_changes_nothing(evaluation):
    calls = []
    result = evaluate(evaluation, "v", sample_tasks.steady, concurrency=1, progress=False,
                      should_stop=lambda: calls.append(1) and False)
    assert result.status == EvaluationRun.Status.COMPLETED
    assert len(result.items) == 12
    assert calls  # it was asked
