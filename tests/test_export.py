import csv
import io
import json
import os
import stat
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from comparisons import export
from comparisons.ids import uuid7
from comparisons.queries import RowFilter, RowQuery, RowSort, comparison_page, comparison_stats, resolve_comparison
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    at,
)

pytestmark = pytest.mark.django_db
NASTY = 'Hello, "world";\nnew line, naïve café — 日本語, =SUM(A1)'


@pytest.fixture
def setup():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float")
    base = RunFactory(evaluation=evaluation, id=uuid7(at(100)), variant_name="base")
    new = RunFactory(evaluation=evaluation, id=uuid7(at(200)), variant_name="new")
    datapoints = []
    for i in range(23):
        datapoint = DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i), name=f"dp-{i}")
        datapoints.append(datapoint)
        for run, value in ((base, 1.0), (new, float(i % 3 != 0))):
            if run is new and i == 5:
                continue  # a missing inference
            inference = InferenceFactory(run=run, datapoint=datapoint, output=NASTY if i == 7 else f"out {i}")
            FeedbackFactory(inference=inference, metric="correct", value=value)
            FeedbackFactory(inference=inference, metric="similarity", value=i / 23)
    late = DatapointFactory(evaluation=evaluation, created=at(150), name="late")  # only in new's window
    InferenceFactory(run=new, datapoint=late, output="late out", error="boom")
    comparison = resolve_comparison(evaluation, [base.id, new.id])
    return {"evaluation": evaluation, "base": base, "new": new, "comparison": comparison}


@pytest.mark.parametrize("query", [RowQuery(), RowQuery(filter=RowFilter.REGRESSED),
                                   RowQuery(sort=RowSort.REGRESSED_FIRST, metric="similarity"),
                                   RowQuery(filter=RowFilter.MISSING)])
def test_export_rows_match_the_page_rows(setup, query):
    comparison = setup["comparison"]
    lines = list(export.export_lines(comparison, query, page_size=5))  # several pages
    page = comparison_page(comparison, RowQuery(**{**query.__dict__, "page_size": 1000}))
    expected = [(str(row.datapoint.id), str(cell.run.id), cell.state) for row in page.rows for cell in row.cells]
    assert [(line["datapoint_id"], line["run_id"]) for line in lines] == [e[:2] for e in expected]
    assert len(lines) == 2 * len(page.rows) > 0
    for line, (_, _, state) in zip(lines, expected, strict=True):
        assert line["in_window"] == (state != "out_of_window")
        assert (line["inference_id"] is None) == (state in ("out_of_window", "missing"))


def test_cells_carry_values_sources_and_window(setup):
    lines = list(export.export_lines(setup["comparison"]))
    late = [line for line in lines if line["datapoint_name"] == "late"]
    assert [(line["variant"], line["in_window"], line["error"]) for line in late] == [
        ("base", False, None), ("new", True, "boom")]
    missing = next(line for line in lines if line["datapoint_name"] == "dp-5" and line["variant"] == "new")
    assert missing["in_window"] and missing["inference_id"] is None and missing["correct"] is None
    first = next(line for line in lines if line["datapoint_name"] == "dp-3" and line["variant"] == "new")
    assert (first["correct"], first["correct__source"], first["similarity"]) == (0.0, "evaluator", 3 / 23)
    assert json.loads(first["input"]) == setup["comparison"].evaluation.datapoints().get(name="dp-3").input
    assert first["output"] == '"out 3"'  # compact JSON


def test_csv_round_trips_through_python_csv(setup):
    out = StringIO()
    call_command("export_comparison", "qa", "--run-ids", setup["comparison"].run_ids_param, stdout=out)
    text = out.getvalue()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0]) == export.export_columns(setup["comparison"])
    nasty = [r for r in rows if r["datapoint_name"] == "dp-7"]
    assert {json.loads(r["output"]) for r in nasty} == {NASTY}
    assert len(rows) == 48 and rows[0]["datapoint_name"] == "late"
    assert {r["in_window"] for r in rows} == {"true", "false"}


def test_jsonl_to_a_file_and_summary(setup, tmp_path):
    target = tmp_path / "out.jsonl"
    call_command("export_comparison", "qa", "--run-ids", setup["comparison"].run_ids_param, "--output", str(target),
                 stderr=StringIO())
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 48 and lines[0]["datapoint_name"] == "late"
    assert list(tmp_path.iterdir()) == [target]

    out = StringIO()
    call_command("export_comparison", "qa", "--run-ids", setup["comparison"].run_ids_param, "--summary", stdout=out)
    summary = list(csv.DictReader(io.StringIO(out.getvalue())))
    stats = comparison_stats(setup["comparison"])
    assert [(r["variant"], r["metric"]) for r in summary] == [
        ("base", "correct"), ("base", "similarity"), ("new", "correct"), ("new", "similarity")]
    new_correct = stats.metrics[0].per_run[1]
    assert float(summary[2]["mean"]) == pytest.approx(new_correct.mean)
    assert float(summary[2]["ci_low"]) == pytest.approx(new_correct.ci.low)
    assert int(summary[2]["regressed"]) == new_correct.delta.regressed == 8
    assert summary[0]["delta"] == "" and summary[0]["improved"] == ""


@pytest.mark.parametrize("args, message", [
    (["--run-ids", "bad"], "Not a valid run id"),
    (["--run-ids", "01a00000-0000-7000-8000-000000000000"], "No run with id"),
    (["--run-ids", "RUN", "--metric", "tone", "--filter", "regressed"], "Unknown metric"),
])
def test_bad_input_exits_non_zero_with_the_page_message(setup, args, message):
    args = [a.replace("RUN", setup["comparison"].run_ids_param) for a in args]
    with pytest.raises(CommandError, match=message) as error:
        call_command("export_comparison", "qa", *args, stdout=StringIO())
    assert error.value.returncode == 2


