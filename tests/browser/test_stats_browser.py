"""The statistics fragment in a real Chromium: with five runs it opens as a summary bar that expands."""

import os

import pytest
from playwright.sync_api import expect

from tests.factories import statistics_data


@pytest.fixture
def data(transactional_db):
    return statistics_data(["alpha-base", "bravo", "charlie", "delta", "echo"], datapoints=30)


def test_five_runs_open_as_a_summary_bar_that_expands(page, live_server, data):
    run_ids = ",".join(str(r.id) for r in data["runs"])
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={run_ids}")
    stats = page.locator("#results-stats.stats2")
    bar = stats.locator("summary.stats-bar")
    expect(bar).to_contain_text("similarity")
    expect(bar).to_contain_text("pass cutoff")
    details = stats.locator("details.stats-disclosure")
    expect(details).not_to_have_attribute("open", "")
    expect(stats.locator(".metric-card").first).to_be_hidden()
    # Collapsed, the first rows are on the first screen.
    assert page.locator("tbody.group").first.bounding_box()["y"] < 900
    bar.click()
    expect(details).to_have_attribute("open", "")
    similarity = stats.locator('.metric-card[data-metric="similarity"]')
    expect(similarity).to_be_visible()
    expect(similarity.locator(".paired").first).to_contain_text("paired n=")
    expect(similarity.locator("svg.hist")).to_have_count(5)
    expect(similarity.locator(".chart .cutoff")).to_have_count(1)
    expect(stats.locator(".efficiency-card tbody tr")).to_have_count(5)
    bar.press("Enter")  # a keyboard user closes it again
    expect(details).not_to_have_attribute("open", "")
    shots = os.environ.get("STATS_SCREENSHOTS")  # a directory: the README's pictures are taken here
    if shots:
        bar.click()
        page.evaluate("document.activeElement.blur()")
        for width in (1440, 390):
            page.set_viewport_size({"width": width, "height": 900})
            box = stats.bounding_box()
            scroll_y = page.evaluate("window.scrollY")
            page.screenshot(path=os.path.join(shots, f"statistics-{width}.png"), full_page=True,
                            clip={"x": 0, "y": 0, "width": width, "height": box["y"] + scroll_y + box["height"] + 12})
