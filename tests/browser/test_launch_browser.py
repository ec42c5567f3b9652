"""A person launches a run from the comparison page, watches it progress on the run page, and when it
ends opens the comparison with the previous run — with a real worker process running it."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission

from comparisons.models import EvaluationRun
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, RunFactory, UserFactory, at

DATAPOINTS = 120


@pytest.fixture
def qa(transactional_db):
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match")
    for i in range(DATAPOINTS):
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(milliseconds=i),
                         input={"question": f"question {i}"}, reference_output=f"answer {i}")
    previous = RunFactory(evaluation=evaluation, variant_name="baseline", status=EvaluationRun.Status.COMPLETED)
    UserFactory(username="browser-user").user_permissions.add(
        Permission.objects.get(codename="launch_run", content_type__app_label="comparisons"))
    return previous


def test_launch_watch_and_compare_with_the_previous_run(page, live_server, qa, workers):
    workers()
    page.goto(f"{live_server.url}/evaluations/qa/?run_ids={qa.id}")
    page.get_by_role("link", name="New run").click()
    page.wait_for_url("**/evaluations/qa/runs/new/")

    # A refused value is shown next to its field, and nothing is launched.
    page.fill("#id_variant", "not a name")
    page.select_option("#id_task", "sample-steady")
    page.click("text=Launch run")
    page.get_by_text("Use letters, digits and _ . : - only").wait_for()
    assert not EvaluationRun.objects.filter(variant_name="not a name").exists()

    page.fill("#id_variant", "from-the-browser")
    page.fill("#id_concurrency", "1")
    page.click("text=Launch run")
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    run = EvaluationRun.objects.get(variant_name="from-the-browser")
    assert page.url.endswith(f"/runs/{run.id}/")

    # The progress fragment refreshes itself until the run ends, the rest of the page with it; the poll that
    # sees the end brings the summary and a toast.
    page.locator("#run-progress .status.running").wait_for(timeout=30_000)
    toast = page.locator("#toasts .toast")
    toast.wait_for(timeout=60_000)
    assert page.get_by_role("status").locator(".toast").count() == 1  # in the live region: announced
    assert page.locator("#toasts").get_attribute("aria-live") == "polite"
    assert "Run from-the-browser finished" in toast.inner_text()
    assert page.locator(".progress-count").inner_text() == f"{DATAPOINTS} / {DATAPOINTS} datapoints"
    summary = page.locator(".run-summary")
    summary.wait_for()
    assert "No cutoffs set" in summary.inner_text()
    assert f"Inferences\n{DATAPOINTS} (0 missing)" in page.locator(".card", has_text="Operations").inner_text()
    compare = f"/evaluations/qa/?run_ids={qa.id},{run.id}"
    assert toast.get_by_role("link", name="Compare with previous run").get_attribute("href") == compare
    toast.get_by_role("button", name="Dismiss").click()
    toast.wait_for(state="detached")
    summary.get_by_role("link", name="Compare with previous run").click()
    page.wait_for_url(f"**{compare}")
    page.locator(".chip", has_text="from-the-browser").wait_for()
