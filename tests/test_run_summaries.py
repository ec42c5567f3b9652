"""RunMetricSummary: the trigger-kept running sums behind statistics and run headlines."""

import math
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from comparisons.ids import uuid7
from comparisons.models import Feedback, RunMetricSummary
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, InferenceFactory, RunFactory, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def run():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="quality", value_type="float")
    return RunFactory(evaluation=evaluation, id=uuid7(at(100)))


def summary(run, metric):
    return RunMetricSummary.objects.get(run=run, metric=metric)


def rebuilt(run):
    with connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_refresh_scores(%s)", [[run.id]])
    return {(s.metric, s.n, s.total, s.total_sq) for s in RunMetricSummary.objects.filter(run=run)}


def test_sums_follow_the_winning_feedback(run):
    values = [0.2, 0.5, 0.9]
    inferences = []
    for i, value in enumerate(values):
        inference = InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=run.evaluation, created=at(i)))
        Feedback.objects.create(inference=inference, metric="quality", value=value)
        inferences.append(inference)
    quality = summary(run, "quality")
    assert quality.n == 3 and quality.mean == pytest.approx(sum(values) / 3)
    mean = sum(values) / 3
    assert quality.stddev == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 2))
    # A newer feedback replaces the old value; n stays.
    Feedback.objects.record(inferences[0], "quality", 1.0, source="human")
    quality = summary(run, "quality")
    assert quality.n == 3 and quality.total == Decimal("2.4")
    # An older feedback arriving late (e.g. an import) changes no winner.
    Feedback.objects.create(id=uuid7(at(0)), inference=inferences[1], metric="quality", value=0.0)
    assert summary(run, "quality").total == Decimal("2.4")
    kept = {(s.metric, s.n, s.total, s.total_sq) for s in RunMetricSummary.objects.filter(run=run)}
    assert rebuilt(run) == kept


def test_bulk_inserts_with_several_feedback_per_metric(run):
    inference = InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=run.evaluation, created=at(1)))
    Feedback.objects.bulk_create([
        Feedback(id=uuid7(at(101)), inference=inference, metric="correct", value=0),
        Feedback(id=uuid7(at(103)), inference=inference, metric="correct", value=1),
        Feedback(id=uuid7(at(102)), inference=inference, metric="correct", value=0),
    ])
    correct = summary(run, "correct")
    assert (correct.n, correct.total) == (1, 1.0)


def test_out_of_window_scores_are_left_out_and_back_dated_deletes_recount(run):
    inside = DatapointFactory(evaluation=run.evaluation, created=at(1))
    late = DatapointFactory(evaluation=run.evaluation, created=at(200))  # created after the run
    for datapoint, value in ((inside, 1.0), (late, 0.0)):
        Feedback.objects.create(inference=InferenceFactory(run=run, datapoint=datapoint), metric="correct", value=value)
    assert summary(run, "correct").n == 1
    inside.retire(when=at(50))  # deleted before the run ran: no longer in its window
    assert summary(run, "correct").n == 0
    assert rebuilt(run) == set()


def test_deleting_a_run_removes_its_sums(run):
    inference = InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=run.evaluation, created=at(1)))
    Feedback.objects.create(inference=inference, metric="correct", value=1)
    run.delete()
    assert not RunMetricSummary.objects.exists()


def test_later_runs_do_not_share_sums(run):
    second = RunFactory(evaluation=run.evaluation, id=uuid7(at(100) + timedelta(hours=1)))
    datapoint = DatapointFactory(evaluation=run.evaluation, created=at(1))
    for r, value in ((run, 1.0), (second, 0.0)):
        Feedback.objects.create(inference=InferenceFactory(run=r, datapoint=datapoint), metric="correct", value=value)
    assert (summary(run, "correct").total, summary(second, "correct").total) == (1.0, 0.0)
