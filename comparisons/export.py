"""Exporting a comparison: exactly the page's rows and cells, one line per (datapoint, run).

`export_rows()` walks the comparison with the page's rows query itself (`queries.rows_queryset`
and its keyset cursor), so validation, the window rule, filters and sort are the page's, and memory
stays flat however many rows: a few pages of 1,000 datapoints are held at a time (the one being
written and up to two prefetched). `summary_lines()` gives one line per
(run, metric) from `queries.comparison_stats`. The writers turn either into CSV or JSONL text.
"""

import csv
import json
import queue
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from urllib.parse import quote

from django.db import connection, connections

from comparisons.ids import uuid7_time
from comparisons.queries import (
    WINNING_FEEDBACK_SQL,
    Comparison,
    RowQuery,
    comparison_stats,
    rows_after,
    rows_queryset,
)

EXPORT_PAGE_SIZE = 1000
BASE_COLUMNS = [
    "datapoint_id", "datapoint_name", "datapoint_created_at", "in_window", "input", "reference_output",
    "run_id", "run_time", "variant", "variant_pinned", "inference_id", "output", "error", "latency_ms",
    "input_tokens", "output_tokens", "cost",
]
SUMMARY_COLUMNS = ["run_id", "variant", "metric", "n", "mean", "ci_low", "ci_high", "delta", "delta_ci_low",
                   "delta_ci_high", "improved", "regressed", "unchanged", "human_overrides"]


def attachment_disposition(filename: str) -> str:
    """A Content-Disposition header for downloading `filename`, whatever it holds (RFC 6266).

    `filename` is a plain ASCII fallback, anything but letters, digits and . _ - replaced by "_" (and
    none of . _ - first or last), so no quote, semicolon or line break can end or split the header;
    `filename*` carries the real name, percent-encoded UTF-8, for every current browser.
    """
    fallback = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._-") or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def compact_json(value) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def export_columns(comparison: Comparison) -> list[str]:
    columns = list(BASE_COLUMNS)
    for evaluator in comparison.evaluators:
        columns += [evaluator.name, f"{evaluator.name}__source"]
    return columns


def count_rows(comparison: Comparison, query: RowQuery) -> int:
    """How many datapoints the export will cover (for progress)."""
    query.validate(comparison)
    return rows_queryset(comparison, query).order_by().count()


CELLS_SQL = """
SELECT i.run_id::text, i.datapoint_id::text, i.id::text, i.variant_pinned, i.output::text, i.error, i.latency_ms,
       i.input_tokens, i.output_tokens, i.cost::float8{scores}
FROM unnest(%(datapoints)s::uuid[]) AS page (datapoint_id)
CROSS JOIN unnest(%(runs)s::uuid[]) AS selected (run_id)
JOIN comparisons_inference i ON i.run_id = selected.run_id AND i.datapoint_id = page.datapoint_id
LEFT JOIN LATERAL (
    SELECT {pivot} FROM ({winning}) winners
) w ON true
"""


def _cells_query(metrics: list[str]) -> tuple[str, dict]:
    """The page's inferences with one (value, source) column pair per metric, in export column order.

    Each (datapoint, run) is one probe of the unique (run, datapoint) index, and each inference's
    winning feedback one range of `feedback_latest_idx` (all its metrics, pivoted to columns).
    """
    pivot = ", ".join(f"max(winners.value) FILTER (WHERE winners.metric = %(metric{j})s) AS value{j}, "
                      f"max(winners.source) FILTER (WHERE winners.metric = %(metric{j})s) AS source{j}"
                      for j in range(len(metrics))) or "NULL"
    sql = CELLS_SQL.format(scores="".join(f", w.value{j}, w.source{j}" for j in range(len(metrics))),
                           pivot=pivot, winning=WINNING_FEEDBACK_SQL.format(inference="i.id"))
    return sql, {f"metric{j}": metric for j, metric in enumerate(metrics)}


