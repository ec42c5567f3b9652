"""The database's functions and triggers: one current file each in `comparisons/sql/`.

Migrations apply these files (`all_sql()`), so the live definition of each function is the file's,
and `tests/test_sql_functions.py` compares the database's definitions with the files. A migration
that applies them records `SQL_FINGERPRINT = fingerprint()`; when a file changes, the test asks for
a new migration that applies them again (so deployed databases get the change too). A file holds
one `CREATE OR REPLACE FUNCTION` and, for a trigger function, the `CREATE TRIGGER` statements that
call it.
"""

import hashlib
import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"

# Dependency order: an SQL-language body is checked against the functions it calls when created.
FILES = [
    "comparisons_uuid7_ms",
    "comparisons_in_window",
    "comparisons_exact",
    "comparisons_lock_dataset",
    "comparisons_inference_check",
    "comparisons_feedback_check",
    "comparisons_scores_changed",
    "comparisons_score_changed",
    "comparisons_rescore",
    "comparisons_feedback_rescore",
    "comparisons_feedback_inserted",
    "comparisons_datapoint_restale",
    "comparisons_inference_forget",
    "comparisons_inference_coverage",
    "comparisons_true_window_scores",
    "comparisons_true_run_summaries",
    "comparisons_true_run_coverage",
    "comparisons_true_paired_summaries",
    "comparisons_refresh_scores",
    "comparisons_data_changed",
    "comparisons_error_class",
]

_BODY = re.compile(r"\bAS \$\$(.*?)\$\$;", re.DOTALL)


def sql_source(name: str) -> str:
    """The text of `comparisons/sql/<name>.sql`."""
    return (SQL_DIR / f"{name}.sql").read_text()


def all_sql() -> str:
    """Every file, in dependency order: what a migration runs to make the database current."""
    return "\n".join(sql_source(name) for name in FILES)


def function_body(name: str) -> str:
    """The body between the `$$` of the file's function: what PostgreSQL keeps as `prosrc`."""
    return _BODY.search(sql_source(name)).group(1)


def fingerprint() -> str:
    """A hash of every file's text, in order: what the newest SQL-applying migration must record."""
    return hashlib.sha256(all_sql().encode()).hexdigest()[:16]
