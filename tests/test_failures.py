"""Failure analysis: errors by class per run (comparisons_error_class) and `filter=error:<class>`."""

import re

import pytest
from django.db import connection

from comparisons.ids import uuid7
from comparisons.models import Inference, in_window
from comparisons.queries import RowQuery, comparison_page, failure_classes, resolve_comparison
from tests.factories import DatapointFactory, InferenceFactory, RunFactory, at
from tests.test_window_scores import make_evaluation

ERRORS = {
    "TimeoutError: the task did not finish within 30 s": "timeout",
    "asyncio.TimeoutError in task: ": "timeout",
    "the model did not answer within 10 s": "timeout",
    "RateLimitError: 429 Too Many Requests (retries exhausted)": "rate limit",
    "APIStatusError: rate limit reached for gpt-4o": "rate limit",
    "ValueError in scorer 'judge': the judge's answer is not valid JSON": "malformed judge answer",
    "KeyError in scorer 'exact': 'parsed'": "scorer error",
    "APIError: 502 Bad Gateway from upstream provider": "APIError",
    "openai.BadRequestError: context too long": "BadRequestError",
    "SystemExit in task: 3": "SystemExit",
    "something odd happened": "other",
    "ünïcödé ☃ (.*+?[ ] \\ $^)": "other",
    "x" * 100_000: "other",
}


def error_class(text):
    with connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_error_class(%s)", [text])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_error_classes():
    assert {text[:60]: error_class(text) for text in ERRORS} == {text[:60]: c for text, c in ERRORS.items()}
    assert error_class(None) is None


@pytest.fixture
def failing(db):
    """Two runs over 12 datapoints with errors of several classes; one errored datapoint retired before
    the second run (outside its window), so its error does not count for that run."""
    evaluation = make_evaluation()
    points = [DatapointFactory(evaluation=evaluation, created=at(i / 100)) for i in range(12)]
    runs = [RunFactory(evaluation=evaluation, id=uuid7(at(100 + 100 * r))) for r in range(2)]
    texts = list(ERRORS)
    for r, run in enumerate(runs):
        for i, point in enumerate(points):
            error = texts[(i + r) % 5] if (i + r) % 3 == 0 else None
            InferenceFactory(run=run, datapoint=point, error=error, output=None if error else "ok")
    points[0].retire(when=at(150))  # after the first run, before the second
    return evaluation, runs, points


def expected(runs, points):
    counts = {}
    for run in runs:
        for inference in Inference.objects.filter(run=run, error__isnull=False).select_related("datapoint"):
            if in_window(inference.datapoint_id, inference.datapoint.staled_at, run.started_at):
                cls = ERRORS[inference.error]
                counts.setdefault(cls, {})[run.id] = counts.setdefault(cls, {}).get(run.id, 0) + 1
    return counts


def test_failure_classes_count_each_runs_window(failing):
    evaluation, runs, points = failing
    classes = failure_classes(resolve_comparison(evaluation, [r.id for r in runs]))
    assert classes == expected(runs, points)
    totals = [sum(c.values()) for c in classes.values()]
    assert totals == sorted(totals, reverse=True)  # most frequent first


def test_the_panel_links_each_class_to_its_rows(client_logged_in, failing):
    evaluation, runs, points = failing
    ids = ",".join(str(r.id) for r in runs)
    body = client_logged_in.get(f"/evaluations/{evaluation.name}/failures/?run_ids={ids}",
                                HTTP_HX_REQUEST="true").content.decode()
    links = dict(re.findall(r'href="[^"]*filter=error%3A([^"&]*)[^"]*"[^>]*>([^<]*)</a>', body))
    assert sorted(links.values()) == sorted(expected(runs, points))
    for error_class in expected(runs, points):
        page = comparison_page(resolve_comparison(evaluation, [r.id for r in runs]),
                               RowQuery(filter=f"error:{error_class}"))
        shown = {row.datapoint.id for row in page.rows}
        failed = {inference.datapoint_id for run in runs
                  for inference in Inference.objects.filter(run=run).select_related("datapoint")
                  if inference.error and ERRORS[inference.error] == error_class
                  and in_window(inference.datapoint_id, inference.datapoint.staled_at, run.started_at)}
        assert shown == failed, error_class
        response = client_logged_in.get(f"/evaluations/{evaluation.name}/?run_ids={ids}&filter=error:{error_class}")
        assert f"Failed: {error_class}" in response.content.decode()


def test_no_failures_says_so(client_logged_in, db):
    evaluation = make_evaluation()
    run = RunFactory(evaluation=evaluation, id=uuid7(at(100)))
    InferenceFactory(run=run)
    body = client_logged_in.get(f"/evaluations/{evaluation.name}/failures/?run_ids={run.id}").content.decode()
    assert "No inference of these runs failed" in body


@pytest.mark.parametrize(("value", "message"), [
    ("error:", "error class of 1–100 characters"), ("error:" + "x" * 101, "error class of 1–100 characters"),
    ("errors", "Unknown filter")])
def test_bad_error_filters_are_refused(client_logged_in, failing, value, message):
    evaluation, runs, points = failing
    response = client_logged_in.get(f"/evaluations/{evaluation.name}/?run_ids={runs[0].id}&filter={value}")
    assert response.status_code == 400 and message in response.content.decode()


def test_an_unknown_class_shows_no_rows(client_logged_in, failing):
    evaluation, runs, points = failing
    response = client_logged_in.get(f"/evaluations/{evaluation.name}/?run_ids={runs[0].id}&filter=error:☃%27;--")
    assert response.status_code == 200 and "No rows to show" in response.content.decode()
