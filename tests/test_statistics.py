"""The statistics fragment, second edition: paired means, cutoffs, best runs, efficiency and
distributions, each compared with a from-scratch computation in Python over the same rows."""

import math
import re
from collections import defaultdict
from datetime import timedelta
from fractions import Fraction

import pytest
from django.db import IntegrityError, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from comparisons import queries
from comparisons.ids import uuid7, uuid7_time
from comparisons.models import Evaluator, Feedback, Inference, WindowScore, in_window
from comparisons.stats import percentile
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    at,
    statistics_data,
)
from tests.test_window_scores import assert_kept_tables_exact, exact

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def data():
    return statistics_data(["base", "second", "third"], datapoints=24)


def comparison_of(data, runs=None):
    return queries.resolve_comparison(data["evaluation"], [r.id for r in (runs or data["runs"])])


def scores_by_run(metric):
    """(run, datapoint) -> value, read straight from WindowScore (the in-window winning scores)."""
    return {(s.run_id, s.datapoint_id): s.value for s in WindowScore.objects.filter(metric=metric)}


def test_paired_means_reconcile_with_a_recomputation_from_window_scores(data):
    base = data["runs"][0]
    # A correction of the baseline after the pair was filled: the kept base Σ follows it.
    queries.comparison_stats(comparison_of(data))
    inference = Inference.objects.get(run=base, datapoint=data["datapoints"][5])
    FeedbackFactory(inference=inference, metric="similarity", value=0.01, source=Feedback.Source.HUMAN)
    stats = queries.comparison_stats(comparison_of(data))
    assert_kept_tables_exact()
    for summary in stats.metrics:
        scores = scores_by_run(summary.evaluator.name)
        for stat in summary.per_run[1:]:
            paired = [d.id for d in data["datapoints"] if (base.id, d.id) in scores and (stat.run.id, d.id) in scores]
            base_mean = float(sum(exact(scores[(base.id, d)]) for d in paired) / len(paired))
            run_mean = float(sum(exact(scores[(stat.run.id, d)]) for d in paired) / len(paired))
            assert stat.delta.n == len(paired)
            assert stat.delta.base_mean == base_mean and stat.delta.run_mean == run_mean
            assert math.isclose(stat.delta.mean, run_mean - base_mean, abs_tol=1e-12)
    # The page says so: the paired n and both means on hover.
    body = client_body(data)
    third = next(s for s in stats.metrics[1].per_run if s.run.id == data["runs"][2].id)
    assert f"paired n={third.delta.n}" in body
    assert (f"baseline {third.delta.base_mean:.3f}, this run {third.delta.run_mean:.3f}") in body


