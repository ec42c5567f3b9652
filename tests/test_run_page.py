"""The run page: a finished run's summary (cutoffs, Δ vs the previous run), the toast when a watched run
ends, the page's body refreshed with the progress poll, and elapsed time counted from when a worker took the run."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from comparisons.ids import uuid7
from comparisons.models import EvaluationRun
from comparisons.queries import comparison_stats, resolve_comparison, run_outcome, run_progress
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    UserFactory,
    at,
)

# Per metric, the previous run's and this run's value on each of four datapoints.
PREVIOUS = {"correct": [1, 0, 0, 1], "similarity": [0.5, 0.5, 0.5, 0.5], "slowness": [0.4, 0.4, 0.4, 0.4],
            "tone": [0.3, 0.3, 0.3, 0.3]}
THIS = {"correct": [1, 1, 1, 0], "similarity": [0.4, 0.6, 0.5, 0.5], "slowness": [0.2, 0.2, 0.2, 0.2],
        "tone": [0.9, 0.9, 0.9, 0.9]}


@pytest.fixture
def qa(db):
    """Four metrics: correct (boolean, cutoff 50%), similarity (cutoff 0.6), slowness (lower is better,
    cutoff 0.3) and tone (no cutoff); four datapoints."""
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct", cutoff=0.5)
    EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float", cutoff=0.6)
    EvaluatorFactory(evaluation=evaluation, name="slowness", value_type="float", optimize="min", cutoff=0.3)
    EvaluatorFactory(evaluation=evaluation, name="tone", value_type="float")
    for i in range(4):
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i))
    return evaluation


def scored_run(evaluation, minutes, values, **fields):
    run = RunFactory(evaluation=evaluation, at=at(minutes), **fields)
    for i, datapoint in enumerate(evaluation.datapoints().order_by("id")):
        inference = InferenceFactory(run=run, datapoint=datapoint, id=uuid7(at(minutes) + timedelta(seconds=i)))
        for metric, scores in values.items():
            FeedbackFactory(inference=inference, metric=metric, value=scores[i])
    return run


@pytest.fixture
def viewer(client, db):
    client.force_login(UserFactory(username="viewer"))
    return client


def htmx_get(client, url):
    return client.get(url, headers={"HX-Request": "true"})


def summary_row(body: str, metric: str) -> str:
    """The summary table's row of `metric`, tags and all."""
    table = body[body.index('class="data summary-table"'):]
    return re.search(rf"<tr><td>{metric} .*?</tr>", table, re.S).group(0)


def test_the_outcome_is_the_comparison_with_the_previous_run_and_judges_each_cutoff(qa):
    previous = scored_run(qa, 10, PREVIOUS)
    this = scored_run(qa, 20, THIS, variant_name="this")
    outcome = run_outcome(this)
    assert (outcome.previous.id, outcome.run.id) == (previous.id, this.id)
    assert outcome.compare_ids == f"{previous.id},{this.id}"
    by_name = {m.evaluator.name: m for m in outcome.metrics}
    assert {name: m.cutoff_met for name, m in by_name.items()} == {
        "correct": True, "similarity": False, "slowness": True, "tone": None}
    assert (outcome.cutoffs, outcome.cutoffs_met) == (3, 2)
    assert by_name["correct"].stat.mean == pytest.approx(0.75)
    assert by_name["correct"].delta.n == 4
    assert by_name["correct"].delta.mean == pytest.approx(0.25)  # paired: (0 + 1 + 1 − 1) / 4
    assert by_name["tone"].delta.mean == pytest.approx(0.6)
    # The same figures as the comparison page's statistics of [previous, this].
    stats = comparison_stats(resolve_comparison(qa, [previous.id, this.id]))
    for summary in stats.metrics:
        mine = by_name[summary.evaluator.name]
        assert (mine.stat.mean, mine.stat.ci) == (summary.per_run[1].mean, summary.per_run[1].ci)
        assert (mine.delta.mean, mine.delta.ci) == (summary.per_run[1].delta.mean, summary.per_run[1].delta.ci)


