"""Every portal page satisfies the Content-Security-Policy in a real Chromium, htmx interactions included."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import comparison_data
from tests.factories import UserFactory

# Runs before any page script, on every document; Playwright injects it past the page's CSP.
LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation({
    directive: event.violatedDirective, blocked: event.blockedURI, sample: event.sample,
    source: `${event.sourceFile}:${event.lineNumber}`, page: document.location.pathname,
  });
  window.__cspViolations.push(event.violatedDirective);
});
"""


@pytest.fixture
def watched(browser, live_server, transactional_db):
    """A page that records CSP violation events, console errors and uncaught script errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    problems = []
    context.expose_binding("reportViolation", lambda _source, violation: problems.append(("csp", violation)))
    context.add_init_script(LISTEN)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("console", lambda message: message.type == "error"
            and problems.append(("console", f"{message.text} at {message.location['url']}")))
    page.on("pageerror", lambda error: problems.append(("pageerror", str(error))))
    page.on("response", lambda response: response.status >= 400
            and problems.append(("http", f"{response.status} {response.request.method} {response.url}")))
    yield page, problems
    context.close()


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/evaluations/")


def test_every_portal_page_satisfies_the_policy(watched, live_server):
    page, problems = watched
    data = comparison_data(["alpha-baseline", "bravo-candidate", "charlie-experiment"], datapoints=130,
                           scored_runs=2, similarity=True)
    alpha, bravo, charlie = data["runs"]
    UserFactory(username="csp-admin", is_staff=True, is_superuser=True)
    url = live_server.url

    log_in(page, live_server, "csp-admin")  # the login page, then the evaluation list
    expect(page.locator("main")).to_contain_text("qa")

    # The comparison page: statistics load, rows scroll, a filter changes, the run selector adds a run.
    page.goto(f"{url}/evaluations/qa/?run_ids={alpha.id},{bravo.id}")
    expect(page.locator("#results-stats .metric-card").first).to_contain_text("Δ vs baseline")
    expect(page.locator("#results-stats svg").first).to_be_visible()
    groups = page.locator("tbody.group")
    expect(groups).to_have_count(100)
    page.locator("#load-more").scroll_into_view_if_needed()
    expect(groups).to_have_count(130)
    page.locator("#filters select[name=filter]").select_option(label="Regressed vs baseline")
    page.wait_for_url("**filter=regressed**")
    expect(page.locator("#results-stats .metric-card").first).to_be_visible()
    page.locator("#run-search").focus()
    expect(page.locator("#run-options [role=option]")).to_have_count(3)
    page.fill("#run-search", "charlie")
    page.locator("#run-options [role=option] a", has_text="charlie-experiment").click()
    expect(page.locator("#run-chips .chip")).to_have_count(3)
    expect(page.locator("#results-stats .metric-card").first).to_be_visible()

    page.goto(f"{url}/runs/{alpha.id}/")
    expect(page.locator("h1")).to_be_visible()
    datapoint = data["datapoints"][0]
    page.goto(f"{url}/evaluations/qa/datapoints/{datapoint.id}/?run_ids={alpha.id},{bravo.id}")
    expect(page.locator("h1")).to_be_visible()
    page.locator("details summary").first.click()
    page.goto(f"{url}/evaluations/qa/runs/?q=bravo")
    expect(page.locator(".listbox [role=option]")).to_have_count(1)

    page.goto(f"{url}/admin/")
    expect(page.locator("#site-name")).to_be_visible()
    page.goto(f"{url}/admin/comparisons/evaluationrun/")
    expect(page.locator("#result_list")).to_be_visible()
    page.goto(f"{url}/admin/comparisons/evaluationrun/{alpha.id}/change/")
    expect(page.locator("#content h1")).to_be_visible()
    page.goto(f"{url}/admin/comparisons/evaluator/add/")
    expect(page.locator("#content h1")).to_be_visible()
    page.goto("about:blank")

    assert problems == []


def test_the_lock_out_page_satisfies_the_policy(watched, live_server, settings):
    page, problems = watched
    for _ in range(settings.AXES_FAILURE_LIMIT):
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", "someone")
        page.fill("#id_password", "wrong")
        page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("Too many failed logins for someone")
    page.screenshot(path="/tmp/evalcompare-lockout.png", full_page=True)
    # The 429 itself is reported (as a response and a failed resource); nothing else may be.
    assert [p for p in problems if "429" not in p[1]] == []
    assert ("http", f"429 POST {live_server.url}/login/") in problems


def test_the_listener_sees_a_violation(watched, live_server):
    """The check above can fail: an inline style attribute is refused and reported."""
    page, problems = watched
    page.goto(f"{live_server.url}/login/")
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">inline</p>')")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert any(kind == "csp" and violation["directive"].startswith("style-src") for kind, violation in problems)


def test_the_run_launch_pages_satisfy_the_policy(watched, live_server):
    """The New-run form (a refusal included), a queued run's polled progress, Stop and Resume."""
    import re

    page, problems = watched
    comparison_data(["alpha-baseline"], datapoints=5, scored_runs=1)
    UserFactory(username="csp-launcher", is_staff=True, is_superuser=True)
    log_in(page, live_server, "csp-launcher")
    page.goto(f"{live_server.url}/evaluations/qa/runs/new/")
    page.fill("#id_variant", "not a name")
    page.click("text=Launch run")
    expect(page.locator(".field-error").first).to_contain_text("Use letters, digits")
    problems[:] = [p for p in problems if not (p[0] in ("http", "console") and "400" in p[1])]  # the refusal
    page.fill("#id_variant", "csp-run")
    page.click("text=Launch run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    expect(page.locator("#run-progress")).to_contain_text("in the queue")  # no worker: it stays queued
    page.wait_for_event("response", lambda response: "/progress/" in response.url)  # it polls
    page.click("button:has-text('Stop')")
    expect(page.locator("#run-progress .status")).to_have_text("Cancelled")
    page.click("button:has-text('Resume')")
    expect(page.locator("#run-progress .status")).to_have_text("Queued")
    assert problems == []
