import json

import pytest
from django.contrib import admin
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory
from django.urls import reverse

from comparisons.models import Datapoint, Evaluation, Evaluator, Feedback
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    at,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def data():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    run = RunFactory(evaluation=evaluation, variant_name="gpt-small", tags={"branch": "feature-x"})
    inference = InferenceFactory(run=run, output={"text": "<b>bold</b>"}, error=None)
    FeedbackFactory(inference=inference, metric="correct", value=1.0)
    return {"evaluation": evaluation, "run": run, "inference": inference}


def registered_models():
    return [model for model in admin.site._registry if model._meta.app_label == "comparisons"]


def test_every_model_is_registered():
    names = {model.__name__ for model in registered_models()}
    assert names == {"Function", "Dataset", "Datapoint", "Evaluation", "Evaluator", "EvaluationRun",
                     "Inference", "Feedback"}


def test_every_changelist_and_change_page_renders(admin_client_logged_in, data):
    for model in registered_models():
        opts = model._meta
        response = admin_client_logged_in.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert response.status_code == 200, opts.model_name
        obj = model.objects.first()
        assert obj is not None, opts.model_name
        response = admin_client_logged_in.get(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )
        assert response.status_code == 200, opts.model_name


def test_json_is_pretty_printed_and_escaped(admin_client_logged_in, data):
    url = reverse("admin:comparisons_inference_change", args=[data["inference"].pk])
    body = admin_client_logged_in.get(url).content.decode()
    assert "&quot;text&quot;: &quot;&lt;b&gt;bold&lt;/b&gt;&quot;" in body
    assert '<pre class="json-pretty">{\n  ' in body
    assert "<b>bold</b>" not in body


def test_runs_show_inference_counts_and_search_by_id_prefix_and_tag(admin_client_logged_in, data):
    url = reverse("admin:comparisons_evaluationrun_changelist")
    response = admin_client_logged_in.get(url, {"q": str(data["run"].id)[:8]})
    assert response.context["cl"].result_count == 1
    assert response.context["cl"].result_list[0]._inferences == 1
    assert admin_client_logged_in.get(url, {"q": "feature-x"}).context["cl"].result_count == 1
    assert admin_client_logged_in.get(url, {"q": "nothing-like-this"}).context["cl"].result_count == 0
    assert admin_client_logged_in.get(url, {"run_date": "7"}).status_code == 200


def test_datapoint_filters_current_and_stale(admin_client_logged_in, data):
    old = DatapointFactory(evaluation=data["evaluation"], created=at(0))
    old.revise(name="edited")
    url = reverse("admin:comparisons_datapoint_changelist")
    stale = admin_client_logged_in.get(url, {"version": "stale"}).context["cl"].result_list
    assert [d.pk for d in stale] == [old.pk]
    current = admin_client_logged_in.get(url, {"version": "current"}).context["cl"].result_list
    assert old.pk not in [d.pk for d in current]


def test_editing_a_datapoint_in_the_admin_creates_a_new_version(admin_client_logged_in, data):
    datapoint = data["inference"].datapoint
    url = reverse("admin:comparisons_datapoint_change", args=[datapoint.pk])
    response = admin_client_logged_in.post(url, {
        "name": "renamed", "input": '{"q": "new input"}', "reference_output": '"new answer"', "tags": "{}",
        "_continue": "1",
    })
    assert response.status_code == 302
    datapoint.refresh_from_db()
    assert datapoint.staled_at is not None and datapoint.name != "renamed"
    new = Datapoint.objects.get(supersedes=datapoint)
    assert new.name == "renamed" and new.input == {"q": "new input"}
    assert response.url == reverse("admin:comparisons_datapoint_change", args=[new.pk])


def test_datapoints_and_feedback_cannot_be_hard_deleted(admin_client_logged_in, data):
    datapoint = data["inference"].datapoint
    delete_url = reverse("admin:comparisons_datapoint_delete", args=[datapoint.pk])
    assert admin_client_logged_in.post(delete_url, {"post": "yes"}).status_code == 403
    response = admin_client_logged_in.post(reverse("admin:comparisons_datapoint_changelist"), {
        "action": "retire_selected", "_selected_action": [datapoint.pk],
    })
    assert response.status_code == 302
    datapoint.refresh_from_db()
    assert datapoint.staled_at is not None
    feedback = Feedback.objects.first()
    assert admin_client_logged_in.post(
        reverse("admin:comparisons_feedback_delete", args=[feedback.pk]), {"post": "yes"}
    ).status_code == 403