def test_no_scores_miss_a_cutoff(qa):
    outcome = run_outcome(RunFactory(evaluation=qa, status=EvaluationRun.Status.FAILED))
    assert [m.cutoff_met for m in outcome.metrics] == [False, False, False, None]
    assert not outcome.scored and outcome.previous is None and outcome.compare_ids is None


def test_a_finished_run_page_shows_its_summary_with_the_comparison_link(qa, viewer):
    previous = scored_run(qa, 10, PREVIOUS)
    this = scored_run(qa, 20, THIS)
    body = viewer.get(reverse("run_detail", args=[this.id])).content.decode()
    assert "2 of 3 cutoffs passed" in body
    assert f'href="/evaluations/qa/?run_ids={previous.id},{this.id}">Compare with previous run</a>' in body
    correct = summary_row(body, "correct")
    assert "75.0%" in correct and 'verdict pass">passed' in correct and "+25.0 pp" in correct
    assert re.search(r'data-label="Paired n">4</td></tr>$', correct)  # paired n
    assert 'verdict fail">failed' in summary_row(body, "similarity")
    slowness = summary_row(body, "slowness")
    assert "≤ 0.3" in slowness and 'verdict pass">passed' in slowness
    assert "-0.200" in slowness and 'delta better' in slowness  # lower is better: a fall is an improvement
    assert "no cutoff" in summary_row(body, "tone")


def test_the_summary_says_when_there_is_no_previous_run_no_cutoff_or_no_score(viewer, db):
    evaluation = EvaluationFactory(name="plain")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    first = RunFactory(evaluation=evaluation, at=at(10), status=EvaluationRun.Status.CANCELLED)
    body = viewer.get(reverse("run_detail", args=[first.id])).content.decode()
    assert "no previous run to compare with" in body
    assert "No cutoffs set" in body
    assert "No scores yet" in body
    assert "Compare with previous run" not in body
    second = RunFactory(evaluation=evaluation, at=at(20))
    body = viewer.get(reverse("run_detail", args=[second.id])).content.decode()
    assert "Compare with previous run" in body
    assert "none paired" in summary_row(body, "correct")  # a previous run, but no datapoint scored in both


def test_a_running_run_has_no_summary_yet_and_its_poll_refreshes_the_whole_page_body(qa, viewer):
    scored_run(qa, 10, PREVIOUS)
    run = scored_run(qa, 20, THIS, variant_name="live", status=EvaluationRun.Status.RUNNING)
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now(), running_since=timezone.now())
    assert "run-summary" not in viewer.get(reverse("run_detail", args=[run.id])).content.decode()
    body = htmx_get(viewer, reverse("run_progress", args=[run.id])).content.decode()
    assert body.lstrip().startswith('<section class="card run-progress" id="run-progress"')
    assert '<div id="run-body" hx-swap-oob="true">' in body
    assert "Task tokens in / out" in body  # the operations card comes with every poll
    assert "data-toast" not in body  # still running: nothing to announce


def test_the_poll_that_sees_the_run_end_brings_the_summary_and_a_toast(qa, viewer):
    previous = scored_run(qa, 10, PREVIOUS)
    run = scored_run(qa, 20, THIS, variant_name="live", status=EvaluationRun.Status.RUNNING)
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.COMPLETED, finished_at=timezone.now())
    response = htmx_get(viewer, reverse("run_progress", args=[run.id]))
    body = response.content.decode()
    assert 'hx-trigger="every 1s"' not in body  # the polling stops
    assert "2 of 3 cutoffs passed" in body[body.index('id="run-body"'):]  # the summary, out of band
    toast = body[body.index('hx-swap-oob="beforeend:#toasts"'):]
    assert re.search(r"Run live finished</strong>:\s+2 of 3 cutoffs passed", toast)
    assert "4 of 4 datapoints" in toast
    assert f'?run_ids={previous.id},{run.id}">Compare with previous run</a>' in toast
    assert 'data-toast-close aria-label="Dismiss"' in toast
    assert "Open the run" not in toast  # already on it
    # A full page (a reload after the end) announces nothing: only a watching page gets the toast.
    assert "data-toast" not in viewer.get(reverse("run_detail", args=[run.id])).content.decode()


