import json
import re
import uuid
from html import unescape

import pytest
from django.urls import reverse

from comparisons.ids import uuid7
from comparisons.models import Feedback, PairedSummary
from comparisons.reviewers import reviewers_group
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    at,
    bulk_scored_runs,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
XSS = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


@pytest.fixture
def setup():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float", cutoff=0.5)
    base = RunFactory(evaluation=evaluation, id=uuid7(at(100)), variant_name="baseline-v1")
    new = RunFactory(evaluation=evaluation, id=uuid7(at(200)), variant_name="candidate-v2")

    def scores(run, i):
        value = 1.0 if run == base else float(i % 2)
        return {"correct": value, "similarity": 0.3 + value / 2}

    datapoints = bulk_scored_runs(evaluation, [base, new], 130, scores)
    return {"evaluation": evaluation, "base": base, "new": new, "datapoints": datapoints,
            "url": reverse("comparison_detail", args=["qa"]), "run_ids": f"{base.id},{new.id}"}


def test_every_portal_page_requires_login(client, setup):
    datapoint = setup["datapoints"][0]
    urls = [
        reverse("evaluation_list"), setup["url"], reverse("comparison_stats", args=["qa"]),
        reverse("run_search", args=["qa"]), reverse("datapoint_detail", args=["qa", datapoint.id]),
        reverse("run_detail", args=[setup["base"].id]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/"), url
    response = client.post(reverse("feedback_create", args=["qa", datapoint.id]), {})
    assert response.status_code == 302 and response.url.startswith("/login/")


def test_evaluation_list_links_the_latest_two_runs(client_logged_in, setup):
    EvaluationFactory(name="empty-eval")
    body = client_logged_in.get(reverse("evaluation_list")).content.decode()
    assert f"?run_ids={setup['base'].id},{setup['new'].id}" in body
    assert "candidate-v2" in body and "no runs yet" in body


def test_comparison_page_full_and_fragment(client_logged_in, setup):
    params = {"run_ids": setup["run_ids"]}
    full = client_logged_in.get(setup["url"], params)
    assert full.status_code == 200
    body = full.content.decode()
    assert "<html" in body and "qa — compare runs" in body and 'id="comparison"' in body
    assert body.count('class="group"') == 100 and "dp-129" in body and "dp-029" not in body
    assert "HX-Request" in full["Vary"]

    rows = client_logged_in.get(setup["url"], {**params, "after": str(setup["datapoints"][30].id)},
                                **HTMX, HTTP_HX_TARGET="load-more")
    fragment = rows.content.decode()
    assert rows.status_code == 200 and "<html" not in fragment and 'id="comparison"' not in fragment
    assert fragment.count('class="group"') == 30 and "dp-029" in fragment and "dp-030" not in fragment
    assert "End of results" in fragment and 'id="load-more"' not in fragment

    swapped = client_logged_in.get(setup["url"], params, **HTMX, HTTP_HX_TARGET="comparison")
    assert swapped.content.decode().lstrip().startswith('<div id="comparison">')


def test_history_restore_gets_the_full_page(client_logged_in, setup):
    response = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"]}, **HTMX,
                                    HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in response.content.decode()


def test_next_page_link_works_without_javascript(client_logged_in, setup):
    body = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"]}).content.decode()
    cursor = setup["datapoints"][30].id  # the 100th newest row
    assert f'href="/evaluations/qa/?run_ids={setup["base"].id}%2C{setup["new"].id}&amp;after={cursor}"' in body
    assert 'hx-trigger="revealed"' in body


def test_without_run_ids_the_latest_run_is_shown_with_the_selector_open(client_logged_in, setup):
    body = client_logged_in.get(setup["url"]).content.decode()
    assert 'aria-expanded="true"' in body and f'id="run-option-{setup["base"].id}"' in body
    assert f'data-run-id="{setup["new"].id}"' in body  # the chip of the latest run


def test_empty_evaluation_explains_how_to_start(client_logged_in):
    EvaluationFactory(name="fresh")
    body = client_logged_in.get(reverse("comparison_detail", args=["fresh"])).content.decode()
    assert "No runs yet" in body and "run_evaluation fresh" in body


@pytest.mark.parametrize("params, status, message", [
    ({"run_ids": "abc"}, 400, "Not a valid run id"),
    ({"run_ids": str(uuid.UUID(int=1))}, 404, "No run with id"),
    ({"run_ids": ",".join(str(uuid.uuid4()) for _ in range(11))}, 400, "At most 10 runs"),
    ({"after": "zzz"}, 400, "is not a datapoint id"),
    ({"filter": "worse"}, 400, "Unknown filter"),
    ({"sort": "random"}, 400, "Unknown sort"),
    ({"metric": "nope", "filter": "regressed"}, 400, "Unknown metric"),
])
def test_bad_input_gets_a_clear_message(client_logged_in, setup, params, status, message):
    query = {"run_ids": setup["run_ids"], **params}
    response = client_logged_in.get(setup["url"], query)
    assert response.status_code == status
    assert message in response.content.decode()
    fragment = client_logged_in.get(setup["url"], query, **HTMX, HTTP_HX_TARGET="comparison")
    assert fragment.status_code == status and 'class="error-box" role="alert"' in fragment.content.decode()
    assert message in fragment.content.decode() and "<html" not in fragment.content.decode()
    assert fragment["HX-Retarget"] == "#selector-error" and fragment["HX-Reswap"] == "innerHTML"
    assert fragment["HX-Push-Url"] == "false"


def test_runs_of_another_evaluation_and_unknown_evaluations(client_logged_in, setup):
    other = RunFactory(evaluation=EvaluationFactory(name="other"))
    response = client_logged_in.get(setup["url"], {"run_ids": f"{setup['base'].id},{other.id}"})
    assert response.status_code == 400 and f"{other.id} belongs to" in response.content.decode()
    assert client_logged_in.get(reverse("comparison_detail", args=["missing"])).status_code == 404
    assert client_logged_in.get(reverse("comparison_stats", args=["missing"])).status_code == 404
    assert client_logged_in.get(reverse("run_search", args=["missing"])).status_code == 404
    assert client_logged_in.get(reverse("run_detail", args=["not-a-uuid"])).status_code == 400
    assert client_logged_in.get(reverse("run_detail", args=[uuid.uuid4()])).status_code == 404
    assert client_logged_in.get(reverse("datapoint_detail", args=["qa", "nope"])).status_code == 400
    assert client_logged_in.get(reverse("datapoint_detail", args=["qa", uuid.uuid4()])).status_code == 404


def test_outputs_inputs_and_errors_are_escaped_everywhere(client_logged_in, setup):
    run = setup["new"]
    datapoint = DatapointFactory(evaluation=setup["evaluation"], created=at(150), name=XSS,
                                 input={"messages": [{"role": "user", "content": XSS}]}, reference_output=XSS)
    inference = InferenceFactory(run=run, datapoint=datapoint, output=XSS, error=XSS)
    FeedbackFactory(inference=inference, metric="correct", value=1, reason=XSS)
    pages = [
        client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"]}),
        client_logged_in.get(reverse("datapoint_detail", args=["qa", datapoint.id]), {"run_ids": setup["run_ids"]}),
        client_logged_in.get(reverse("run_detail", args=[run.id])),
    ]
    for response in pages:
        body = response.content.decode()
        assert response.status_code == 200
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert" in body


def test_stats_fragment(client_logged_in, setup):
    url = reverse("comparison_stats", args=["qa"])
    fragment = client_logged_in.get(url, {"run_ids": setup["run_ids"]}, **HTMX)
    body = fragment.content.decode()
    assert fragment.status_code == 200 and body.lstrip().startswith('<section id="results-stats"')
    assert "50.0%" in body  # candidate-v2's correct mean (every other datapoint)
    assert "▼ significant" in body and "<svg" in body
    full = client_logged_in.get(url, {"run_ids": setup["run_ids"]})
    assert "<html" in full.content.decode()


def test_run_search_fragment_and_page(client_logged_in, setup):
    url = reverse("run_search", args=["qa"])
    fragment = client_logged_in.get(url, {"q": "candidate", "run_ids": str(setup["base"].id)}, **HTMX).content.decode()
    assert "<html" not in fragment and 'role="option"' in fragment
    assert "candidate-v2" in fragment and "baseline-v1" not in fragment
    assert f"run_ids={setup['base'].id}%2C{setup['new'].id}" in fragment  # choosing it adds it
    other = RunFactory(evaluation=EvaluationFactory(name="elsewhere"))
    pasted = client_logged_in.get(url, {"q": str(other.id)}, **HTMX).content.decode()
    assert "belongs to another evaluation" in pasted and "elsewhere" in pasted
    none = client_logged_in.get(url, {"q": "zzzz-no-match"}, **HTMX).content.decode()
    assert "No run of qa matches" in none
    assert "<html" in client_logged_in.get(url).content.decode()


def test_datapoint_page_shows_outputs_and_diffs(client_logged_in, setup):
    datapoint = setup["datapoints"][1]
    url = reverse("datapoint_detail", args=["qa", datapoint.id])
    body = client_logged_in.get(url, {"run_ids": setup["run_ids"]}).content.decode()
    assert "answer 1 from baseline-v1" in body and "answer 1 from candidate-v2" in body
    assert "<del>baseline-v1</del><ins>candidate-v2</ins>" in body  # diff against the baseline's output
    assert "Diff against the reference" in body


def test_correcting_a_metric_records_human_feedback_that_wins(client_reviewer, reviewer, setup):
    client_logged_in, user = client_reviewer, reviewer
    datapoint = setup["datapoints"][0]
    inference = datapoint.inferences.get(run=setup["new"])
    stats_url = reverse("comparison_stats", args=["qa"])
    client_logged_in.get(stats_url, {"run_ids": setup["run_ids"]}, **HTMX)  # caches the paired Δ sums

    def pair():
        kept = PairedSummary.objects.get(baseline=setup["base"], run=setup["new"], metric="correct")
        return kept.n, round(kept.total, 9), kept.higher, kept.lower, kept.same

    before = pair()
    url = reverse("feedback_create", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    response = client_logged_in.post(url, {"inference_id": inference.id, "metric": "correct", "value": "1",
                                           "reason": "judge was wrong"}, **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith(f'<table class="data run-scores" id="scores-{inference.id}"')
    assert "saved" in body and "judge was wrong" in body
    latest = Feedback.objects.filter(inference=inference, metric="correct").winning().get()
    assert (latest.value, latest.source, latest.created_by) == (1.0, "human", user)
    stats = client_logged_in.get(stats_url, {"run_ids": setup["run_ids"]}, **HTMX)
    assert "50.8%" in stats.content.decode()  # 66 of 130 now
    # The cached paired sums moved with the correction, to what a fresh pairing gives.
    after = pair()
    assert after != before and after[0] == before[0]
    PairedSummary.objects.all().delete()
    client_logged_in.get(stats_url, {"run_ids": setup["run_ids"]}, **HTMX)
    assert pair() == after


def test_correction_errors_are_clear(client_reviewer, setup):
    client_logged_in = client_reviewer
    datapoint = setup["datapoints"][0]
    inference = datapoint.inferences.get(run=setup["new"])
    url = reverse("feedback_create", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    bad_value = client_logged_in.post(url, {"inference_id": inference.id, "metric": "correct", "value": "0.5"})
    assert bad_value.status_code == 400 and "must be 0 or 1" in bad_value.content.decode()
    bad_metric = client_logged_in.post(url, {"inference_id": inference.id, "metric": "tone", "value": "1"})
    assert bad_metric.status_code == 400 and "not an evaluator" in bad_metric.content.decode()
    foreign = InferenceFactory()
    wrong = client_logged_in.post(url, {"inference_id": foreign.id, "metric": "correct", "value": "1"})
    assert wrong.status_code == 400 and "not one of this datapoint" in wrong.content.decode()
    missing = client_logged_in.post(url, {"metric": "correct"})
    assert missing.status_code == 400 and "not saved" in missing.content.decode()
    assert client_logged_in.get(url).status_code == 405
    plain = client_logged_in.post(url, {"inference_id": inference.id, "metric": "similarity", "value": "0.25"})
    assert plain.status_code == 302  # without htmx: back to the datapoint page


def test_run_page(client_logged_in, setup):
    body = client_logged_in.get(reverse("run_detail", args=[setup["new"].id])).content.decode()
    assert "candidate-v2" in body and "Latency p50 / p95 / p99" in body and "120 / 120 / 120 ms" in body
    assert f"?run_ids={setup['base'].id},{setup['new'].id}" in body  # compare with the previous run


def test_rows_show_values_pass_fail_arrows_and_human_corrections(client_logged_in, setup):
    newest = setup["datapoints"][-1]  # dp-129: odd, so candidate-v2 got it right too
    inference = newest.inferences.get(run=setup["new"])
    Feedback.objects.record(inference, "similarity", 0.2, source="human", reason='too "vague" <b>')
    body = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"]}, **HTMX,
                                HTTP_HX_TARGET="load-more").content.decode()
    group = body[body.index(f'id="row-{newest.id}"'):]
    group = group[:group.index("</tbody>")]
    base_row, new_row = group.split('<tr class="cell-ok">')[1:]
    assert '<span class="value pass" title="">true</span>' in base_row  # boolean, passes
    assert '<span class="value pass" title="">0.800</span>' in base_row  # 0.8 ≥ cutoff 0.5
    assert "arrow" not in base_row  # the baseline has nothing to be compared with
    assert ('<span class="value fail" title="too &quot;vague&quot; &lt;b&gt;">0.200</span>'
            '<span class="human" title="Corrected by a human: too &quot;vague&quot; &lt;b&gt;">✎</span>'
            ' <span class="arrow down" title="worse than the baseline">▼</span>') in new_row
    assert "answer 129 from candidate-v2" in new_row and "120 ms" in new_row


# ---------------------------------------------------------------------------------------------
# Errors shown where the user acted: the fragment, its status, and where htmx puts it


def assert_placed(response, status, slot, message):
    """An htmx error fragment: its status, swapped into `slot`, never pushed into the history."""
    body = response.content.decode()
    assert response.status_code == status, body
    assert body.strip().startswith('<div class="error-box" role="alert">') and message in body and "<html" not in body
    assert (response["HX-Retarget"], response["HX-Reswap"], response["HX-Push-Url"]) == (slot, "innerHTML", "false")


def test_htmx_config_swaps_refused_fragments_and_keeps_history_restores_whole(client_logged_in, setup):
    body = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"]}).content.decode()
    config = json.loads(unescape(re.search(r'<meta name="htmx-config" content=\'([^\']*)\'', body).group(1)))
    assert config["historyRestoreAsHxRequest"] is False and config["allowEval"] is False
    handling = {rule["code"]: rule for rule in config["responseHandling"]}
    assert handling["4.."] == {"code": "4..", "swap": True, "error": True}
    assert handling["..."]["swap"] is False  # 5xx: errors.js shows a message instead of a server error page
    assert "comparisons/errors.js" in body and "<script>" not in body  # no inline script


def test_the_comparison_page_has_an_error_slot_for_every_control(client_logged_in, setup):
    body = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"]}).content.decode()
    for slot in ("page-error", "selector-error", "filter-error", "load-more-error", "results-stats"):
        assert f'id="{slot}"' in body, slot
        if slot != "page-error":
            assert f'data-error-slot="#{slot}"' in body, slot
    assert '<form class="filters" id="filters"' in body and "data-reset-on-error" in body


def test_a_refused_filter_is_shown_above_the_rows(client_logged_in, setup):
    params = {"run_ids": setup["run_ids"], "filter": "worse"}
    response = client_logged_in.get(setup["url"], params, **HTMX, HTTP_HX_TARGET="comparison",
                                    HTTP_HX_TRIGGER="filters")
    assert_placed(response, 400, "#filter-error", "Unknown filter &#x27;worse&#x27;")
    one_run = {"run_ids": str(setup["base"].id), "filter": "regressed"}
    response = client_logged_in.get(setup["url"], one_run, **HTMX, HTTP_HX_TARGET="comparison",
                                    HTTP_HX_TRIGGER="filters")
    assert_placed(response, 400, "#filter-error", "needs at least two runs")


def test_refused_run_choices_next_page_and_search_are_shown_in_place(client_logged_in, setup):
    unknown = str(uuid.UUID(int=7))
    response = client_logged_in.get(setup["url"], {"run_ids": f"{setup['base'].id},{unknown}"}, **HTMX,
                                    HTTP_HX_TARGET="comparison")
    assert_placed(response, 404, "#selector-error", f"No run with id {unknown}")
    response = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"], "after": "zzz"}, **HTMX,
                                    HTTP_HX_TARGET="load-more")
    assert_placed(response, 400, "#load-more-error", "is not a datapoint id")
    response = client_logged_in.get(reverse("run_search", args=["qa"]), {"run_ids": "abc", "q": "x"}, **HTMX,
                                    HTTP_HX_TARGET="run-options")
    assert_placed(response, 400, "#selector-error", "Not a valid run id")


def test_failing_statistics_replace_the_spinner(client_logged_in, setup):
    response = client_logged_in.get(reverse("comparison_stats", args=["qa"]), {"run_ids": "abc"}, **HTMX,
                                    HTTP_HX_TARGET="results-stats")
    assert_placed(response, 400, "#results-stats", "Not a valid run id")


def test_errors_of_full_pages_and_history_restores_are_whole_pages(client_logged_in, setup):
    full = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"], "filter": "worse"})
    assert full.status_code == 400 and "<html" in full.content.decode() and "HX-Retarget" not in full
    restore = client_logged_in.get(setup["url"], {"run_ids": setup["run_ids"], "filter": "worse"}, **HTMX,
                                   HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert restore.status_code == 400 and "<html" in restore.content.decode() and "HX-Retarget" not in restore


def metric_form_ids(body, inference):
    """The ids of one inference's correction forms, in metric order."""
    return re.findall(rf'id="(metric-{inference.id}-\d+)-correct"', body)


def test_a_refused_correction_is_shown_next_to_its_metric(client_reviewer, setup):
    datapoint = setup["datapoints"][0]
    inference = datapoint.inferences.get(run=setup["new"])
    page_url = reverse("datapoint_detail", args=["qa", datapoint.id])
    body = client_reviewer.get(page_url, {"run_ids": setup["run_ids"]}).content.decode()
    correct_row, similarity_row = metric_form_ids(body, inference)
    assert f'id="{correct_row}-error"' in body and f'data-error-slot="#{correct_row}-error"' in body
    url = reverse("feedback_create", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct", "value": "2"}, **HTMX,
                                    HTTP_HX_TARGET=f"scores-{inference.id}", HTTP_HX_TRIGGER=f"{correct_row}-correct")
    assert_placed(response, 400, f"#{correct_row}-error", "must be 0 or 1")
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "similarity", "value": "x"}, **HTMX,
                                    HTTP_HX_TRIGGER=f"{similarity_row}-correct")
    assert_placed(response, 400, f"#{similarity_row}-error", "The correction was not saved (value: Enter a number.)")
    # A request from no known form (or a forged trigger) still shows its message, at the top of the page.
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct", "value": "2"}, **HTMX,
                                    HTTP_HX_TRIGGER='x"]; body')
    assert_placed(response, 400, "#page-error", "must be 0 or 1")
    assert not Feedback.objects.filter(inference=inference, source="human").exists()


# ---------------------------------------------------------------------------------------------
# Corrections that can be governed: permission, revert, history


def test_only_reviewers_may_correct(client_logged_in, user, setup):
    datapoint = setup["datapoints"][0]
    inference = datapoint.inferences.get(run=setup["new"])
    page_url = reverse("datapoint_detail", args=["qa", datapoint.id])
    body = client_logged_in.get(page_url, {"run_ids": setup["run_ids"]}).content.decode()
    assert "correct-form" not in body and "<th>Correct it</th>" not in body and "Values are read-only for you" in body
    assert 'class="value pass"' in body  # the values themselves are shown
    data = {"inference_id": inference.id, "metric": "correct", "value": "0"}
    url = reverse("feedback_create", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    plain = client_logged_in.post(url, data)
    assert plain.status_code == 403 and "Only reviewers can correct values" in plain.content.decode()
    fragment = client_logged_in.post(url, data, **HTMX, HTTP_HX_TRIGGER=f"metric-{inference.id}-1-correct")
    assert_placed(fragment, 403, f"#metric-{inference.id}-1-error", "“Reviewers” group")
    revert_url = reverse("feedback_revert", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    assert client_logged_in.post(revert_url, data).status_code == 403
    assert not Feedback.objects.filter(inference=inference, source="human").exists()

    user.groups.add(reviewers_group())
    body = client_logged_in.get(page_url, {"run_ids": setup["run_ids"]}).content.decode()
    assert body.count('class="correct-form"') == 4 and "<th>Correct it</th>" in body  # 2 runs × 2 metrics
    assert "Values are read-only for you" not in body
    assert client_logged_in.post(url, data).status_code == 302


def correct(client, setup, datapoint, inference, metric, value, reason=""):
    url = reverse("feedback_create", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    response = client.post(url, {"inference_id": inference.id, "metric": metric, "value": value, "reason": reason},
                           **HTMX)
    assert response.status_code == 200, response.content.decode()
    return Feedback.objects.filter(inference=inference, metric=metric).winning().get()


def test_reverting_a_correction_lets_the_evaluator_win_again_and_keeps_the_history(client_reviewer, reviewer, setup):
    datapoint = setup["datapoints"][0]  # candidate-v2 scored it false
    inference = datapoint.inferences.get(run=setup["new"])
    stats_url = reverse("comparison_stats", args=["qa"])
    client_reviewer.get(stats_url, {"run_ids": setup["run_ids"]}, **HTMX)  # the paired sums are kept from here
    correction = correct(client_reviewer, setup, datapoint, inference, "correct", "1", "judge was wrong")
    assert "50.8%" in client_reviewer.get(stats_url, {"run_ids": setup["run_ids"]}, **HTMX).content.decode()
    second_page = {"run_ids": setup["run_ids"], "after": str(setup["datapoints"][30].id)}

    def row_of_datapoint():
        rows = client_reviewer.get(setup["url"], second_page, **HTMX, HTTP_HX_TARGET="load-more").content.decode()
        return rows.split(f'id="row-{datapoint.id}"')[1].split("</tbody>")[0]

    assert "Corrected by a human: judge was wrong" in row_of_datapoint()

    url = reverse("feedback_revert", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct"}, **HTMX,
                                    HTTP_HX_TRIGGER=f"metric-{inference.id}-1-revert")
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith(f'<table class="data run-scores" id="scores-{inference.id}"')
    assert '<strong class="delta better" role="status">reverted</strong>' in body
    assert "reverted by reviewer" in body and "revert-form" not in body  # nothing left to revert

    values = list(Feedback.objects.filter(inference=inference, metric="correct").order_by("-id"))
    revert, human, original = values
    assert (revert.value, revert.source, revert.created_by, revert.tags) == (
        0.0, "evaluator", reviewer, {"reverts": str(correction.id)})
    assert (human.id, human.source, original.source) == (correction.id, "human", "evaluator")
    # The evaluator's value counts again everywhere: rows and statistics.
    assert "50.0%" in client_reviewer.get(stats_url, {"run_ids": setup["run_ids"]}, **HTMX).content.decode()
    group = row_of_datapoint()
    assert "answer 0 from candidate-v2" in group and "Corrected by a human" not in group

    again = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct"}, **HTMX,
                                 HTTP_HX_TRIGGER=f"metric-{inference.id}-1-revert")
    assert_placed(again, 400, f"#metric-{inference.id}-1-error", "Nothing to revert")
    assert client_reviewer.get(url).status_code == 405


def test_a_revert_needs_an_evaluator_value_to_go_back_to(client_reviewer, setup):
    datapoint = DatapointFactory(evaluation=setup["evaluation"], created=at(150))
    inference = InferenceFactory(run=setup["new"], datapoint=datapoint)
    Feedback.objects.record(inference, "correct", 1, source="human", reason="no judge ran")
    url = reverse("feedback_revert", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct"}, **HTMX,
                                    HTTP_HX_TRIGGER=f"metric-{inference.id}-1-revert")
    assert_placed(response, 400, f"#metric-{inference.id}-1-error", "no evaluator value to go back to")
    assert Feedback.objects.filter(inference=inference).count() == 1


def test_the_history_says_who_corrected_what_and_when(client_reviewer, setup):
    datapoint = setup["datapoints"][0]
    inference = datapoint.inferences.get(run=setup["new"])
    correct(client_reviewer, setup, datapoint, inference, "correct", "1", 'missed "step 2" <b>')
    url = reverse("feedback_revert", args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
    client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct"}, **HTMX)
    correction = correct(client_reviewer, setup, datapoint, inference, "correct", "1", "second look")
    body = client_reviewer.get(reverse("datapoint_detail", args=["qa", datapoint.id]),
                               {"run_ids": setup["run_ids"]}).content.decode()
    scores = body.split(f'id="scores-{inference.id}"')[1].split("</table>")[0]
    row = scores.split('data-metric="correct"')[1].split("</tr>")[0]
    history = row.split('<details class="history">')[1].split("</details>")[0]
    assert "<summary>4 values</summary>" in history
    entries = re.findall(r"<li.*?</li>", history, flags=re.S)
    assert len(entries) == 4 and 'class="counts"' in entries[0]
    assert "corrected" in entries[0] and "by <strong>reviewer</strong>" in entries[0] and "second look" in entries[0]
    assert "reverted to the evaluator's value" in entries[1] and "by <strong>reviewer</strong>" in entries[1]
    assert "corrected" in entries[2] and "missed &quot;step 2&quot; &lt;b&gt;" in entries[2]
    assert "evaluator" in entries[3] and "<strong>" not in entries[3]
    assert f"{correction.created_at:%Y-%m-%d %H:%M} UTC" in entries[0]
    assert "human · reviewer" in row  # the value that counts says who set it
    assert "revert-form" in row  # a human value counts again: it can be reverted


def test_corrections_and_reverts_need_the_csrf_token(reviewer, setup):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    datapoint = setup["datapoints"][0]
    inference = datapoint.inferences.get(run=setup["new"])
    Feedback.objects.record(inference, "correct", 1, source="human")
    for name in ("feedback_create", "feedback_revert"):
        url = reverse(name, args=["qa", datapoint.id]) + f"?run_ids={setup['run_ids']}"
        response = client.post(url, {"inference_id": inference.id, "metric": "correct", "value": "0"})
        assert response.status_code == 403, name
    assert Feedback.objects.filter(inference=inference, metric="correct").count() == 2


@pytest.fixture
def small(db):
    """Evaluation "qa", one run with one scored inference: enough for the pages that bad input reaches."""
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    run = RunFactory(evaluation=evaluation, variant_name="gpt-small")
    inference = InferenceFactory(run=run)
    FeedbackFactory(inference=inference, metric="correct", value=1.0)
    return {"evaluation": evaluation, "run": run, "inference": inference}


def test_a_run_config_and_tags_with_keys_named_like_dict_methods_render(client_logged_in, small):
    run = small["run"]
    run.config = {"items": 1, "keys": 2, "values": 3, "model": "gpt", "params": {"t": [0.5, None]}}
    run.tags = {"items": "x", "get": "y"}
    run.save()
    response = client_logged_in.get(reverse("run_detail", args=[run.id]))
    body = response.content.decode()
    assert response.status_code == 200
    for key, shown in (("items", "1"), ("keys", "2"), ("values", "3"), ("model", "gpt"),
                       ("params", "{&quot;t&quot;: [0.5, null]}")):
        assert f'<dt>{key}</dt><dd class="mono">{shown}</dd>' in body
    assert '<span class="badge plain">items: x</span>' in body and '<span class="badge plain">get: y</span>' in body


@pytest.mark.parametrize("config, shown", [([1, "two"], '[1, &quot;two&quot;]'), ("just text", "&quot;just text&quot;"),
                                           ({}, "No config recorded.")])
def test_a_run_config_that_is_not_an_object_renders(client_logged_in, small, config, shown):
    run = small["run"]
    run.config = config
    run.save()
    response = client_logged_in.get(reverse("run_detail", args=[run.id]))
    assert response.status_code == 200 and shown in response.content.decode()


def test_datapoint_tags_named_like_dict_methods_render(client_logged_in, small):
    datapoint = small["inference"].datapoint
    datapoint.tags = {"items": "x", "values": ["a"]}
    datapoint.save()
    response = client_logged_in.get(reverse("datapoint_detail", args=["qa", datapoint.id]))
    body = response.content.decode()
    assert response.status_code == 200
    assert '<span class="badge plain">items: x</span>' in body
    assert '<span class="badge plain">values: [&quot;a&quot;]</span>' in body


def test_an_evaluation_named_before_validation_renders_without_a_broken_link(client_logged_in, small):
    from comparisons.models import Evaluation

    legacy = 'team/qa\r\n"x"'
    Evaluation.objects.filter(pk=small["evaluation"].pk).update(name=legacy)  # as raw SQL would
    spaced = EvaluationFactory(name="placeholder")
    Evaluation.objects.filter(pk=spaced.pk).update(name="with space")  # odd but fits in a URL
    response = client_logged_in.get(reverse("evaluation_list"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "<strong>team/qa\r\n&quot;x&quot;</strong>" in body
    assert "/evaluations/team" not in body
    assert reverse("admin:comparisons_evaluation_change", args=[small["evaluation"].pk]) in body
    assert 'href="/evaluations/with%20space/"' in body
    assert client_logged_in.get("/evaluations/with%20space/").status_code == 200
    run_page = client_logged_in.get(reverse("run_detail", args=[small["run"].id]))
    assert run_page.status_code == 200 and "Open in comparison" not in run_page.content.decode()
    other = RunFactory(evaluation=EvaluationFactory(name="other"))  # a pasted id of the legacy run, elsewhere
    search = client_logged_in.get(reverse("run_search", args=["other"]), {"q": str(small["run"].id)})
    assert other and search.status_code == 200 and "belongs to another evaluation" in search.content.decode()


def test_the_download_header_carries_no_quote_or_line_break(client_logged_in, small):
    from comparisons.models import Evaluation

    Evaluation.objects.filter(pk=small["evaluation"].pk).update(name='qa"x; é')  # from before validation
    response = client_logged_in.get("/evaluations/qa%22x%3B%20%C3%A9/export/", {"run_ids": small["run"].id})
    assert response.status_code == 200
    assert response["Content-Disposition"] == \
        "attachment; filename=\"qa_x_-comparison.csv\"; filename*=UTF-8''qa%22x%3B%20%C3%A9-comparison.csv"


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1" * 400, "0x1"])
def test_a_correction_refuses_values_that_are_not_finite_numbers(client_reviewer, small, value):
    inference = small["inference"]
    url = reverse("feedback_create", args=["qa", inference.datapoint_id]) + f"?run_ids={small['run'].id}"
    before = Feedback.objects.count()
    response = client_reviewer.post(url, {"inference_id": inference.id, "metric": "correct", "value": value})
    assert response.status_code == 400
    assert "The correction was not saved (value: Enter a number.)" in response.content.decode()
    assert Feedback.objects.count() == before


@pytest.mark.parametrize("method, name, args", [
    ("post", "evaluation_list", []), ("put", "comparison_detail", ["qa"]), ("delete", "comparison_export", ["qa"]),
    ("patch", "run_search", ["qa"]), ("put", "feedback_create", ["qa", uuid.UUID(int=1)]),
])
def test_wrong_methods_are_405(client_logged_in, small, method, name, args):
    assert getattr(client_logged_in, method)(reverse(name, args=args)).status_code == 405


@pytest.mark.parametrize("url", [
    "/runs/ffffffff-ffff-7fff-bfff-ffffffffffff/", "/runs/00000000-0000-0000-0000-000000000000/",
    "/evaluations/qa/datapoints/ffffffff-ffff-ffff-ffff-ffffffffffff/", "/evaluations/nope/",
    "/evaluations/%F0%9F%99%82/",
    "/evaluations/qa/?run_ids=ffffffff-ffff-7fff-bfff-ffffffffffff", "/runs/1e400/",
])
def test_unknown_and_odd_ids_are_4xx(client_logged_in, small, url):
    assert client_logged_in.get(url).status_code in (400, 404)


def test_run_page_shows_task_and_judge_cost_apart(client_logged_in, small):
    inference = small["inference"]
    inference.input_tokens, inference.output_tokens, inference.cost = 100, 40, "0.01250000"
    inference.save()
    EvaluatorFactory(evaluation=small["evaluation"], name="judge", kind="llm_judge", config={"model": "gpt-4o-mini"})
    FeedbackFactory(inference=inference, metric="judge", tags={
        "judge_model": "gpt-4o-mini", "judge_input_tokens": 300, "judge_output_tokens": 20, "judge_cost": 0.5})
    FeedbackFactory(inference=inference, metric="judge", tags={  # a re-judgement: paid for too
        "judge_model": "gpt-4o-mini", "judge_input_tokens": 200, "judge_output_tokens": 10, "judge_cost": 0.25})
    body = client_logged_in.get(reverse("run_detail", args=[small["run"].id])).content.decode()
    assert "<dt>Task tokens in / out</dt><dd>100 / 40</dd>" in body
    assert "<dt>Task cost</dt><dd>$0.0125</dd>" in body
    assert "<dt>Judge tokens in / out</dt><dd>500 / 30</dd>" in body
    assert "<dt>Judge cost</dt><dd>$0.7500</dd>" in body


def test_run_page_without_judges_or_prices_shows_no_cost_rather_than_zero(client_logged_in, small):
    body = client_logged_in.get(reverse("run_detail", args=[small["run"].id])).content.decode()
    assert "<dt>Judge tokens in / out</dt><dd>—</dd>" in body and "<dt>Judge cost</dt><dd>—</dd>" in body
    EvaluatorFactory(evaluation=small["evaluation"], name="judge", kind="llm_judge", config={"model": "unpriced"})
    FeedbackFactory(inference=small["inference"], metric="judge", tags={
        "judge_model": "unpriced", "judge_input_tokens": 300, "judge_output_tokens": 20, "judge_cost": None})
    body = client_logged_in.get(reverse("run_detail", args=[small["run"].id])).content.decode()
    assert "<dt>Task cost</dt><dd>—</dd>" in body
    assert "<dt>Judge tokens in / out</dt><dd>300 / 20</dd>" in body
    assert "<dt>Judge cost</dt><dd>—</dd>" in body


def test_run_page_sums_only_numeric_judge_tags(client_logged_in, small):
    EvaluatorFactory(evaluation=small["evaluation"], name="judge", kind="llm_judge", config={"model": "m"})
    FeedbackFactory(inference=small["inference"], metric="judge", tags={
        "judge_input_tokens": 7, "judge_output_tokens": 3, "judge_cost": 1.5e-3})
    FeedbackFactory(inference=small["inference"], metric="judge", tags={  # as edited by hand in the admin
        "judge_input_tokens": "many", "judge_output_tokens": -4, "judge_cost": "lots"})
    response = client_logged_in.get(reverse("run_detail", args=[small["run"].id]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "<dt>Judge tokens in / out</dt><dd>7 / 3</dd>" in body and "<dt>Judge cost</dt><dd>$0.0015</dd>" in body