def _page_cells(sql: str, params: dict, run_ids, datapoint_ids) -> dict:
    """(run, datapoint) -> the inference's export columns, for one page in one query.

    The winning feedback is the greatest id per (inference, metric), as on the page. Arrays travel as
    single parameters, ids come back as text and rows stay tuples: an export touches millions of cells.
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "runs": list(run_ids), "datapoints": list(datapoint_ids)})
        return {(row[0], row[1]): row[2:] for row in cursor.fetchall()}


def _compact(text):
    """jsonb as PostgreSQL prints it, written compactly. Scalars (an LLM's text output is a JSON
    string) already are: PostgreSQL escapes strings exactly as json.dumps(ensure_ascii=False)."""
    if text is None or text[0] not in "{[":
        return text
    return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))


PREFETCH_PAGES = 2


def _prefetched(fetch_rows, fetch_cells, first, depth: int = PREFETCH_PAGES):
    """Pages of (rows, cells): `fetch_rows(after)` gives a page's rows and the cursor of the next one
    (None at the end), `fetch_cells(rows)` their cells.

    Outside a transaction, worker threads with their own database connections fetch up to `depth`
    pages ahead: the next page's rows as soon as the cursor is known, the cells of several pages
    at once, so PostgreSQL works on later pages while this thread writes the current one. Inside a
    transaction (as in tests) a second connection could not see the transaction's own rows, so the
    pages are fetched here, in order.
    """
    if connection.in_atomic_block:
        after = first
        while True:
            rows, after = fetch_rows(after)
            yield rows, fetch_cells(rows)
            if after is None:
                return
    tasks = queue.SimpleQueue()

    def work():
        try:
            while (task := tasks.get()) is not None:
                future, function, argument = task
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function(argument))
                    except BaseException as error:  # handed to the thread that waits for it
                        future.set_exception(error)
        finally:
            connections.close_all()  # this worker's own connection

    def submit(function, argument) -> Future:
        future = Future()
        tasks.put((future, function, argument))
        return future

    workers = [threading.Thread(target=work, name=f"export-prefetch-{i}", daemon=True) for i in range(depth + 1)]
    for worker in workers:
        worker.start()
    try:
        next_rows = submit(fetch_rows, first)
        pending = deque()
        while True:
            while next_rows is not None and len(pending) < depth:
                rows, after = next_rows.result()
                pending.append((rows, submit(fetch_cells, rows)))
                next_rows = submit(fetch_rows, after) if after is not None else None
            if not pending:
                return
            rows, cells = pending.popleft()
            yield rows, cells.result()
    finally:
        for _ in workers:
            tasks.put(None)
        for worker in workers:
            worker.join()


def export_rows(comparison: Comparison, query: RowQuery | None = None, *, page_size: int = EXPORT_PAGE_SIZE,
                on_page=None) -> Iterator[list]:
    """Every (datapoint, run) line of the comparison as a list in `export_columns()` order.

    The rows are the page's own (`rows_queryset` and its keyset cursor: same window, filters and
    sort), fetched `page_size` datapoints at a time so memory stays flat. JSON values (input,
    reference, output) are compact JSON text. `on_page(n)` is called with each page's datapoint count.
    """
    query = replace(query or RowQuery(), page_size=page_size)
    query.validate(comparison)
    runs = comparison.runs
    run_ids = [str(r.id) for r in runs]
    run_meta = [[str(r.id), uuid7_time(r.id).isoformat(), r.run.variant_name] for r in runs]
    metrics = [e.name for e in comparison.evaluators]
    cells_sql, cells_params = _cells_query(metrics)
    no_inference = [None] * (8 + 2 * len(metrics))
    window_fields = [f"in_window_{k}" for k in range(len(runs))]
    base = rows_queryset(comparison, query)

    def fetch_rows(after):
        rows = list(rows_after(base, replace(query, after=after)).values_list(
            "id", "name", "input", "reference_output", *window_fields)[:page_size + 1])
        return rows[:page_size], (rows[page_size - 1][0] if len(rows) > page_size else None)

    def fetch_cells(rows):
        return _page_cells(cells_sql, cells_params, run_ids, [row[0] for row in rows]) if rows else {}

    for rows, cells in _prefetched(fetch_rows, fetch_cells, query.after):
        for datapoint_uuid, name, input, reference, *in_window in rows:
            datapoint_id = str(datapoint_uuid)
            created = uuid7_time(datapoint_uuid).isoformat()
            input_json, reference_json = compact_json(input), compact_json(reference)
            for k, run_id in enumerate(run_ids):
                head = [datapoint_id, name, created, in_window[k], input_json, reference_json, *run_meta[k]]
                cell = cells.get((run_id, datapoint_id)) if in_window[k] else None
                if cell is None:
                    yield head + no_inference
                    continue
                inference_id, pinned, output, *rest = cell
                head += [pinned, inference_id, _compact(output), *rest]
                yield head
        if on_page is not None:
            on_page(len(rows))


def export_lines(comparison: Comparison, query: RowQuery | None = None, **options) -> Iterator[dict]:
    """`export_rows` as dicts keyed by `export_columns()`."""
    columns = export_columns(comparison)
    for row in export_rows(comparison, query, **options):
        yield dict(zip(columns, row, strict=True))


def summary_lines(comparison: Comparison) -> Iterator[dict]:
    """One line per (run, metric): n, mean and CI; Δ vs the baseline and counts for other runs."""
    stats = comparison_stats(comparison)
    for run in comparison.runs:
        for summary in stats.metrics:
            stat = next(s for s in summary.per_run if s.run.id == run.id)
            delta = stat.delta
            yield {
                "run_id": str(run.id), "variant": run.run.variant_name, "metric": summary.evaluator.name,
                "n": stat.n, "mean": stat.mean, "ci_low": stat.ci and stat.ci.low, "ci_high": stat.ci and stat.ci.high,
                "delta": delta and delta.mean, "delta_ci_low": delta and delta.ci and delta.ci.low,
                "delta_ci_high": delta and delta.ci and delta.ci.high,
                "improved": delta and delta.improved, "regressed": delta and delta.regressed,
                "unchanged": delta and delta.unchanged, "human_overrides": stat.overrides,
            }


class _Buffer:
    """A write-only buffer for csv.writer whose contents are taken a chunk at a time."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


