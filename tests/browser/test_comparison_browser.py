"""What a person does on the comparison page, in a real Chromium."""

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from comparisons.models import Feedback
from tests.browser.conftest import comparison_data


@pytest.fixture
def data(transactional_db):
    return comparison_data(["alpha-baseline", "bravo-candidate", "charlie-experiment"], datapoints=130,
                           scored_runs=2)


def run_ids_in(url):
    return parse_qs(urlparse(url).query).get("run_ids", [""])[0].split(",")


def chips(page):
    return page.locator("#run-chips .chip")


def test_type_in_the_selector_and_pick_a_run(page, live_server, data):
    alpha, bravo, _ = data["runs"]
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id}")
    expect(chips(page)).to_have_count(1)
    page.fill("#run-search", "bravo")
    option = page.locator("#run-options [role=option]", has_text="bravo-candidate")
    expect(option).to_have_count(1)
    expect(page.locator("#run-options [role=option]")).to_have_count(1)
    option.locator("a").click()
    expect(chips(page)).to_have_count(2)
    assert run_ids_in(page.url) == [str(alpha.id), str(bravo.id)]
    first_group = page.locator("tbody.group").first
    expect(first_group.locator(".badge", has_text="bravo-candidate")).to_have_count(1)
    expect(page.locator("#results-stats .metric-card").first).to_contain_text("Δ vs baseline")


def test_keyboard_picks_a_run_and_a_pasted_id_selects_it(page, live_server, data):
    alpha, bravo, charlie = data["runs"]
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id}")
    combobox = page.locator("#run-search")
    combobox.focus()
    expect(page.locator("#run-options [role=option]")).to_have_count(3)
    expect(combobox).to_have_attribute("aria-expanded", "true")
    combobox.press("ArrowDown")  # the newest run, charlie
    expect(page.locator("#run-options [aria-selected=true]")).to_contain_text("charlie-experiment")
    combobox.press("Enter")
    expect(chips(page)).to_have_count(2)
    assert run_ids_in(page.url) == [str(alpha.id), str(charlie.id)]
    page.locator("#run-search").fill(str(bravo.id))
    expect(page.locator("#run-options [aria-selected=true]")).to_contain_text("bravo-candidate")
    page.locator("#run-search").press("Enter")
    expect(chips(page)).to_have_count(3)
    assert run_ids_in(page.url) == [str(alpha.id), str(charlie.id), str(bravo.id)]


def test_scrolling_loads_the_next_page_without_duplicates(page, live_server, data):
    alpha, bravo, _ = data["runs"]
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id},{bravo.id}")
    groups = page.locator("tbody.group")
    expect(groups).to_have_count(100)
    page.locator("#load-more").scroll_into_view_if_needed()
    expect(groups).to_have_count(130)
    expect(page.locator(".end-of-results")).to_be_visible()
    ids = groups.evaluate_all("els => els.map(e => e.dataset.datapointId)")
    assert len(ids) == len(set(ids)) == 130
    assert ids == [str(d.id) for d in reversed(data["datapoints"])]


def test_back_restores_the_previous_selection(page, live_server, data):
    alpha, bravo, _ = data["runs"]
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id}")
    page.fill("#run-search", "bravo")
    page.locator("#run-options [role=option] a", has_text="bravo-candidate").click()
    expect(chips(page)).to_have_count(2)
    page.go_back()
    expect(chips(page)).to_have_count(1)
    assert run_ids_in(page.url) == [str(alpha.id)]
    page.go_forward()
    expect(chips(page)).to_have_count(2)


def test_remove_a_run_and_make_another_the_baseline(page, live_server, data):
    alpha, bravo, charlie = data["runs"]
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id},{bravo.id},{charlie.id}")
    expect(chips(page)).to_have_count(3)
    page.get_by_label(f"Remove charlie-experiment ({charlie.short_id})").click()
    expect(chips(page)).to_have_count(2)
    assert run_ids_in(page.url) == [str(alpha.id), str(bravo.id)]
    page.locator(f'.chip[data-run-id="{bravo.id}"] .make-baseline').click()
    expect(page.locator(f'.chip[data-run-id="{bravo.id}"] .baseline-tag')).to_be_visible()
    assert run_ids_in(page.url) == [str(bravo.id), str(alpha.id)]


def test_correct_a_metric_value(page, live_server, data):
    alpha, bravo, _ = data["runs"]
    datapoint = data["datapoints"][0]
    inference = datapoint.inferences.get(run=bravo)
    page.goto(f"{live_server.url}/evaluations/qa/datapoints/{datapoint.id}/?run_ids={alpha.id},{bravo.id}")
    scores = page.locator(f"#scores-{inference.id}")
    expect(scores.locator("tr[data-metric=correct] .value")).to_have_text("true")
    scores.locator("select[name=value]").select_option("0")
    scores.locator("input[name=reason]").fill("misses the second step")
    scores.get_by_role("button", name="Save").click()
    expect(page.locator(f"#scores-{inference.id} [role=status]")).to_have_text("saved")
    expect(page.locator(f"#scores-{inference.id} tr[data-metric=correct] .value")).to_have_text("false")
    expect(page.locator(f"#scores-{inference.id}")).to_contain_text("misses the second step")
    winning = Feedback.objects.filter(inference=inference, metric="correct").winning().get()
    assert (winning.value, winning.source) == (0.0, "human")
