"""The Configuration panel in a real Chromium: collapsed, opened by its summary, "Differences only"
hiding what every run shares, with no script (the page runs under a strict CSP)."""

from playwright.sync_api import expect

from comparisons.models import EvaluationRun, evaluator_snapshot
from tests.browser.conftest import comparison_data


def test_open_the_configuration_panel_and_show_differences_only(page, live_server, transactional_db):
    data = comparison_data(["alpha", "bravo"], datapoints=3, scored_runs=2)
    alpha, bravo = data["runs"]
    snapshot = evaluator_snapshot(data["evaluation"])
    EvaluationRun.objects.filter(id=alpha.id).update(
        evaluator_snapshot=snapshot, config={"model": "gpt-4o", "temperature": 0.2})
    snapshot[0]["cutoff"] = 0.9
    EvaluationRun.objects.filter(id=bravo.id).update(
        evaluator_snapshot=snapshot, config={"model": "gpt-4o-mini", "temperature": 0.2})
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={alpha.id},{bravo.id}")
    expect(page.locator("#config-warning")).to_contain_text("correct: cutoff")
    panel = page.locator("#run-configuration")
    table = panel.locator("table.config-table")
    expect(table).to_be_hidden()  # collapsed by default
    panel.locator("summary").click()
    expect(table).to_be_visible()
    shared = table.locator("tr", has_text="temperature")
    expect(shared).to_be_visible()
    expect(table.locator("tr", has_text="model")).to_contain_text("gpt-4o-mini")
    page.get_by_label("Differences only").check()
    expect(shared).to_be_hidden()
    expect(table.locator("tr", has_text="correct: cutoff")).to_be_visible()
    expect(table.locator("tr", has_text="correct: kind")).to_be_hidden()
