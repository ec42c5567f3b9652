"""The grid view in a real Chromium: a column per run, the datapoint column kept in view while the
runs scroll sideways, infinite scroll, and the View control."""

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import comparison_data

VARIANTS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


@pytest.fixture
def data(transactional_db):
    return comparison_data(VARIANTS, datapoints=104, scored_runs=6)


def test_six_runs_side_by_side_scroll_sideways_and_page_down(page, live_server, data):
    ids = ",".join(str(run.id) for run in data["runs"])
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={ids}")
    expect(page.locator("#results")).to_have_attribute("data-view", "grid")
    expect(page.locator("#results thead th.run-col")).to_have_count(6)
    first = page.locator("tbody.group").first
    expect(first.locator("td.gcell")).to_have_count(6)
    expect(first.locator(".gcell ins", has_text="bravo")).to_have_count(1)  # "of alpha" → "of bravo", marked
    # Six runs do not fit: the table scrolls in its own box, the page itself does not, and the
    # datapoint column stays where it was.
    box = page.locator(".results-scroll")
    assert box.evaluate("b => b.scrollWidth > b.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    name = first.locator("td.datapoint")
    left = name.bounding_box()["x"]
    box.evaluate("b => b.scrollBy(600, 0)")
    page.wait_for_function("document.querySelector('.results-scroll').scrollLeft > 0")
    assert abs(name.bounding_box()["x"] - left) <= 1  # sticky (the table's border is the pixel)
    assert first.locator("td.gcell").nth(1).bounding_box()["x"] < left + 100  # the runs moved under it
    # Infinite scroll keeps the grid: the last four datapoints arrive as grid rows.
    page.locator("#load-more").scroll_into_view_if_needed()
    expect(page.locator("tbody.group")).to_have_count(104)
    expect(page.locator("tbody.group").last.locator("td.gcell")).to_have_count(6)
    expect(page.locator(".end-of-results")).to_be_visible()


def test_the_view_control_switches_to_stacked_and_keeps_the_filter(page, live_server, data):
    ids = ",".join(str(run.id) for run in data["runs"][:3])
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={ids}&filter=improved")
    expect(page.locator("#results")).to_have_attribute("data-view", "grid")
    page.locator("#filters select[name=view]").select_option("stacked")
    expect(page.locator("#results")).to_have_attribute("data-view", "stacked")
    query = parse_qs(urlparse(page.url).query)
    assert query["view"] == ["stacked"] and query["filter"] == ["improved"]
    expect(page.locator("tbody.group").first.locator("tr")).to_have_count(3)  # a row per run again
    page.go_back()
    expect(page.locator("#results")).to_have_attribute("data-view", "grid")
