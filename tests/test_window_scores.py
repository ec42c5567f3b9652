"""WindowScore, PairedSummary, RunCoverage: the trigger-kept tables behind statistics and Δ.

The property test applies a seeded mix of every kind of write (new and late feedback, bulk inserts,
human corrections, back-dated deletes, edits, deleted inferences) and then checks every kept table
against a computation from scratch.
"""

import random
import threading
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest
from django.db import connection, connections, transaction

from comparisons.ids import uuid7, uuid7_time
from comparisons.integrity import find_drift
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
    """(run, metric, datapoint) -> (value, human) from the feedback itself: greatest id wins, inside the window."""
    winners = {}
    for feedback in Feedback.objects.select_related("inference__datapoint").order_by("id"):
        winners[(feedback.inference_id, feedback.metric)] = feedback
    scores = {}
    for feedback in winners.values():
        inference, datapoint = feedback.inference, feedback.inference.datapoint
        when = uuid7_time(inference.run_id)
        if datapoint.created_at <= when and (datapoint.staled_at is None or datapoint.staled_at > when):
            scores[(inference.run_id, feedback.metric, datapoint.id)] = (feedback.value, feedback.source == "human")
    return scores


def exact(value: float) -> Fraction:
    """A score as the kept sums take it (comparisons_exact): the shortest decimal that reads back as it."""
    return Fraction(Decimal(repr(value)))


def expected_pair(scores, baseline, run, metric):
    base = {d: v for (r, m, d), (v, _) in scores.items() if r == baseline and m == metric}
    pairs = [(v, base[d]) for (r, m, d), (v, _) in scores.items() if r == run and m == metric and d in base]
    diffs = [exact(v) - exact(b) for v, b in pairs]
    return (len(pairs), sum(diffs, Fraction(0)), sum((x * x for x in diffs), Fraction(0)),
            sum(v > b for v, b in pairs), sum(v < b for v, b in pairs), sum(v == b for v, b in pairs))


def expected_sums(scores) -> dict:
    sums = defaultdict(lambda: [0, Fraction(0), Fraction(0), 0])
    for (run_id, metric, _), (value, human) in scores.items():
        entry = sums[(run_id, metric)]
        entry[0] += 1
        entry[1] += exact(value)
        entry[2] += exact(value) ** 2
        entry[3] += human
    return {key: tuple(entry) for key, entry in sums.items()}


def expected_coverage() -> dict:
    coverage = defaultdict(lambda: [0, 0, 0])
    for inference in Inference.objects.select_related("datapoint"):
        when, datapoint = uuid7_time(inference.run_id), inference.datapoint
        if datapoint.created_at <= when and (datapoint.staled_at is None or datapoint.staled_at > when):
            counts = coverage[inference.run_id]
            counts[0] += 1
            counts[1] += inference.error is not None
            counts[2] += inference.variant_pinned
    return {run_id: tuple(counts) for run_id, counts in coverage.items()}


def kept_pairs():
    return {(p.baseline_id, p.run_id, p.metric): (p.n, Fraction(p.total), Fraction(p.total_sq), p.higher, p.lower,
                                                   p.same) for p in PairedSummary.objects.all()}


def assert_kept_tables_exact():
    """Every kept table equals a from-scratch computation in Python, exactly (n, Σ, Σ², counts)."""
    scores = expected_scores()
    assert {(s.run_id, s.metric, s.datapoint_id): (s.value, s.human) for s in WindowScore.objects.all()} == scores
    pairs = kept_pairs()
    assert pairs == {key: expected_pair(scores, *key) for key in pairs}
    kept_sums = {(s.run_id, s.metric): (s.n, Fraction(s.total), Fraction(s.total_sq), s.overrides)
                 for s in RunMetricSummary.objects.exclude(n=0)}
    assert kept_sums == expected_sums(scores)
    assert not RunMetricSummary.objects.filter(n=0).exclude(total=0, total_sq=0, overrides=0).exists()
    kept_coverage = RunCoverage.objects.exclude(inferences=0, errors=0, pinned=0)
    assert {c.run_id: (c.inferences, c.errors, c.pinned) for c in kept_coverage} == expected_coverage()
    # The database's own recomputation agrees too (what verify_scores reports).
    assert find_drift() == []


# Adversarial magnitudes for the unbounded float metric: cancellation bait, extremes, alternating signs.
ADVERSARIAL = [1e20, -1e20, 1e200, -1e200, 5e-324, -5e-324, 1e-300, 1.7976931348623157e308, -1.7976931348623157e308,
               0.1, 0.2, 0.30000000000000004, 1e15 + 0.5, -3.0, 0.0]


