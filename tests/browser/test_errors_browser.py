"""Errors shown where the user acted, and reverting a correction, in a real Chromium."""

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from comparisons.models import Feedback
from tests.browser.conftest import comparison_data


@pytest.fixture
def data(transactional_db):
    return comparison_data(["alpha-baseline", "bravo-candidate"], datapoints=110, scored_runs=2, similarity=True)


def comparison_url(live_server, data, **params):
    alpha, bravo = data["runs"]
    query = "&".join(f"{k}={v}" for k, v in {"run_ids": f"{alpha.id},{bravo.id}", **params}.items())
    return f"{live_server.url}/evaluations/qa/?{query}"


def datapoint_url(live_server, data, datapoint):
    alpha, bravo = data["runs"]
    return f"{live_server.url}/evaluations/qa/datapoints/{datapoint.id}/?run_ids={alpha.id},{bravo.id}"


def test_a_refused_correction_shows_its_message_next_to_the_metric(page, live_server, data):
    datapoint = data["datapoints"][0]
    inference = datapoint.inferences.get(run=data["runs"][1])
    page.goto(datapoint_url(live_server, data, datapoint))
    row = page.locator(f"#scores-{inference.id} tr[data-metric=correct]")
    expect(row.locator(".value").first).to_have_text("true")
    # What a tampered form (or a stale one) sends: 2 for a boolean metric.
    row.locator("select[name=value]").evaluate("select => { select.options[1].value = '2'; }")
    row.locator("select[name=value]").select_option(index=1)
    row.get_by_role("button", name="Save").click()
    alert = row.get_by_role("alert")
    expect(alert).to_contain_text("'correct' is boolean: the value must be 0 or 1, not 2.")
    expect(row.locator(".value").first).to_have_text("true")  # the value that counts has not changed
    # Only that metric's row shows it; the other rows and the page top stay quiet.
    expect(page.locator("[role=alert]")).to_have_count(1)
    assert not Feedback.objects.filter(inference=inference, source="human").exists()
    # Asking again clears the message, and a good value is saved.
    row.locator("select[name=value]").select_option("1")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(f"#scores-{inference.id} [role=status]")).to_have_text("saved")
    expect(page.locator("[role=alert]")).to_have_count(0)


def test_a_refused_filter_shows_its_message_above_the_rows_and_is_not_applied(page, live_server, data):
    start = comparison_url(live_server, data)
    page.goto(start)
    expect(page.locator("tbody.group")).to_have_count(100)
    select = page.locator("#filters select[name=filter]")
    select.evaluate("select => { select.querySelector('option[value=regressed]').value = 'worse'; }")
    select.select_option(label="Regressed vs baseline")
    alert = page.locator("#filter-error [role=alert]")
    expect(alert).to_contain_text("Unknown filter 'worse'")
    # Above the rows, which are still the applied ones; the URL and the control show what is applied.
    assert page.evaluate("document.querySelector('#filter-error').nextElementSibling.firstElementChild.id") == "results"
    expect(page.locator("tbody.group")).to_have_count(100)
    assert page.url == start
    expect(select).to_have_value("")
    assert page.locator("#results-stats [role=alert]").count() == 0


def test_a_filter_the_selection_cannot_apply_says_why(page, live_server, data):
    alpha, _ = data["runs"]
    start = f"{live_server.url}/evaluations/qa/?run_ids={alpha.id}"
    page.goto(start)
    page.locator("#filters select[name=filter]").select_option("regressed")
    expect(page.locator("#filter-error [role=alert]")).to_contain_text("needs at least two runs")
    assert page.url == start
    expect(page.locator("#filters select[name=filter]")).to_have_value("")
    # A filter that applies: the message goes and the URL follows.
    page.locator("#filters select[name=filter]").select_option("missing")
    page.wait_for_url("**filter=missing**")
    expect(page.locator("#filter-error [role=alert]")).to_have_count(0)
    assert parse_qs(urlparse(page.url).query)["run_ids"] == [str(alpha.id)]