def client_body(data, runs=None):
    from django.test import Client

    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory())
    response = client.get(reverse("comparison_stats", args=[data["evaluation"].name]),
                          {"run_ids": ",".join(str(r.id) for r in (runs or data["runs"]))}, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


def test_cutoff_verdicts_best_runs_and_overrides(data):
    stats = queries.comparison_stats(comparison_of(data))
    similarity = stats.metrics[1]
    evaluator = similarity.evaluator
    means = [s.mean for s in similarity.per_run]
    for stat in similarity.per_run:
        assert stat.passes == (stat.mean >= evaluator.cutoff)  # the runner's rule: mean meets cutoff
        assert stat.best == (stat.mean == max(means))
        assert stat.overrides == WindowScore.objects.filter(run_id=stat.run.id, metric="similarity", human=True).count()
    assert all(s.passes is None for s in stats.metrics[0].per_run)  # no cutoff, no verdict
    body = client_body(data)
    assert body.count('class="best-mark"') == 2  # one best run per metric
    assert body.count('class="verdict pass"') + body.count('class="verdict fail"') == 3
    assert '<g class="cutoff">' in body and "✎ 1" in body


def test_efficiency_equals_a_recomputation_over_each_window(data):
    comparison = comparison_of(data)
    # An inference outside its run's window (a datapoint created after the run) does not count.
    late = DatapointFactory(evaluation=data["evaluation"], created=at(500))
    InferenceFactory(run=data["runs"][0], datapoint=late, latency_ms=1e6, cost=5)
    figures = queries.comparison_efficiency(comparison)
    for run in comparison.runs:
        inferences = [i for i in Inference.objects.filter(run_id=run.id).select_related("datapoint")
                      if in_window(i.datapoint_id, i.datapoint.staled_at, run.time)]
        latencies = sorted(i.latency_ms for i in inferences)
        got = figures[run.id]
        assert got.inferences == len(inferences) and got.errors == sum(i.error is not None for i in inferences)
        for q, value in ((50, got.latency_p50), (95, got.latency_p95), (99, got.latency_p99)):
            assert math.isclose(value, percentile(latencies, q), rel_tol=1e-12)
        assert got.input_tokens == sum(i.input_tokens for i in inferences)
        assert got.output_tokens == sum(i.output_tokens for i in inferences)
        assert got.cost == float(sum(i.cost for i in inferences))
        assert math.isclose(got.cost_per_datapoint, got.cost / len(inferences))
        times = [uuid7_time(i.id) for i in inferences]
        assert math.isclose(got.throughput, len(inferences) / (max(times) - min(times)).total_seconds())
        assert got.error_rate == got.errors / len(inferences)
    body = client_body(data)
    assert "Efficiency and cost" in body and body.count('class="change delta ') > 0


def test_distributions_equal_binning_the_window_scores_in_python(data):
    comparison = comparison_of(data)
    stats = queries.comparison_stats(comparison)
    shapes = queries.comparison_distributions(comparison, stats)
    similarity = scores_by_run("similarity")
    correct = scores_by_run("correct")
    for run in comparison.runs:
        values = [v for (r, _), v in similarity.items() if r == run.id]
        expected = [0] * queries.HISTOGRAM_BINS
        for value in values:  # the declared range 0–1; the top value in the last bin
            expected[min(int(value * queries.HISTOGRAM_BINS), queries.HISTOGRAM_BINS - 1)] += 1
        shape = shapes[(run.id, "similarity")]
        assert shape.counts == expected and (shape.low, shape.high) == (0.0, 1.0)
        booleans = [v for (r, _), v in correct.items() if r == run.id]
        assert (shapes[(run.id, "correct")].passing, shapes[(run.id, "correct")].failing) == \
            (booleans.count(1.0), booleans.count(0.0))
    body = client_body(data)
    assert body.count('<svg class="hist ') == 3 and body.count('<svg class="passbar"') == 3
    assert re.search(r'aria-label="Distribution of similarity for base: \d+ scores; ', body)


def test_compact_summary_bar_above_four_runs_and_a_constant_query_count():
    data = statistics_data(["a", "b", "c", "d", "e"], datapoints=6)
    counts = []
    for runs in (data["runs"][:2], data["runs"][:4], data["runs"]):
        client_body(data, runs)  # fills the pairs once
        with CaptureQueriesContext(transaction.get_connection()) as queries_made:
            body = client_body(data, runs)
        counts.append(len(queries_made))
        details = re.search(r'<details class="stats-disclosure"( open)?>', body)
        assert bool(details.group(1)) == (len(runs) <= 4)
    assert counts[0] == counts[1] == counts[2]


def test_hostile_values_and_names():
    """Huge, tiny and negative scores of an unbounded metric, a name from before validation."""
    evaluation = EvaluationFactory(name="hostile")
    evaluator = EvaluatorFactory(evaluation=evaluation, name="judge", kind="custom", value_type="float", cutoff=-3)
    strange = "précision ✓ <b>&\"'"
    Evaluator.objects.filter(pk=evaluator.pk).update(name=strange)  # as raw SQL or an old row could
    runs = [RunFactory(evaluation=evaluation, id=uuid7(at(100 + i))) for i in range(2)]
    values = {runs[0].id: [1e200, -1e200, 5e-324, -3.0], runs[1].id: [-1e200, 1e-300, 7.5, -3.0]}
    for i in range(4):
        datapoint = DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i))
        for run in runs:
            inference = InferenceFactory(run=run, datapoint=datapoint)
            FeedbackFactory(inference=inference, metric=strange, value=values[run.id][i])
    with pytest.raises(IntegrityError), transaction.atomic():  # NaN is refused at write
        FeedbackFactory(inference=inference, metric=strange, value=float("nan"))
    comparison = queries.resolve_comparison(evaluation, [r.id for r in runs])
    stats = queries.comparison_stats(comparison)
    base, other = stats.metrics[0].per_run
    assert base.mean == float(sum(map(Fraction, values[runs[0].id])) / 4)
    assert other.delta.base_mean == base.mean and other.delta.run_mean == other.mean
    assert other.delta.n == 4
    shapes = queries.comparison_distributions(comparison, stats)
    assert sum(shapes[(runs[0].id, strange)].counts) == 4 and shapes[(runs[0].id, strange)].low == -1e200
    counts = defaultdict(int)
    for run in runs:
        for bin_index, count in enumerate(shapes[(run.id, strange)].counts):
            counts[bin_index] += count
    assert counts[0] == 2 and counts[9] == 1  # −1e200 twice in the first bin, 1e200 in the last
    body = client_body({"evaluation": evaluation, "runs": runs})
    assert "précision ✓ &lt;b&gt;&amp;&quot;&#x27;" in body and "<b>&" not in body
    assert "nan" not in body.lower().replace("nanoseconds", "") and "inf" not in re.sub(r"info|inferences?", "", body)
