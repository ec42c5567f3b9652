"""Checking the kept tables against the raw rows, and repairing them (`manage.py verify_scores`).

The truth is recomputed by the database's own functions (comparisons/sql/comparisons_true_*.sql,
the same ones a rebuild uses), and each kept table is compared with it row by row: any key present
on one side only, or with a different value, is a drift. Sums are numeric, so "equal" means equal.
"""

from dataclasses import dataclass

from django.db import connection, transaction

# Per kept table: its columns, its key, and the truth function that recomputes it. A missing row and
# a row of zeros mean the same (a run whose only score went away keeps a row with n = 0).
TABLES = {
    "WindowScore": ("comparisons_windowscore", "comparisons_true_window_scores",
                    ["run_id", "metric", "datapoint_id"], ["value", "human"], False),
    "RunMetricSummary": ("comparisons_runmetricsummary", "comparisons_true_run_summaries",
                         ["run_id", "metric"], ["n", "total", "total_sq", "overrides"], True),
    "RunCoverage": ("comparisons_runcoverage", "comparisons_true_run_coverage",
                    ["run_id"], ["inferences", "errors", "pinned"], True),
    "PairedSummary": ("comparisons_pairedsummary", "comparisons_true_paired_summaries",
                      ["baseline_id", "run_id", "metric"], ["n", "total", "total_sq", "higher", "lower", "same"], True),
}


@dataclass(frozen=True)
class Drift:
    """One kept row that differs from the truth."""

    table: str
    key: tuple
    kept: tuple | None  # None: the kept table has no such row
    true: tuple | None  # None: there should be no such row

    def __str__(self):
        key = ", ".join(str(part) for part in self.key)
        return f"{self.table} ({key}): kept {_show(self.kept)}, true {_show(self.true)}"


def _show(values) -> str:
    return "(no row)" if values is None else "(" + ", ".join(str(v) for v in values) + ")"


def _scope_filter(table_alias: str, key: list[str]) -> str:
    """Limit a kept table to the runs in scope (%(runs)s, NULL for all)."""
    columns = [c for c in key if c in ("run_id", "baseline_id")]
    return "(%(runs)s::uuid[] IS NULL OR " + " OR ".join(f"{table_alias}.{c} = ANY(%(runs)s::uuid[])"
                                                            for c in columns) + ")"


def find_drift(run_ids=None, *, limit: int = 1000) -> list[Drift]:
    """Every kept row of these runs (None: all) that differs from a recomputation, up to `limit` per table."""
    drifts = []
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:  # one snapshot for kept tables and truth: a concurrent writer cannot look like drift
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SET LOCAL extra_float_digits = 1")  # comparisons_exact, as the writers use it
        for name, (table, truth, key, values, zero_is_absent) in TABLES.items():
            kept_values = ", ".join(f"k.{c}" for c in values)
            true_values = ", ".join(f"t.{c}" for c in values)
            join = " AND ".join(f"k.{c} = t.{c}" for c in key)
            differs = " OR ".join(f"k.{c} IS DISTINCT FROM t.{c}" for c in values)
            if zero_is_absent:
                differs = " OR ".join(f"coalesce(k.{c}, 0) <> coalesce(t.{c}, 0)" for c in values)
            cursor.execute(
                f"SELECT {', '.join(f'coalesce(k.{c}, t.{c})' for c in key)}, k.{key[0]} IS NOT NULL, "
                f"t.{key[0]} IS NOT NULL, {kept_values}, {true_values} "
                f"FROM (SELECT * FROM {table} k WHERE {_scope_filter('k', key)}) k "
                f"FULL JOIN {truth}(%(runs)s::uuid[]) t ON {join} "
                f"WHERE k.{key[0]} IS NULL OR t.{key[0]} IS NULL OR {differs} "
                f"ORDER BY 1 LIMIT %(limit)s",
                {"runs": list(run_ids) if run_ids is not None else None, "limit": limit},
            )
            for row in cursor.fetchall():
                row_key, has_kept, has_true = row[:len(key)], row[len(key)], row[len(key) + 1]
                kept = row[len(key) + 2:len(key) + 2 + len(values)]
                true = row[len(key) + 2 + len(values):]
                if zero_is_absent:
                    if not has_kept:
                        if not any(true):
                            continue
                        kept = None
                    if not has_true:
                        if not any(kept):
                            continue
                        true = None
                else:
                    kept = kept if has_kept else None
                    true = true if has_true else None
                drifts.append(Drift(name, tuple(row_key), kept, true))
    return drifts


def repair(run_ids=None) -> None:
    """Rebuild the kept tables of these runs (None: all) from the raw rows, in one transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_refresh_scores(%s::uuid[])",
                       [list(run_ids) if run_ids is not None else None])