def test_compare_selected_runs_opens_the_comparison(admin_client_logged_in, data):
    second = RunFactory(evaluation=data["evaluation"])
    response = admin_client_logged_in.post(reverse("admin:comparisons_evaluationrun_changelist"), {
        "action": "compare_selected", "_selected_action": [data["run"].pk, second.pk],
    })
    assert response.status_code == 302
    assert response.url == f"/evaluations/qa/?run_ids={data['run'].pk}%2C{second.pk}"


def test_compare_selected_refuses_runs_of_different_evaluations(admin_client_logged_in, data):
    other = RunFactory()
    response = admin_client_logged_in.post(reverse("admin:comparisons_evaluationrun_changelist"), {
        "action": "compare_selected", "_selected_action": [data["run"].pk, other.pk],
    }, follow=True)
    assert "Runs of different evaluations cannot be compared" in response.content.decode()


def test_admin_is_staff_only(client_logged_in):
    response = client_logged_in.get(reverse("admin:index"))
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_evaluator_inline_shows_on_evaluation(admin_client_logged_in, data):
    response = admin_client_logged_in.get(reverse("admin:comparisons_evaluation_change", args=[data["evaluation"].pk]))
    assert Evaluator.objects.filter(evaluation=data["evaluation"]).count() == 1
    assert 'name="evaluators-0-name"' in response.content.decode()


def test_a_whole_big_table_shows_postgresqls_estimate_and_filters_count_exactly(admin_client_logged_in, data,
                                                                                  monkeypatch):
    from django.db import connection

    from comparisons.admin import EstimatedCountPaginator

    for value in (0, 1, 1):
        FeedbackFactory(inference=data["inference"], metric="correct", value=value)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE comparisons_feedback")  # the estimate is now the 4 rows above
    FeedbackFactory(inference=data["inference"], metric="correct", value=0, source="human")  # not in it
    monkeypatch.setattr(EstimatedCountPaginator, "threshold", 0)  # "big" from one row, for the test
    url = reverse("admin:comparisons_feedback_changelist")
    whole = admin_client_logged_in.get(url)
    assert whole.status_code == 200 and whole.context["cl"].result_count == 4  # estimate: 5 exist
    human = admin_client_logged_in.get(url, {"source__exact": "human"})
    assert human.context["cl"].result_count == 1  # filtered: counted exactly
    monkeypatch.setattr(EstimatedCountPaginator, "threshold", 100_000)
    assert admin_client_logged_in.get(url).context["cl"].result_count == Feedback.objects.count() == 5


def test_variant_and_metric_filters_offer_known_names_and_filter(admin_client_logged_in, data):
    EvaluatorFactory(evaluation=data["evaluation"], name="quality", value_type="float")
    other = InferenceFactory(run=RunFactory(evaluation=data["evaluation"], variant_name="gpt-large"))
    FeedbackFactory(inference=other, metric="quality", value=0.5)
    inferences = reverse("admin:comparisons_inference_changelist")
    page = admin_client_logged_in.get(inferences)
    assert "gpt-large" in page.content.decode() and "gpt-small" in page.content.decode()
    assert [i.id for i in admin_client_logged_in.get(inferences, {"variant_name": "gpt-large"})
            .context["cl"].result_list] == [other.id]
    feedback = reverse("admin:comparisons_feedback_changelist")
    assert [f.metric for f in admin_client_logged_in.get(feedback, {"metric": "quality"})
            .context["cl"].result_list] == ["quality"]


def _fields(datapoint, name):
    return {"name": name, "input": json.dumps(datapoint.input), "tags": "{}", "initial-tags": "{}",
            "reference_output": json.dumps(datapoint.reference_output)}  # initial-: tags has a callable default


def _edit(client, datapoint, name, button):
    """Post the datapoint's change form with `name`, pressing "Save" or "Save and continue editing"."""
    url = reverse("admin:comparisons_datapoint_change", args=[datapoint.pk])
    return client.post(url, {**_fields(datapoint, name), "_continue" if button == "continue" else "_save": "1"})


