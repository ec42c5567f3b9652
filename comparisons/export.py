"""Exporting a comparison: exactly the page's rows and cells, one line per (datapoint, run).

`export_lines()` walks the comparison with the page query itself (`queries.comparison_page`,
keyset pages), so validation, the window rule, filters and sort are the page's, and memory stays
flat however many rows: only one page is held at a time. `summary_lines()` gives one line per
(run, metric) from `queries.comparison_stats`. The writers turn either into CSV or JSONL text.
"""

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import replace

from django.db import connection

from comparisons.ids import uuid7_time
from comparisons.queries import Comparison, RowQuery, comparison_stats, rows_after, rows_queryset

EXPORT_PAGE_SIZE = 500
BASE_COLUMNS = [
    "datapoint_id", "datapoint_name", "datapoint_created_at", "in_window", "input", "reference_output",
    "run_id", "run_time", "variant", "variant_pinned", "inference_id", "output", "error", "latency_ms",
    "input_tokens", "output_tokens", "cost",
]
SUMMARY_COLUMNS = ["run_id", "variant", "metric", "n", "mean", "ci_low", "ci_high", "delta", "delta_ci_low",
                   "delta_ci_high", "improved", "regressed", "unchanged"]


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
SELECT i.run_id::text, i.datapoint_id::text, i.id::text, i.variant_pinned, i.output, i.error, i.latency_ms,
       i.input_tokens, i.output_tokens, i.cost, w.metric, w.value, w.source
FROM comparisons_inference i
LEFT JOIN LATERAL (
    SELECT DISTINCT ON (f.metric) f.metric, f.value, f.source
    FROM comparisons_feedback f WHERE f.inference_id = i.id ORDER BY f.metric, f.id DESC
) w ON true
WHERE i.run_id = ANY(%s::uuid[]) AND i.datapoint_id = ANY(%s::uuid[])
"""


def _page_cells(run_ids, datapoint_ids) -> dict:
    """(run, datapoint) -> (inference fields, {metric: (value, source)}) for one page, in one query.

    The winning feedback is the greatest id per (inference, metric), as on the page. Arrays travel as
    single parameters, ids come back as text and rows stay tuples: an export touches millions of cells.
    """
    cells = {}
    with connection.cursor() as cursor:
        cursor.execute(CELLS_SQL, [list(run_ids), list(datapoint_ids)])
        for run_id, datapoint_id, *inference, metric, value, source in cursor.fetchall():
            cell = cells.get((run_id, datapoint_id))
            if cell is None:
                cell = cells[(run_id, datapoint_id)] = (inference, {})
            if metric is not None:
                cell[1][metric] = (value, source)
    return cells


def _compact(text):
    """jsonb as PostgreSQL prints it, re-written compactly."""
    return None if text is None else json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))


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
    no_inference = [None] * (8 + 2 * len(metrics))
    window_fields = [f"in_window_{k}" for k in range(len(runs))]
    base = rows_queryset(comparison, query)
    after = query.after
    while True:
        rows = list(rows_after(base, replace(query, after=after)).values_list(
            "id", "name", "input", "reference_output", *window_fields)[:page_size + 1])
        more = len(rows) > page_size
        rows = rows[:page_size]
        cells = _page_cells(run_ids, [row[0] for row in rows]) if rows else {}
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
                (inference_id, pinned, output, error, latency, tokens_in, tokens_out, cost), scores = cell
                head += [pinned, inference_id, _compact(output), error, latency, tokens_in, tokens_out,
                         float(cost) if cost is not None else None]
                for metric in metrics:
                    head += scores.get(metric, (None, None))
                yield head
        if on_page is not None:
            on_page(len(rows))
        if not more:
            return
        after = rows[-1][0]


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
                "unchanged": delta and delta.unchanged,
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
