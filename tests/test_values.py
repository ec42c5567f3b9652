"""Score values are validated at every writer: the model, the correction endpoint and the database.

(The runner and the TensorZero import have their own tests in test_runner.py and test_tensorzero.py.)
"""

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from comparisons.ids import uuid7
from comparisons.models import Evaluator, Feedback, RunMetricSummary, default_range
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, InferenceFactory, RunFactory, at

pytestmark = pytest.mark.django_db
HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "7", "-3", "0x10", "", "1,5", "\u0000",
           "1\u00000", "9" * 5000]


@pytest.fixture
def cell():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="rouge", kind="rouge_l", value_type="float")
    EvaluatorFactory(evaluation=evaluation, name="judge", kind="llm_judge", value_type="float",
                     config={"model": "m"})
    run = RunFactory(evaluation=evaluation, id=uuid7(at(100)))
    datapoint = DatapointFactory(evaluation=evaluation, created=at(1))
    inference = InferenceFactory(run=run, datapoint=datapoint)
    Feedback.objects.create(inference=inference, metric="rouge", value=0.5)
    return inference


def test_evaluators_get_the_range_of_their_kind():
    assert default_range("rouge_l", "float") == (0.0, 1.0)
    assert default_range("bleu", "float") == (0.0, 1.0)
    assert default_range("custom", "boolean") == (0.0, 1.0)
    assert default_range("llm_judge", "float") == (None, None)
    assert default_range("custom", "float") == (None, None)
    evaluation = EvaluationFactory(name="e")
    declared = EvaluatorFactory(evaluation=evaluation, name="stars", kind="custom", value_type="float",
                                min_value=1, max_value=5)
    assert (declared.min_value, declared.max_value) == (1, 5)
    with pytest.raises(ValidationError, match="must not be below"):
        Evaluator(evaluation=evaluation, name="x", kind="custom", value_type="float", min_value=2, max_value=1).clean()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 7.0, -3.0, 1.0000001])
def test_the_model_refuses_non_finite_and_out_of_range_values(cell, value):
    with pytest.raises(ValidationError) as error:
        Feedback.objects.record(cell, "rouge", value)
    message = " ".join(error.value.messages)
    assert ("finite" in message) if value != value or abs(value) == float("inf") else "from 0 to 1" in message


def test_an_unbounded_metric_takes_huge_and_tiny_values_and_the_stats_stay_finite(cell):
    for value in (1e200, -1e200, 5e-324, 1.7976931348623157e308):
        Feedback.objects.record(cell, "judge", value)
    summary = RunMetricSummary.objects.get(run=cell.run, metric="judge")
    assert summary.n == 1 and summary.mean == 1.7976931348623157e308


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "7", "-3"])
def test_the_database_refuses_what_the_model_would_for_any_writer(cell, value):
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO comparisons_feedback (id, inference_id, metric, value, source, reason, tags) "
                       "VALUES (%s, %s, 'rouge', %s::float8, 'human', '', '{}')", [uuid7(), cell.id, value])


@pytest.mark.parametrize("value", HOSTILE)
def test_a_correction_with_a_bad_value_is_a_400_naming_the_problem(client, user, cell, value):
    user.user_permissions.add(Permission.objects.get(codename="add_feedback"))
    client.force_login(user)
    url = reverse("feedback_create", args=["qa", cell.datapoint_id]) + f"?run_ids={cell.run_id}"
    response = client.post(url, {"inference_id": cell.id, "metric": "rouge", "value": value})
    assert response.status_code == 400
    body = response.content.decode()
    if value in ("7", "-3"):
        assert "takes values from 0 to 1" in body
    else:
        assert "value" in body
    assert Feedback.objects.filter(inference=cell, metric="rouge").count() == 1


def test_statistics_count_human_overrides_and_a_revert_by_the_evaluator_undoes_it(client, user, cell):
    from comparisons.export import summary_lines
    from comparisons.queries import comparison_stats, resolve_comparison

    Feedback.objects.record(cell, "rouge", 0.75, source="human", created_by=user)
    comparison = resolve_comparison(cell.run.evaluation, [cell.run_id])
    rouge = next(m for m in comparison_stats(comparison).metrics if m.evaluator.name == "rouge")
    assert (rouge.per_run[0].n, rouge.per_run[0].overrides) == (1, 1)
    assert next(line for line in summary_lines(comparison) if line["metric"] == "rouge")["human_overrides"] == 1
    client.force_login(user)
    body = client.get(reverse("comparison_stats", args=["qa"]), {"run_ids": str(cell.run_id)},
                      HTTP_HX_REQUEST="true").content.decode()
    assert "1 of these values are human corrections" in body
    Feedback.objects.record(cell, "rouge", 0.5, source="evaluator")  # the evaluator's value wins again
    rouge = next(m for m in comparison_stats(comparison).metrics if m.evaluator.name == "rouge")
    assert (rouge.per_run[0].n, rouge.per_run[0].overrides, rouge.per_run[0].mean) == (1, 0, 0.5)


def test_every_migrated_database_has_the_reviewers_group_with_the_correct_permission():
    from django.contrib.auth.models import Group

    group = Group.objects.get(name="Reviewers")
    assert [p.codename for p in group.permissions.all()] == ["add_feedback"]


@pytest.mark.parametrize(("value", "message"), [("7", "takes values from 0 to 1; 7 is outside that range"),
                                                ("nan", "Enter a number."), ("1e400", "Enter a number.")])
def test_the_admin_refuses_a_bad_value_with_a_form_error(admin_client_logged_in, cell, value, message):
    before = Feedback.objects.count()
    response = admin_client_logged_in.post(reverse("admin:comparisons_feedback_add"), {
        "inference": cell.id, "metric": "rouge", "value": value, "source": "human", "reason": "", "tags": "{}"})
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert Feedback.objects.count() == before
