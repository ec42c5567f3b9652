"""Exporting a comparison: exactly the page's rows and cells, one line per (datapoint, run).

`export_lines()` walks the comparison with the page query itself (`queries.comparison_page`,
keyset pages), so validation, the window rule, filters and sort are the page's, and memory stays
flat however many rows: only one page is held at a time. `summary_lines()` gives one line per
(run, metric) from `queries.comparison_stats`. The writers turn either into CSV or JSONL text.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import replace

from comparisons.ids import uuid7_time
from comparisons.queries import Cell, Comparison, RowQuery, comparison_page, comparison_stats, rows_queryset

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


def export_lines(comparison: Comparison, query: RowQuery | None = None, *, page_size: int = EXPORT_PAGE_SIZE,
                 on_page=None) -> Iterator[dict]:
    """Every (datapoint, run) line of the comparison as a dict keyed by `export_columns()`.

    JSON values (input, reference, output) are compact JSON text. `on_page(n)` is called with the
    number of datapoints after each page (for progress).
    """
    query = replace(query or RowQuery(), page_size=page_size)
    metrics = [e.name for e in comparison.evaluators]
    while True:
        page = comparison_page(comparison, query)
        for row in page.rows:
            datapoint = row.datapoint
            common = {
                "datapoint_id": str(datapoint.id), "datapoint_name": datapoint.name,
                "datapoint_created_at": datapoint.created_at.isoformat(), "input": compact_json(datapoint.input),
                "reference_output": compact_json(datapoint.reference_output),
            }
            for cell in row.cells:
                inference = cell.inference if cell.state != Cell.OUT_OF_WINDOW else None
                line = {
                    **common, "in_window": cell.state != Cell.OUT_OF_WINDOW, "run_id": str(cell.run.id),
                    "run_time": uuid7_time(cell.run.id).isoformat(), "variant": cell.run.run.variant_name,
                    "variant_pinned": inference.variant_pinned if inference else None,
                    "inference_id": str(inference.id) if inference else None,
                    "output": compact_json(inference.output) if inference else None,
                    "error": inference.error if inference else None,
                    "latency_ms": inference.latency_ms if inference else None,
                    "input_tokens": inference.input_tokens if inference else None,
                    "output_tokens": inference.output_tokens if inference else None,
                    "cost": float(inference.cost) if inference and inference.cost is not None else None,
                }
                for name in metrics:
                    score = cell.scores.get(name) if inference else None
                    line[name] = score.value if score else None
                    line[f"{name}__source"] = score.source if score else None
                yield line
        if on_page is not None:
            on_page(len(page.rows))
        if page.next_after is None:
            return
        query = replace(query, after=page.next_after)


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


class _Line:
    """A file-like object whose write() returns what was written (for csv.writer → text chunks)."""

    def write(self, text):
        return text


def csv_chunks(columns: list[str], lines: Iterable[dict]) -> Iterator[str]:
    """CSV text, a header then one row per line; None is an empty cell, booleans true/false."""
    writer = csv.writer(_Line(), lineterminator="\r\n")
    yield writer.writerow(columns)
    for line in lines:
        yield writer.writerow([_csv_value(line[c]) for c in columns])


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def jsonl_chunks(columns: list[str], lines: Iterable[dict]) -> Iterator[str]:
    """One compact JSON object per line, keys in column order."""
    for line in lines:
        yield json.dumps({c: line[c] for c in columns}, ensure_ascii=False, separators=(",", ":")) + "\n"


def render(columns, lines, fmt: str) -> Iterator[str]:
    return csv_chunks(columns, lines) if fmt == "csv" else jsonl_chunks(columns, lines)


def read_csv(text: str) -> list[dict]:
    """Parse exported CSV back (for tests and tools): a list of dicts of strings."""
    return list(csv.DictReader(io.StringIO(text, newline="")))