def test_failing_statistics_show_an_error_instead_of_a_spinner(page, live_server, data):
    page.route("**/evaluations/qa/stats/**", lambda route: route.fulfill(status=500, body="<h1>Server Error</h1>"))
    page.goto(comparison_url(live_server, data))
    alert = page.locator("#results-stats [role=alert]")
    expect(alert).to_contain_text("Loading the statistics failed: the server answered HTTP 500.")
    expect(page.locator("#results-stats .spinner")).to_have_count(0)
    expect(page.locator("text=Server Error")).to_have_count(0)  # the server's page is not swapped in


def test_a_next_page_that_cannot_load_says_so_where_the_rows_end(page, live_server, data):
    page.goto(comparison_url(live_server, data))
    expect(page.locator("tbody.group")).to_have_count(100)
    page.route("**/evaluations/qa/?*after=*", lambda route: route.abort("connectionrefused"))
    page.locator("#load-more").scroll_into_view_if_needed()
    expect(page.locator("#load-more-error [role=alert]")).to_contain_text(
        "Loading the next page failed: could not reach the server.")
    expect(page.locator("#load-more .next-page")).to_be_visible()  # the plain link still works


def test_revert_a_correction(page, live_server, data):
    datapoint = data["datapoints"][1]
    inference = datapoint.inferences.get(run=data["runs"][1])  # bravo scored it false
    page.goto(datapoint_url(live_server, data, datapoint))
    scores = f"#scores-{inference.id}"
    row = page.locator(f"{scores} tr[data-metric=correct]")
    expect(row.locator(".value").first).to_have_text("false")
    row.locator("select[name=value]").select_option("1")
    row.locator("input[name=reason]").fill("the judge missed it")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(f"{scores} [role=status]")).to_have_text("saved")
    row = page.locator(f"{scores} tr[data-metric=correct]")
    expect(row.locator(".value").first).to_have_text("true")
    expect(row).to_contain_text("human · browser-user")

    row.get_by_role("button", name="Revert to the evaluator's value").click()
    expect(page.locator(f"{scores} [role=status]")).to_have_text("reverted")
    row = page.locator(f"{scores} tr[data-metric=correct]")
    expect(row.locator(".value").first).to_have_text("false")
    expect(row).to_contain_text("reverted by browser-user")
    expect(row.get_by_role("button", name="Revert to the evaluator's value")).to_have_count(0)
    row.locator("details.history summary").click()
    entries = row.locator(".history-list li")
    expect(entries).to_have_count(3)
    expect(entries.nth(0)).to_contain_text("reverted to the evaluator's value by browser-user")
    expect(entries.nth(1)).to_contain_text("corrected by browser-user")
    expect(entries.nth(1)).to_contain_text("the judge missed it")
    expect(entries.nth(2)).to_contain_text("evaluator")
    winning = Feedback.objects.filter(inference=inference, metric="correct").winning().get()
    assert (winning.value, winning.source, winning.tags["reverts"] != "") == (0.0, "evaluator", True)


def test_a_refusal_no_view_placed_is_still_shown_next_to_the_metric(page, live_server, data):
    # E.g. a CSRF failure page or a proxy's error page: not a fragment made for the page.
    datapoint = data["datapoints"][0]
    inference = datapoint.inferences.get(run=data["runs"][1])
    page.goto(datapoint_url(live_server, data, datapoint))
    page.route(re.compile(r"/feedback/\?"), lambda route: route.fulfill(status=403, body="<h1>Forbidden (CSRF)</h1>"))
    row = page.locator(f"#scores-{inference.id} tr[data-metric=similarity]")
    row.locator("input[name=value]").fill("0.9")
    row.get_by_role("button", name="Save").click()
    expect(row.get_by_role("alert")).to_contain_text(
        "Saving similarity was refused (HTTP 403). Your session may have changed: reload the page and try again.")
    expect(page.locator("text=Forbidden (CSRF)")).to_have_count(0)
    expect(page.locator(f"#scores-{inference.id} tr[data-metric]")).to_have_count(2)  # the table is intact
