import gc
import os
import sys
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from comparisons.export import (
    SUMMARY_COLUMNS,
    count_rows,
    export_columns,
    export_rows,
    render,
    summary_rows,
)
from comparisons.queries import ComparisonError, RowFilter, RowQuery, RowSort, parse_run_ids, resolve_comparison


class Command(BaseCommand):
    help = ("Export a comparison as CSV or JSONL: exactly the comparison page's rows and cells, one line per "
            "(datapoint, run), or with --summary one line per (run, metric).")

    def add_arguments(self, parser):
        parser.add_argument("evaluation")
        parser.add_argument("--run-ids", required=True, help="comma-separated run ids; the first is the baseline")
        parser.add_argument("--format", choices=["csv", "jsonl"], help="default: from --output's extension, else csv")
        parser.add_argument("--output", default="-", help="a file path, or - for standard output (default)")
        parser.add_argument("--filter", default="", choices=[k for k, _ in RowFilter.CHOICES],
                            help="only regressed / improved / differs / missing rows, as on the page")
        parser.add_argument("--metric", default="", help="the metric for --filter regressed|improved and Δ sorts")
        parser.add_argument("--sort", default=RowSort.NEWEST, choices=[k for k, _ in RowSort.CHOICES])
        parser.add_argument("--summary", action="store_true", help="one line per (run, metric) instead")
        parser.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
        parser.add_argument("--bom", action="store_true", help="start CSV with a UTF-8 BOM (for Excel on Windows)")

    def handle(self, *args, **options):
        output = options["output"]
        fmt = options["format"] or ("jsonl" if output.endswith((".jsonl", ".ndjson")) else "csv")
        try:
            comparison = resolve_comparison(options["evaluation"], parse_run_ids(options["run_ids"]))
            query = RowQuery(filter=options["filter"], metric=options["metric"], sort=options["sort"])
            if options["summary"]:
                columns, lines, total = SUMMARY_COLUMNS, summary_rows(comparison), None
            else:
                query.validate(comparison)
                columns = export_columns(comparison)
                show_progress = options["progress"] or sys.stderr.isatty()
                total = count_rows(comparison, query) if show_progress else None
                bar = tqdm(total=total, file=sys.stderr, unit="datapoint", disable=not show_progress)
                lines = export_rows(comparison, query, on_page=bar.update)
        except ComparisonError as error:
            raise CommandError(error.message, returncode=2) from error

        # Every line is a handful of short-lived lists and strings that reference counting frees at
        # once; the cyclic collector would only rescan them (~10% of an export's time). It is put
        # back when the command returns.
        gc.disable()
        try:
            self._write(output, render(columns, lines, fmt), fmt, options)
        finally:
            gc.enable()

    def _write(self, output, chunks, fmt, options):
        if output == "-":
            if options["bom"] and fmt == "csv":
                self.stdout.write("\ufeff", ending="")
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            self.stdout.flush()
            return
        self._write_atomically(Path(output), chunks, bom=options["bom"] and fmt == "csv")
        self.stderr.write(f"Wrote {output} ({fmt}).")

    def _write_atomically(self, path: Path, chunks, *, bom: bool):
        """Write beside the target and rename at the end: a failure never leaves a partial file there.

        Only regular files are replaced that way; a device or pipe (e.g. /dev/null) is written as is —
        renaming over it would replace the device itself.
        """
        encoding = "utf-8-sig" if bom else "utf-8"
        if path.exists() and not path.is_file():
            with path.open("w", encoding=encoding, newline="") as file:
                for chunk in chunks:
                    file.write(chunk)
            return
        if not path.parent.exists():
            raise CommandError(f"The folder {path.parent} does not exist.", returncode=2)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(handle, "w", encoding=encoding, newline="") as file:
                for chunk in chunks:
                    file.write(chunk)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
