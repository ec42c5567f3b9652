"""Browser tests: Playwright drives the system Chromium (Debian's package) against a live server."""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]



@pytest.fixture(scope="package", autouse=True)
def orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread, so Django would refuse the ORM calls the
    tests make around it (they are safe: nothing runs on that loop). Allowed for these tests only:
    elsewhere the check must stay on (tests/test_runner_async.py relies on it)."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")  # stopped after these tests: its loop must not outlive them
def browser(orm_beside_playwright):
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's 'chromium' package (.ci/run does).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, transactional_db):
    from comparisons.reviewers import reviewers_group
    from tests.factories import UserFactory

    UserFactory(username="browser-user").groups.add(reviewers_group())  # may correct values
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "browser-user")
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/evaluations/")
    yield page
    context.close()


def comparison_data(variants: list[str], *, datapoints: int, scored_runs: int, similarity: bool = False) -> dict:
    """Evaluation "qa" with runs `variants` a minute apart and `datapoints` datapoints a second apart;
    the first `scored_runs` runs have an output and a `correct` score (alternating) for each, and with
    `similarity` a float metric (cutoff 0.5) scored 0.25 + run index / 2."""
    from comparisons.ids import uuid7
    from tests.factories import EvaluationFactory, EvaluatorFactory, RunFactory, at, bulk_scored_runs

    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    if similarity:
        EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float", cutoff=0.5)
    runs = [RunFactory(evaluation=evaluation, id=uuid7(at(100 + i)), variant_name=name)
            for i, name in enumerate(variants)]
    index = {run.id: i for i, run in enumerate(runs)}

    def scores(run, i):
        values = {"correct": float((i + index[run.id]) % 2)}
        if similarity:
            values["similarity"] = 0.25 + index[run.id] / 2
        return values

    points = bulk_scored_runs(evaluation, runs[:scored_runs], datapoints, scores,
                              output=lambda run, i: f"output {i} of {run.variant_name}")
    return {"evaluation": evaluation, "runs": runs, "datapoints": points}