def test_a_status_chip_that_sees_its_run_end_brings_a_toast(qa, viewer):
    run = scored_run(qa, 20, THIS, variant_name="chip-run", status=EvaluationRun.Status.RUNNING)
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now(), running_since=timezone.now())
    url = reverse("run_progress", args=[run.id]) + "?view=chip"
    assert "data-toast" not in htmx_get(viewer, url).content.decode()
    EvaluationRun.objects.filter(id=run.id).update(status=EvaluationRun.Status.CANCELLED)
    body = htmx_get(viewer, url).content.decode()
    assert body.startswith('<span class="run-chip">')
    assert re.search(r"Run chip-run was cancelled</strong>:\s+2 of 3 cutoffs passed", body)
    assert f'href="{reverse("run_detail", args=[run.id])}">Open the run</a>' in body
    assert "Compare with previous run" not in body  # the first run: nothing to compare with
    assert "data-toast" not in viewer.get(url).content.decode()  # not htmx: no toast


def test_a_run_killed_mid_run_is_announced_as_interrupted(qa, viewer):
    run = scored_run(qa, 20, THIS, variant_name="killed", status=EvaluationRun.Status.RUNNING)
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    body = htmx_get(viewer, reverse("run_progress", args=[run.id])).content.decode()
    assert "Run killed was interrupted" in body
    assert 'class="toast bad"' in body


@pytest.mark.parametrize("variant", ['<img src=x onerror="alert(1)">', "𝔘nïcødé‮-rtl", "v" * 200])
def test_the_toast_and_summary_escape_any_variant_name(qa, viewer, variant):
    run = scored_run(qa, 20, THIS, variant_name=variant, status=EvaluationRun.Status.COMPLETED)
    body = htmx_get(viewer, reverse("run_progress", args=[run.id]) + "?view=chip").content.decode()
    assert "<img src=x" not in body
    assert 'onerror="alert' not in body
    from django.utils.html import escape

    assert f"Run {escape(variant)} finished" in body


def test_elapsed_counts_from_when_a_worker_took_the_run_to_its_end(qa):
    run = RunFactory(evaluation=qa, at=at(10))
    taken, finished = at(12), at(12) + timedelta(seconds=30)  # two minutes in the queue, then 30 s of work
    InferenceFactory(run=run, id=uuid7(at(11)), datapoint=qa.datapoints().order_by("id")[0])  # an earlier leg
    for i, datapoint in enumerate(qa.datapoints().order_by("id")[1:]):
        InferenceFactory(run=run, datapoint=datapoint, id=uuid7(taken + timedelta(seconds=10 + 5 * i)))
    EvaluationRun.objects.filter(id=run.id).update(running_since=taken, finished_at=finished)
    run.refresh_from_db()
    progress = run_progress(run)
    assert progress.elapsed_s == pytest.approx(30.0)
    assert progress.throughput == pytest.approx(3 / 30)  # this leg's three outputs over its 30 s
    assert progress.done == 4


def test_elapsed_of_a_running_run_includes_the_time_before_its_first_output(qa):
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.RUNNING)
    now = timezone.now()
    EvaluationRun.objects.filter(id=run.id).update(running_since=now - timedelta(seconds=40), heartbeat_at=now)
    run.refresh_from_db()
    progress = run_progress(run)
    assert progress.done == 0
    assert 40 <= progress.elapsed_s < 100


def test_a_run_back_in_the_queue_shows_no_elapsed_time_and_older_runs_count_from_their_first_output(qa):
    resumed = RunFactory(evaluation=qa, status=EvaluationRun.Status.QUEUED, running_since=at(12))
    InferenceFactory(run=resumed, id=uuid7(at(12)))
    progress = run_progress(resumed)
    assert (progress.elapsed_s, progress.throughput) == (0.0, None)
    older = RunFactory(evaluation=qa, at=at(20))  # recorded before running_since existed
    for seconds in (3, 15):
        InferenceFactory(run=older, id=uuid7(at(20) + timedelta(seconds=seconds)))
    assert run_progress(older).elapsed_s == pytest.approx(12.0)