def test_a_failed_export_leaves_no_file(setup, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        yield from list(export.export_rows(setup["comparison"]))[:3]
        raise RuntimeError("database went away")

    monkeypatch.setattr("comparisons.management.commands.export_comparison.export_rows", broken)
    target = tmp_path / "out.csv"
    target.write_text("previous export")
    with pytest.raises(RuntimeError):
        call_command("export_comparison", "qa", "--run-ids", setup["comparison"].run_ids_param,
                     "--output", str(target), stderr=StringIO())
    assert target.read_text() == "previous export"
    assert list(tmp_path.iterdir()) == [target]


def test_exporting_to_a_pipe_writes_into_it_and_leaves_it_a_pipe(setup, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    call_command("export_comparison", "qa", "--run-ids", setup["comparison"].run_ids_param, "--output", str(fifo),
                 stderr=StringIO())
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # not replaced by a regular file
    assert received[0].startswith("datapoint_id,") and len(received[0].splitlines()) == 49
    assert list(tmp_path.iterdir()) == [fifo]


def test_download_links_stream_the_same_content(client_logged_in, setup):
    url = reverse("comparison_export", args=["qa"])
    params = {"run_ids": setup["comparison"].run_ids_param, "filter": "regressed", "format": "csv"}
    response = client_logged_in.get(url, params)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="qa-comparison.csv"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    out = StringIO()
    call_command("export_comparison", "qa", "--run-ids", setup["comparison"].run_ids_param, "--filter", "regressed",
                 stdout=out)
    assert body == out.getvalue()
    jsonl = client_logged_in.get(url, {**params, "format": "jsonl"})
    assert len(b"".join(jsonl.streaming_content).decode().splitlines()) == len(body.splitlines()) - 1
    assert client_logged_in.get(url, {**params, "format": "xls"}).status_code == 400
    assert client_logged_in.get(url, {**params, "sort": "nope"}).status_code == 400
    page = client_logged_in.get(reverse("comparison_detail", args=["qa"]), {"run_ids": params["run_ids"],
                                                                            "filter": "regressed"})
    assert "format=csv" in page.content.decode() and "filter=regressed" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_pages_are_prefetched_on_a_second_connection_with_the_same_lines(setup):
    comparison = setup["comparison"]
    seen_threads = set()
    original = export._page_cells

    def spy(*args):
        seen_threads.add(threading.current_thread().name)
        return original(*args)

    export._page_cells = spy
    try:
        prefetched = list(export.export_rows(comparison, page_size=4))
    finally:
        export._page_cells = original
    assert seen_threads and all(name.startswith("export-prefetch") for name in seen_threads)
    page = comparison_page(comparison, RowQuery(page_size=1000))
    assert [(row[0], row[6]) for row in prefetched] == [
        (str(row.datapoint.id), str(cell.run.id)) for row in page.rows for cell in row.cells]
    # An export abandoned half-way stops its worker and closes the worker's connection.
    lines = export.export_rows(comparison, page_size=4)
    next(lines)
    lines.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("export-prefetch")]


@pytest.mark.django_db(transaction=True)
def test_a_failure_on_a_prefetching_connection_reaches_the_export_and_stops_the_workers(setup, monkeypatch):
    def broken(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(export, "_page_cells", broken)
    with pytest.raises(RuntimeError, match="went away"):
        list(export.export_rows(setup["comparison"], page_size=4))
    assert not [t for t in threading.enumerate() if t.name.startswith("export-prefetch")]


@pytest.mark.parametrize("output", [
    NASTY, 'back\\slash, tab\t, bell\x07, escape\x1b, delete\x7f, "quotes", line\u2028separator', 12.5, 100000,
    True, None, {"answer": NASTY, "n": [1, 2.5, None]}, ["a", {"b": "c\n"}],
])
def test_outputs_are_exported_as_compact_json_exactly_as_python_writes_it(setup, output):
    inference = InferenceFactory(run=setup["new"], output=output,
                                 datapoint=DatapointFactory(evaluation=setup["evaluation"], created=at(180)))
    line = next(line for line in export.export_lines(setup["comparison"]) if line["inference_id"] == str(inference.id))
    compact = {"ensure_ascii": False, "separators": (",", ":")}
    if isinstance(output, (dict, list)):  # jsonb keeps objects' keys in its own order
        assert json.loads(line["output"]) == output
        assert line["output"] == json.dumps(json.loads(line["output"]), **compact)
    else:  # scalars come straight from PostgreSQL's text: byte for byte what Python writes
        assert line["output"] == (None if output is None else json.dumps(output, **compact))


@pytest.mark.parametrize("name, fallback", [
    ("qa-comparison.csv", "qa-comparison.csv"),
    ('a"b\r\nContent-Type: text/html; x=y-comparison.csv', "a_b_Content-Type_text_html_x_y-comparison.csv"),
    ("日本語-comparison.jsonl", "comparison.jsonl"),
    ("...", "download"),
])
def test_attachment_disposition_is_one_safe_header_whatever_the_name(name, fallback):
    from urllib.parse import unquote

    header = export.attachment_disposition(name)
    assert "\r" not in header and "\n" not in header and header.isascii()
    plain, encoded = header.removeprefix("attachment; ").split("; ")
    assert plain == f'filename="{fallback}"'
    assert encoded.startswith("filename*=UTF-8''") and '"' not in encoded and ";" not in encoded
    assert unquote(encoded.removeprefix("filename*=UTF-8''")) == name
