"""WindowScore, PairedSummary, RunCoverage: the trigger-kept tables behind statistics and Δ.

The property test applies a seeded mix of every kind of write (new and late feedback, bulk inserts,
human corrections, back-dated deletes, edits, deleted inferences) and then checks every kept table
against a computation from scratch.
"""

import random
import threading
from collections import defaultdict

import pytest
from django.db import connection, connections, transaction

from comparisons.ids import uuid7, uuid7_time
from comparisons.models import (
    Datapoint,
    Feedback,
    Inference,
    PairedSummary,
    RunCoverage,
    RunMetricSummary,
    WindowScore,
)
from comparisons.queries import comparison_stats, paired_summaries, resolve_comparison
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, InferenceFactory, RunFactory, at

METRICS = ["correct", "quality"]


def make_evaluation():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="quality", value_type="float", optimize="min")
    return evaluation


def expected_scores() -> dict:
    """(run, metric, datapoint) -> value from the feedback itself: greatest id wins, inside the window."""
    winners = {}
    for feedback in Feedback.objects.select_related("inference__datapoint").order_by("id"):
        winners[(feedback.inference_id, feedback.metric)] = feedback
    scores = {}
    for feedback in winners.values():
        inference, datapoint = feedback.inference, feedback.inference.datapoint
        when = uuid7_time(inference.run_id)
        if datapoint.created_at <= when and (datapoint.staled_at is None or datapoint.staled_at > when):
            scores[(inference.run_id, feedback.metric, datapoint.id)] = feedback.value
    return scores


def expected_pair(scores, baseline, run, metric):
    base = {d: v for (r, m, d), v in scores.items() if r == baseline and m == metric}
    diffs = [v - base[d] for (r, m, d), v in scores.items() if r == run and m == metric and d in base]
    return (len(diffs), round(sum(diffs), 9), round(sum(x * x for x in diffs), 9), sum(x > 0 for x in diffs),
            sum(x < 0 for x in diffs), sum(x == 0 for x in diffs))


def kept_pairs():
    return {(p.baseline_id, p.run_id, p.metric): (p.n, round(p.total, 9), round(p.total_sq, 9), p.higher, p.lower,
                                                   p.same) for p in PairedSummary.objects.all()}


@pytest.mark.django_db
def test_scores_and_paired_sums_stay_exact_through_every_kind_of_write():
    rng = random.Random(7)
    evaluation = make_evaluation()
    runs = [RunFactory(evaluation=evaluation, id=uuid7(at(minutes))) for minutes in (100, 200, 300)]
    datapoints = [DatapointFactory(evaluation=evaluation, created=at(i * 9)) for i in range(30)]
    inferences = []
    for run in runs:
        for datapoint in datapoints:
            if datapoint.created_at <= run.started_at and rng.random() > 0.1:
                inference = InferenceFactory(run=run, datapoint=datapoint, variant_pinned=rng.random() < 0.3,
                                             error="TimeoutError" if rng.random() < 0.1 else None)
                inferences.append(inference)
                for metric in METRICS:
                    value = float(rng.random() < 0.6) if metric == "correct" else round(rng.random(), 2)
                    Feedback.objects.create(id=uuid7(at(400 + len(inferences))), inference=inference,
                                            metric=metric, value=value)
    # Cache pairs both ways round, so each write adjusts pairs as the run and as the baseline.
    paired_summaries(resolve_comparison(evaluation, [runs[0].id, runs[1].id, runs[2].id]))
    paired_summaries(resolve_comparison(evaluation, [runs[2].id, runs[0].id]))
    assert kept_pairs() and all(value[0] > 0 for value in kept_pairs().values())

    minute = 1000
    for _ in range(80):
        minute += 1
        action = rng.choice(["feedback", "late", "bulk", "retire", "revise", "delete", "update"])
        live = [i for i in inferences if Inference.objects.filter(id=i.id).exists()]
        inference = rng.choice(live)
        metric = rng.choice(METRICS)
        value = float(rng.random() < 0.5) if metric == "correct" else round(rng.random(), 2)
        if action == "feedback":
            Feedback.objects.record(inference, metric, value, source=rng.choice(["human", "evaluator"]))
        elif action == "late":  # an import bringing an older value: it must not win
            Feedback.objects.create(id=uuid7(at(1)), inference=inference, metric=metric, value=value)
        elif action == "bulk":  # several rows for one (inference, metric) in one statement, out of order
            Feedback.objects.bulk_create([
                Feedback(id=uuid7(at(minute + offset)), inference=inference, metric=metric, value=v)
                for offset, v in ((2, value), (3, 1.0 - value), (1, 0.5 if metric == "quality" else 0.0))])
        elif action in ("retire", "revise"):
            current = Datapoint.objects.filter(staled_at__isnull=True, dataset=evaluation.dataset)
            datapoint = rng.choice(list(current))
            when = at(rng.choice([50, 150, 250, 350]))  # back-dated across run times, or after them all
            if when > datapoint.created_at:
                if action == "retire":
                    datapoint.retire(when=when)
                else:
                    datapoint.revise(when=when, name="edited")
        elif action == "update":  # an inference corrected in place (admin): error and pin flip
            Inference.objects.filter(id=inference.id).update(
                error=None if rng.random() < 0.5 else "failed later", variant_pinned=rng.random() < 0.5)
        else:
            Inference.objects.filter(id=inference.id).delete()

    scores = expected_scores()
    kept = {(s.run_id, s.metric, s.datapoint_id): s.value for s in WindowScore.objects.all()}
    assert kept == scores
    pairs = kept_pairs()
    assert pairs == {key: expected_pair(scores, *key) for key in pairs}
    # Computed again from scratch, the pairs come out the same as the kept ones.
    PairedSummary.objects.all().delete()
    paired_summaries(resolve_comparison(evaluation, [runs[0].id, runs[1].id, runs[2].id]))
    paired_summaries(resolve_comparison(evaluation, [runs[2].id, runs[0].id]))
    assert kept_pairs() == pairs
    sums = defaultdict(lambda: [0, 0.0, 0.0])
    for (run_id, metric, _), value in scores.items():
        sums[(run_id, metric)][0] += 1
        sums[(run_id, metric)][1] += value
        sums[(run_id, metric)][2] += value * value
    kept_sums = {(s.run_id, s.metric): (s.n, round(s.total, 9), round(s.total_sq, 9))
                 for s in RunMetricSummary.objects.filter(n__gt=0)}
    assert kept_sums == {key: (n, round(t, 9), round(q, 9)) for key, (n, t, q) in sums.items()}
    coverage = defaultdict(lambda: [0, 0, 0])
    for inference in Inference.objects.select_related("datapoint"):
        when, datapoint = uuid7_time(inference.run_id), inference.datapoint
        if datapoint.created_at <= when and (datapoint.staled_at is None or datapoint.staled_at > when):
            counts = coverage[inference.run_id]
            counts[0] += 1
            counts[1] += inference.error is not None
            counts[2] += inference.variant_pinned
    kept_coverage = RunCoverage.objects.exclude(inferences=0, errors=0, pinned=0)
    assert {c.run_id: [c.inferences, c.errors, c.pinned] for c in kept_coverage} == dict(coverage)