def _change_url(datapoint):
    return reverse("admin:comparisons_datapoint_change", args=[datapoint.pk])


@pytest.mark.parametrize("first_button, second_button", [("continue", "save"), ("save", "continue")])
@pytest.mark.parametrize("second_changes", [True, False])
def test_a_datapoint_edit_never_redirects_to_the_version_an_earlier_edit_made(
        admin_client_logged_in, data, first_button, second_button, second_changes):
    a = DatapointFactory(evaluation=data["evaluation"], created=at(1))
    b = DatapointFactory(evaluation=data["evaluation"], created=at(2))
    first = _edit(admin_client_logged_in, a, "a edited", first_button)
    new_a = Datapoint.objects.get(supersedes=a)
    second = _edit(admin_client_logged_in, b, "b edited" if second_changes else b.name, second_button)
    new_b = Datapoint.objects.filter(supersedes=b).first()
    assert (new_b is not None) == second_changes
    changelist = reverse("admin:comparisons_datapoint_changelist")
    assert first.status_code == second.status_code == 302
    assert first.url == (_change_url(new_a) if first_button == "continue" else changelist)
    assert second.url == (_change_url(new_b or b) if second_button == "continue" else changelist)
    assert str(new_a.pk) not in second.url


def test_interleaved_datapoint_edits_each_redirect_to_their_own_version(staff_user, data):
    """Two requests on the one shared DatapointAdmin: B saves between A's save and A's response."""
    model_admin = admin.site._registry[Datapoint]
    a = DatapointFactory(evaluation=data["evaluation"], created=at(1))
    b = DatapointFactory(evaluation=data["evaluation"], created=at(2))

    def save(datapoint, name):
        request = RequestFactory().post(_change_url(datapoint), {**_fields(datapoint, name), "_continue": "1"})
        request.user, request.session = staff_user, SessionStore()
        request._messages = FallbackStorage(request)
        form = model_admin.get_form(request, datapoint, change=True)(request.POST, instance=datapoint)
        assert form.is_valid(), form.errors
        model_admin.save_model(request, datapoint, form, change=True)
        return request

    request_a = save(a, "a edited")
    request_b = save(b, "b edited")
    assert model_admin.response_change(request_a, a).url == _change_url(Datapoint.objects.get(supersedes=a))
    assert model_admin.response_change(request_b, b).url == _change_url(Datapoint.objects.get(supersedes=b))


