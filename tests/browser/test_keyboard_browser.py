"""The comparison page with the keyboard only, in a real Chromium: skip link, the run selector's
active option, focus kept through every swap, filter selects that apply on Enter, and the live
region that reads the new rows."""

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import comparison_data


@pytest.fixture
def data(transactional_db):
    return comparison_data(["alpha-baseline", "bravo-candidate", "charlie-experiment"], datapoints=30, scored_runs=3)


def tab_to(page, selector, limit=60):
    """Press Tab until `selector` has focus (a person finding the control with the keyboard)."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def focused(page) -> str:
    return page.evaluate("document.activeElement.id || document.activeElement.getAttribute('name') || "
                         "document.activeElement.tagName")


def test_the_whole_flow_with_the_keyboard(page, live_server, data):
    alpha, bravo, charlie = data["runs"]
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id}")
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    assert focused(page) == "main"

    # The selector: ↓ marks an option visibly and for screen readers; Enter adds it; focus stays.
    tab_to(page, "#run-search")
    expect(page.locator("#run-options [role=option]")).to_have_count(3)
    page.keyboard.press("ArrowDown")
    active = page.locator("#run-options [aria-selected=true]")
    expect(active).to_contain_text("charlie-experiment")
    combobox = page.locator("#run-search")
    expect(combobox).to_have_attribute("aria-activedescendant", active.get_attribute("id"))
    assert active.locator("a").evaluate("a => getComputedStyle(a).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.locator("#run-chips .chip")).to_have_count(2)
    expect(page.locator("#run-search")).to_be_focused()
    page.keyboard.press("Escape")

    # make baseline from the keyboard: focus comes back to the chips, not to <body>.
    tab_to(page, "#run-chips .make-baseline")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: parse_qs(urlparse(url).query)["run_ids"][0].startswith(str(charlie.id)))
    expect(page.locator("#run-chips")).to_be_focused()

    # A filter select: arrows browse without loading anything, Enter applies once, focus stays.
    tab_to(page, "#filters select[name=filter]")
    requests = []
    page.on("request", lambda request: requests.append(request.url) if "/evaluations/qa/?" in request.url else None)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(400)
    assert requests == [] and "filter=" not in page.url
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: parse_qs(urlparse(url).query).get("filter") == ["improved"])
    assert len(requests) == 1
    expect(page.locator("#filters select[name=filter]")).to_be_focused()
    expect(page.locator("#results-announcer")).to_contain_text("Improved vs baseline")

    # Leaving a select after browsing it applies it too.
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Tab")
    page.wait_for_url(lambda url: parse_qs(urlparse(url).query).get("filter") == ["regressed"])
    expect(page.locator("#results-announcer")).to_contain_text("datapoint")