@pytest.mark.django_db
def test_refresh_all_scores_rebuilds_what_the_triggers_keep():
    evaluation = make_evaluation()
    run = RunFactory(evaluation=evaluation, id=uuid7(at(100)))
    for i in range(5):
        inference = InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=evaluation, created=at(i)))
        Feedback.objects.create(inference=inference, metric="quality", value=i / 10)
        Feedback.objects.record(inference, "quality", 1 - i / 10)
    before = {(s.run_id, s.metric, s.datapoint_id): s.value for s in WindowScore.objects.all()}
    assert len(before) == 5 and sorted(before.values()) == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    with connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_refresh_all_scores()")
    assert {(s.run_id, s.metric, s.datapoint_id): s.value for s in WindowScore.objects.all()} == before
    assert RunMetricSummary.objects.get(run=run, metric="quality").total == pytest.approx(4.0)


@pytest.mark.django_db(transaction=True)
def test_a_first_fill_waits_for_feedback_being_written_and_counts_it():
    """Feedback committed while a pair is first computed is neither lost nor counted twice."""
    evaluation = make_evaluation()
    base, other = (RunFactory(evaluation=evaluation, id=uuid7(at(m))) for m in (100, 200))
    datapoints = [DatapointFactory(evaluation=evaluation, created=at(i)) for i in range(4)]
    for run in (base, other):
        for datapoint in datapoints[:3]:
            Feedback.objects.create(inference=InferenceFactory(run=run, datapoint=datapoint),
                                    metric="quality", value=0.5)
    late = InferenceFactory(run=other, datapoint=datapoints[3])
    Feedback.objects.create(inference=InferenceFactory(run=base, datapoint=datapoints[3]), metric="quality",
                            value=0.25)
    comparison = resolve_comparison(evaluation, [base.id, other.id])

    written, filled, finished = threading.Event(), threading.Event(), threading.Event()
    outcome = {}

    def writer():  # holds its run's lock until the filler has started waiting
        try:
            with transaction.atomic():
                Feedback.objects.create(inference=late, metric="quality", value=1.0)
                written.set()
                filled.wait(timeout=1)  # the filler cannot finish while this transaction is open
                outcome["filled_early"] = filled.is_set()
        finally:
            connections.close_all()
            finished.set()

    def filler():
        try:
            written.wait(timeout=10)
            outcome["pairs"] = paired_summaries(comparison)
            filled.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer), threading.Thread(target=filler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert finished.is_set() and outcome["filled_early"] is False
    pair = outcome["pairs"][(other.id, "quality")]
    assert (pair.n, pair.total, pair.higher, pair.same) == (4, pytest.approx(0.75), 1, 3)
    # And the kept sums agree with the statistics computed afterwards.
    stats = comparison_stats(comparison)
    delta = stats.metrics[1].per_run[1].delta
    assert delta.n == 4 and delta.mean == pytest.approx(0.75 / 4)
