"""Control characters in the URL, a parameter, a cookie or a form field: a 400 naming where, never a 500."""

import pytest
from django.urls import reverse

from comparisons.models import Feedback
from tests.factories import EvaluationFactory, EvaluatorFactory, FeedbackFactory, InferenceFactory, RunFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def run(db):
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    run = RunFactory(evaluation=evaluation, variant_name="gpt-small")
    FeedbackFactory(inference=InferenceFactory(run=run), metric="correct", value=1.0)
    return run


def test_nul_in_a_path_segment_is_a_400_naming_it(client_logged_in, run):
    response = client_logged_in.get("/evaluations/qa%00x/")
    assert response.status_code == 400
    assert "The URL path segment &#x27;qa\\x00x&#x27; contains a control character (U+0000)." in \
        response.content.decode()
    assert client_logged_in.get(f"/runs/{run.id}%00/").status_code == 400
    assert client_logged_in.get(f"/runs/{run.id}/").status_code == 200


def test_nul_in_q_is_a_400_naming_q(client_logged_in, run):
    response = client_logged_in.get(reverse("run_search", args=["qa"]), {"q": "gpt\x00"})
    assert response.status_code == 400
    assert "The parameter &#x27;q&#x27; contains a control character (U+0000)." in response.content.decode()
    assert client_logged_in.get(reverse("run_search", args=["qa"]), {"q": "gpt"}).status_code == 200


@pytest.mark.parametrize("code", [*range(0x20), 0x7F])
def test_every_c0_control_and_del_in_a_parameter_is_refused(client_logged_in, run, code):
    url = reverse("comparison_detail", args=["qa"])
    response = client_logged_in.get(url, {"run_ids": f"{run.id}{chr(code)}"})
    assert response.status_code == 400
    assert f"The parameter &#x27;run_ids&#x27; contains a control character (U+{code:04X})." in \
        response.content.decode()


def test_a_control_character_in_a_parameter_name_is_refused(client_logged_in, run):
    response = client_logged_in.get(reverse("evaluation_list") + "?a%01b=1")
    assert response.status_code == 400
    assert "The name of the parameter &#x27;a\\x01b&#x27; contains a control character (U+0001)." in \
        response.content.decode()


def test_htmx_requests_get_the_error_fragment(client_logged_in, run):
    response = client_logged_in.get(reverse("comparison_detail", args=["qa"]), {"filter": "\x1b[31m"}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 400 and 'role="alert"' in body and "<html" not in body
    assert "The parameter &#x27;filter&#x27; contains a control character (U+001B)." in body
    full = client_logged_in.get(reverse("comparison_detail", args=["qa"]), {"filter": "\x1b[31m"})
    assert "<html" in full.content.decode() and "Bad request" in full.content.decode()


def test_admin_changelist_filters_and_search_with_control_characters(admin_client_logged_in, run):
    url = reverse("admin:comparisons_evaluationrun_changelist")
    for params, name in (({"variant_name": "gpt\x00"}, "variant_name"), ({"q": "\x00"}, "q"),
                         ({"status__exact": "completed\x7f"}, "status__exact")):
        response = admin_client_logged_in.get(url, params)
        assert response.status_code == 400, params
        assert f"The parameter &#x27;{name}&#x27; contains a control character" in response.content.decode()
    assert admin_client_logged_in.get(url, {"variant_name": "gpt-small"}).status_code == 200


def test_nul_in_a_post_field_is_a_400_naming_it(client_logged_in, admin_client_logged_in, run):
    inference = run.inferences.get()
    url = reverse("feedback_create", args=["qa", inference.datapoint_id]) + f"?run_ids={run.id}"
    before = Feedback.objects.count()
    response = client_logged_in.post(url, {"inference_id": inference.id, "metric": "correct", "value": "1",
                                           "reason": "fine\x00"})
    assert response.status_code == 400
    assert ("The form field &#x27;reason&#x27; contains a NUL character (U+0000), which cannot be stored."
            in response.content.decode())
    assert Feedback.objects.count() == before
    add = admin_client_logged_in.post(reverse("admin:comparisons_dataset_add"), {"name": "ok", "description": "\x00"})
    assert add.status_code == 400 and "The form field &#x27;description&#x27;" in add.content.decode()


def test_tabs_and_line_breaks_in_post_fields_are_kept(client_reviewer, run):
    inference = run.inferences.get()
    url = reverse("feedback_create", args=["qa", inference.datapoint_id]) + f"?run_ids={run.id}"
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct", "value": "0",
                                           "reason": "line one\r\n\tline two"})
    assert response.status_code == 302
    assert Feedback.objects.order_by("-id").first().reason == "line one\r\n\tline two"


def test_a_cookie_holding_nul_is_a_400_not_a_failed_session_lookup(client, run):
    # Django decodes octal escapes in quoted cookie values, so "\000" arrives as NUL.
    response = client.get(reverse("evaluation_list"), HTTP_COOKIE='sessionid="abcdefgh\\000"')
    assert response.status_code == 400
    assert "The cookie &#x27;sessionid&#x27; contains a control character (U+0000)" in response.content.decode()