def test_admin_instances_keep_no_request_state(admin_client_logged_in, data):
    """Every ModelAdmin is one instance shared by all requests: saving, adding and listing leave it as it was."""
    before = {model: dict(vars(model_admin)) for model, model_admin in admin.site._registry.items()}
    datapoint = DatapointFactory(evaluation=data["evaluation"], created=at(1))
    _edit(admin_client_logged_in, datapoint, "edited", "continue")
    for model in registered_models():
        opts = model._meta
        admin_client_logged_in.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        admin_client_logged_in.post(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"), {})
    after = {model: dict(vars(model_admin)) for model, model_admin in admin.site._registry.items()}
    assert after == before


def test_empty_add_forms_answer_with_form_errors(admin_client_logged_in, data):
    for model in registered_models():
        opts = model._meta
        response = admin_client_logged_in.post(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"), {})
        assert response.status_code == 200, opts.model_name
        assert response.context["adminform"].form.errors, opts.model_name
        assert "errornote" in response.content.decode(), opts.model_name


def test_an_inference_without_run_or_datapoint_is_a_form_error(admin_client_logged_in, data):
    url = reverse("admin:comparisons_inference_add")
    response = admin_client_logged_in.post(url, {"datapoint": data["inference"].datapoint_id, "variant_name": "v"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"run": ["This field is required."]}


@pytest.mark.parametrize("text, message", [
    ('{"a": NaN}', "NaN"),
    ('{"a": 1e400}', "Infinity"),
    ('{"a": "\\u0000"}', "NUL character"),
    ('{"\\u0000": 1}', "NUL character"),
    ("1" * 5000, "Enter a valid JSON."),
    ("[" * 5000 + "]" * 5000, "Enter a valid JSON."),
    ("[" * 300 + "]" * 300, "nested deeper than 200 levels"),
])
def test_json_that_postgresql_cannot_store_is_a_form_error(admin_client_logged_in, data, text, message):
    evaluation = data["evaluation"]
    response = admin_client_logged_in.post(reverse("admin:comparisons_datapoint_add"), {
        "dataset": evaluation.dataset_id, "function": evaluation.function_id, "name": "new",
        "input": text, "reference_output": "null", "tags": "{}"})
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors["input"])
    assert not Datapoint.objects.filter(name="new").exists()


@pytest.mark.parametrize("name", ["team/alpha", "qa\n", "line\r\nbreak", "tab\there", "a b", 'quote"', "..", "",
                                  "x" * 201])
def test_names_the_urls_cannot_carry_are_refused_in_the_admin(admin_client_logged_in, data, name):
    evaluation = data["evaluation"]
    response = admin_client_logged_in.post(reverse("admin:comparisons_evaluation_add"), {
        "name": name, "function": evaluation.function_id, "dataset": evaluation.dataset_id,
        "evaluators-TOTAL_FORMS": "0", "evaluators-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert not Evaluation.objects.exclude(pk=evaluation.pk).exists()


def test_an_evaluator_name_is_checked_in_the_evaluation_inline(admin_client_logged_in, data):
    evaluation = data["evaluation"]
    response = admin_client_logged_in.post(reverse("admin:comparisons_evaluation_add"), {
        "name": "new-eval", "function": evaluation.function_id, "dataset": evaluation.dataset_id,
        "evaluators-TOTAL_FORMS": "1", "evaluators-INITIAL_FORMS": "0", "evaluators-0-name": "bad/metric",
        "evaluators-0-kind": "exact_match", "evaluators-0-value_type": "boolean", "evaluators-0-optimize": "max",
        "evaluators-0-config": '{"threshold": Infinity}'})
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors[0]
    assert set(errors) == {"name", "config"}
    assert not Evaluation.objects.filter(name="new-eval").exists()


def test_an_evaluation_named_before_validation_is_listed_and_cannot_break_the_compare_action(
        admin_client_logged_in, data):
    Evaluation.objects.filter(pk=data["evaluation"].pk).update(name='team/qa\r\n"x"')  # as raw SQL would
    response = admin_client_logged_in.get(reverse("admin:comparisons_evaluation_changelist"))
    assert response.status_code == 200
    assert "rename to compare" in response.content.decode()
    second = RunFactory(evaluation=data["evaluation"])
    action = admin_client_logged_in.post(reverse("admin:comparisons_evaluationrun_changelist"), {
        "action": "compare_selected", "_selected_action": [data["run"].pk, second.pk]}, follow=True)
    assert action.status_code == 200 and "cannot be in a URL; rename the evaluation" in action.content.decode()


@pytest.mark.parametrize("value", ["abc", "1e400", "-1", "", "7.0", "日本"])
def test_odd_run_date_filter_values_list_every_run(admin_client_logged_in, data, value):
    response = admin_client_logged_in.get(reverse("admin:comparisons_evaluationrun_changelist"), {"run_date": value})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_a_judge_prompt_without_the_output_is_a_form_error_in_the_admin(admin_client_logged_in, data):
    url = reverse("admin:comparisons_evaluator_add")
    fields = {"evaluation": data["evaluation"].pk, "name": "judge", "kind": "llm_judge", "value_type": "boolean",
              "optimize": "max", "cutoff": "", "min_value": "", "max_value": ""}
    response = admin_client_logged_in.post(url, {
        **fields, "config": json.dumps({"model": "m", "prompt": "Does the answer resolve the question?"})})
    assert response.status_code == 200
    assert "has no {output} placeholder" in " ".join(response.context["adminform"].form.errors["config"])
    assert not Evaluator.objects.filter(name="judge").exists()
    response = admin_client_logged_in.post(url, {
        **fields, "config": json.dumps({"model": "m", "prompt": "Question {input}\nAnswer {output}"})})
    assert response.status_code == 302
    assert Evaluator.objects.get(name="judge").config["prompt"] == "Question {input}\nAnswer {output}"