BOOLEAN_COLUMNS = {"in_window", "variant_pinned"}
CHUNK_ROWS = 1000


def csv_chunks(columns: list[str], rows: Iterable[list]) -> Iterator[str]:
    """CSV text, a header then one line per row; None is an empty cell, booleans true/false."""
    buffer = _Buffer()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    flags = [i for i, column in enumerate(columns) if column in BOOLEAN_COLUMNS]
    pending = 0
    for row in rows:
        for i in flags:
            if row[i] is not None:
                row[i] = "true" if row[i] else "false"
        writer.writerow(row)
        pending += 1
        if pending == CHUNK_ROWS:
            yield buffer.take()
            pending = 0
    yield buffer.take()


def jsonl_chunks(columns: list[str], rows: Iterable[list]) -> Iterator[str]:
    """One compact JSON object per line, keys in column order."""
    for row in rows:
        yield json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, separators=(",", ":")) + "\n"


def render(columns, rows, fmt: str) -> Iterator[str]:
    """CSV or JSONL text of `rows` (lists in `columns` order)."""
    return csv_chunks(columns, rows) if fmt == "csv" else jsonl_chunks(columns, rows)


def summary_rows(comparison: Comparison) -> Iterator[list]:
    """`summary_lines` as lists in SUMMARY_COLUMNS order."""
    for line in summary_lines(comparison):
        yield [line[c] for c in SUMMARY_COLUMNS]
