"""The comparison's grid view (`view=grid`): one row per datapoint, a column per run, each output
marked where it differs from the baseline's."""

import re
from html import unescape

import pytest
from django.core.cache import caches

from comparisons.ids import uuid7
from comparisons.models import Feedback
from comparisons.rows_cache import CACHE_ALIAS
from tests.factories import DatapointFactory, InferenceFactory, RunFactory, at
from tests.test_window_scores import make_evaluation


@pytest.fixture(autouse=True)
def empty_cache():
    caches[CACHE_ALIAS].clear()


def make_runs(outputs_by_run: list[list], datapoints: int | None = None):
    """Runs over the same datapoints; `outputs_by_run[r][i]` is run r's output on datapoint i (None: no inference)."""
    evaluation = make_evaluation()
    count = datapoints or len(outputs_by_run[0])
    points = [DatapointFactory(evaluation=evaluation, created=at(i / 1000)) for i in range(count)]
    runs = []
    for r, outputs in enumerate(outputs_by_run):
        run = RunFactory(evaluation=evaluation, id=uuid7(at(100 + r)), variant_name=f"variant-{r}")
        runs.append(run)
        for point, output in zip(points, outputs, strict=False):
            if output is not None:
                inference = InferenceFactory(run=run, datapoint=point, output=output)
                Feedback.objects.create(inference=inference, metric="correct", value=float(r % 2))
    return evaluation, runs, points


def url(evaluation, runs, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    ids = ",".join(str(r.id) for r in runs)
    return f"/evaluations/{evaluation.name}/?run_ids={ids}" + (f"&{query}" if query else "")


def row_of(body: str, point) -> str:
    match = re.search(rf'<tbody class="group" id="row-{point.id}".*?</tbody>', body, re.DOTALL)
    assert match, f"no row for {point.id}"
    return match.group(0)


def test_three_runs_open_in_the_grid_two_in_the_stacked_view(client_logged_in):
    evaluation, runs, points = make_runs([["a"], ["a"], ["b"]])
    grid = client_logged_in.get(url(evaluation, runs)).content.decode()
    assert 'data-view="grid"' in grid
    assert len(re.findall(r"<tr>", row_of(grid, points[0]))) == 1  # one row per datapoint
    assert grid.count('class="run-col"') == 3
    stacked = client_logged_in.get(url(evaluation, runs[:2])).content.decode()
    assert 'data-view="stacked"' in stacked
    assert row_of(stacked, points[0]).count("<tr") == 2  # a row per run
    chosen = client_logged_in.get(url(evaluation, runs, view="stacked")).content.decode()
    assert 'data-view="stacked"' in chosen and '<option value="stacked" selected>' in chosen
    assert 'data-view="grid"' in client_logged_in.get(url(evaluation, runs[:2], view="grid")).content.decode()


def test_cells_say_identical_or_mark_the_words_that_differ(client_logged_in):
    evaluation, runs, points = make_runs([
        ["the cat sat on the mat", {"total": 10, "vendor": "ACME"}, "same"],
        ["the cat sat on the mat", {"total": 12, "vendor": "ACME"}, None],
        ["the dog sat on the mat", {"total": 10, "vendor": "ACME"}, "same"],
    ])
    body = client_logged_in.get(url(evaluation, runs)).content.decode()
    text_row = row_of(body, points[0])
    assert text_row.count("identical to baseline") == 1
    assert "<del>cat</del>" in text_row and "<ins>dog</ins>" in text_row
    json_row = row_of(body, points[1])
    assert '"total": <del>10,</del><ins>12,</ins>' in unescape(json_row)  # the field that changed, pretty JSON
    assert '"vendor": "ACME"' in unescape(json_row) and json_row.count("identical to baseline") == 1
    missing_row = row_of(body, points[2])
    assert "missing — no inference for this datapoint" in missing_row


def test_hostile_outputs_are_escaped_in_the_grid(client_logged_in):
    hostile = '<script>alert(1)</script> "quoted" & ünïcödé ☃ ' + "x" * 5000
    evaluation, runs, points = make_runs([["plain"], [hostile], ["<b>bold</b>\n" * 40]])
    body = client_logged_in.get(url(evaluation, runs)).content.decode()
    row = row_of(body, points[0])
    assert "<script>" not in row and "&lt;script&gt;" in row and "<b>" not in row
    assert "ünïcödé ☃" in row
    assert row.count("show all") == 2  # both long outputs fold, the short one does not


def test_the_grid_pages_with_infinite_scroll_keeping_the_view(client_logged_in):
    evaluation, runs, points = make_runs([[f"answer {i}" for i in range(105)]] * 3)
    body = client_logged_in.get(url(evaluation, runs, view="grid")).content.decode()
    next_url = re.search(r'hx-get="([^"]*after=[^"]*)"', body).group(1).replace("&amp;", "&")
    assert "view=grid" in next_url
    page2 = client_logged_in.get(next_url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="load-more").content.decode()
    assert page2.count('<tbody class="group"') == 5 and "End of results" in page2
    assert page2.count("identical to baseline") == 10  # two compared runs × five rows
    # The cache keeps the two views apart: the same rows in the stacked view are rows of runs.
    stacked = client_logged_in.get(next_url.replace("view=grid", "view=stacked"),
                                   HTTP_HX_REQUEST="true", HTTP_HX_TARGET="load-more").content.decode()
    assert "identical to baseline" not in stacked and stacked.count('<tr class="cell-') == 15


@pytest.mark.parametrize(("view", "message"), [
    ("table", "use grid or stacked"), ("GRID", "use grid or stacked"), ("☃" * 100, "use grid or stacked"),
    ("grid\x00", "control character")])
def test_an_unknown_view_is_refused_clearly(client_logged_in, view, message):
    evaluation, runs, points = make_runs([["a"], ["b"], ["c"]])
    response = client_logged_in.get(url(evaluation, runs, view=view))
    assert response.status_code == 400
    assert message in response.content.decode().lower()


@pytest.mark.parametrize("view", ["grid", "stacked"])
def test_cells_show_tokens_and_cost(client_logged_in, view):
    from comparisons.models import Inference

    evaluation, runs, points = make_runs([["a", "b"], ["a", "b"], ["c", "d"]])
    Inference.objects.filter(run=runs[1], datapoint=points[0]).update(input_tokens=1234567, output_tokens=89,
                                                                       cost="0.00123")
    Inference.objects.filter(run=runs[2], datapoint=points[0]).update(output_tokens=5, cost="0.00000042")
    body = client_logged_in.get(url(evaluation, runs, view=view)).content.decode()
    row = row_of(body, points[0])
    assert "1,234,567 → 89 tok · $0.0012" in row
    assert "? → 5 tok · $0.00000042" in row
    assert "tok" not in row_of(body, points[1])  # nothing recorded, nothing shown