def random_value(rng, metric):
    if metric == "correct":
        return float(rng.random() < 0.5)
    return rng.choice(ADVERSARIAL) if rng.random() < 0.5 else round(rng.uniform(-1, 1), rng.randint(0, 6))


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [7, 11, 23])
def test_scores_and_paired_sums_stay_exact_through_every_kind_of_write(seed):
    rng = random.Random(seed)
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
                    Feedback.objects.create(id=uuid7(at(400 + len(inferences))), inference=inference,
                                            metric=metric, value=random_value(rng, metric))
    # Cache pairs both ways round, so each write adjusts pairs as the run and as the baseline.
    paired_summaries(resolve_comparison(evaluation, [runs[0].id, runs[1].id, runs[2].id]))
    paired_summaries(resolve_comparison(evaluation, [runs[2].id, runs[0].id]))
    assert kept_pairs() and all(value[0] > 0 for value in kept_pairs().values())

    minute = 1000
    for _ in range(80):
        minute += 1
        action = rng.choice(["feedback", "late", "bulk", "batch", "retire", "revise", "delete", "update",
                             "unfeedback"])
        live = [i for i in inferences if Inference.objects.filter(id=i.id).exists()]
        inference = rng.choice(live)
        metric = rng.choice(METRICS)
        value = random_value(rng, metric)
        if action == "feedback":
            Feedback.objects.record(inference, metric, value, source=rng.choice(["human", "evaluator"]))
        elif action == "late":  # an import bringing an older value: it must not win
            Feedback.objects.create(id=uuid7(at(1)), inference=inference, metric=metric, value=value)
        elif action == "bulk":  # several rows for one (inference, metric) in one statement, out of order
            Feedback.objects.bulk_create([
                Feedback(id=uuid7(at(minute + offset)), inference=inference, metric=metric, value=v,
                         source=rng.choice(["human", "evaluator"]))
                for offset, v in ((2, value), (3, random_value(rng, metric)), (1, random_value(rng, metric)))])
        elif action == "batch":  # one statement across runs: both sides of cached pairs change on a datapoint
            chosen = [i for i in live if i.datapoint_id == inference.datapoint_id] + rng.sample(live, min(6, len(live)))
            rows = []
            for offset, target in enumerate(chosen):
                for metric in rng.sample(METRICS, rng.randint(1, 2)):
                    rows.append(Feedback(id=uuid7(at(minute + offset % 3)), inference=target, metric=metric,
                                         value=random_value(rng, metric), source=rng.choice(["human", "evaluator"])))
            Feedback.objects.bulk_create(rows)
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
        elif action == "unfeedback":  # a raw delete of the newest feedback: the one before wins again
            newest = Feedback.objects.filter(inference=inference, metric=metric).order_by("-id").first()
            if newest is not None:
                newest.delete()
        else:
            Inference.objects.filter(id=inference.id).delete()

    assert_kept_tables_exact()
    pairs = kept_pairs()
    # Computed again from scratch, the pairs come out the same as the kept ones.
    PairedSummary.objects.all().delete()
    paired_summaries(resolve_comparison(evaluation, [runs[0].id, runs[1].id, runs[2].id]))
    paired_summaries(resolve_comparison(evaluation, [runs[2].id, runs[0].id]))
    assert kept_pairs() == pairs


def test_a_correction_after_a_huge_value_leaves_the_mean_exact(evaluation_with_float_metric):
    """1e20 then the real value: with floating-point running sums the mean was 0.000 for good."""
    run, inferences = evaluation_with_float_metric
    values = [0.25, 0.5, 0.75]
    for inference, value in zip(inferences, values, strict=True):
        Feedback.objects.create(inference=inference, metric="quality", value=value)
    Feedback.objects.record(inferences[0], "quality", 1e20, source="human")
    Feedback.objects.record(inferences[0], "quality", 0.25, source="human")
    summary = RunMetricSummary.objects.get(run=run, metric="quality")
    assert summary.n == 3 and summary.mean == 0.5 and summary.overrides == 1
    assert summary.stddev == pytest.approx(0.25, rel=1e-15)
    for value in (1e200, -1e200, 5e-324):
        Feedback.objects.record(inferences[1], "quality", value, source="human")
    summary = RunMetricSummary.objects.get(run=run, metric="quality")
    assert summary.mean == pytest.approx((0.25 + 5e-324 + 0.75) / 3, rel=1e-15)
    assert find_drift() == []


@pytest.fixture
def evaluation_with_float_metric(db):
    evaluation = make_evaluation()
    run = RunFactory(evaluation=evaluation, id=uuid7(at(100)))
    inferences = [InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=evaluation, created=at(i)))
                  for i in range(3)]
    return run, inferences


@pytest.mark.django_db
def test_refresh_all_scores_rebuilds_what_the_triggers_keep():
    evaluation = make_evaluation()
    run = RunFactory(evaluation=evaluation, id=uuid7(at(100)))
    for i in range(5):
        inference = InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=evaluation, created=at(i)))
        Feedback.objects.create(inference=inference, metric="quality", value=i / 10)
        Feedback.objects.record(inference, "quality", 1 - i / 10)
    before = {(s.run_id, s.metric, s.datapoint_id): (s.value, s.human) for s in WindowScore.objects.all()}
    assert len(before) == 5 and sorted(v for v, _ in before.values()) == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    assert all(human for _, human in before.values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_refresh_scores(NULL)")
    assert {(s.run_id, s.metric, s.datapoint_id): (s.value, s.human) for s in WindowScore.objects.all()} == before
    summary = RunMetricSummary.objects.get(run=run, metric="quality")
    assert (summary.total, summary.overrides) == (Decimal("4.0"), 5)


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

    def writer():  # holds the dataset's lock until the filler has started waiting
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
    assert (pair.n, pair.total, pair.higher, pair.same) == (4, Decimal("0.75"), 1, 3)
    # And the kept sums agree with the statistics computed afterwards.
    stats = comparison_stats(comparison)
    delta = stats.metrics[1].per_run[1].delta
    assert delta.n == 4 and delta.mean == pytest.approx(0.75 / 4)
