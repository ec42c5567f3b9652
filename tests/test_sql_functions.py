"""The database's functions are the files in comparisons/sql/: one current file each, no leftovers."""

import pytest
from django.db import connection

from comparisons.sqlfunctions import FILES, SQL_DIR, function_body

pytestmark = pytest.mark.django_db


def live_functions() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT p.proname, p.prosrc, pg_get_functiondef(p.oid) FROM pg_proc p "
                       "JOIN pg_namespace n ON n.oid = p.pronamespace "
                       "WHERE n.nspname = current_schema() AND p.proname LIKE 'comparisons%%'")
        return {name: (source, definition) for name, source, definition in cursor.fetchall()}


def test_every_live_function_is_its_file_and_every_file_is_live():
    live = live_functions()
    assert sorted(live) == sorted(FILES), "a function without a file, or a file not applied (dead or missing)"
    assert sorted(p.stem for p in SQL_DIR.glob("*.sql")) == sorted(FILES)
    for name in FILES:
        source, definition = live[name]
        assert source == function_body(name), f"{name} in the database differs from comparisons/sql/{name}.sql"
        assert f"FUNCTION public.{name}(" in definition


def test_every_trigger_calls_a_function_from_the_files():
    with connection.cursor() as cursor:
        cursor.execute("SELECT t.tgname, p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                       "WHERE NOT t.tgisinternal AND t.tgname LIKE 'comparisons%%'")
        triggers = dict(cursor.fetchall())
    assert set(triggers.values()) <= set(FILES)
    assert set(triggers) == {
        "comparisons_inference_check", "comparisons_feedback_check", "comparisons_feedback_rescore",
        "comparisons_feedback_inserted", "comparisons_inference_check_insert", "comparisons_feedback_check_insert",
        "comparisons_datapoint_restale", "comparisons_inference_forget", "comparisons_inference_coverage_insert",
        "comparisons_inference_coverage_update", "comparisons_inference_coverage_delete",
        *(f"comparisons_{table}_changed_{event}" for table in ("datapoint", "inference", "feedback")
          for event in ("insert", "update", "delete"))}


def test_no_migration_copies_a_function_body_of_another():
    """Migrations from 0009 on apply the files; the bodies in the older ones are all different versions."""
    from pathlib import Path

    bodies = {}
    for path in sorted((Path(__file__).resolve().parent.parent / "comparisons" / "migrations").glob("0*.py")):
        text = path.read_text()
        for chunk in text.split("$$")[1::2]:
            if len(chunk) > 200:
                assert chunk not in bodies, f"{path.name} repeats a function body of {bodies.get(chunk)}"
                bodies[chunk] = path.name


def test_the_newest_sql_migration_applied_the_files_as_they_are():
    """An edited file with no migration would never reach a deployed database."""
    import importlib
    from pathlib import Path

    from comparisons.sqlfunctions import fingerprint

    migrations = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "comparisons" / "migrations")
                        .glob("0*.py"))
    recorded = [getattr(importlib.import_module(f"comparisons.migrations.{name}"), "SQL_FINGERPRINT", None)
                for name in migrations]
    newest = [value for value in recorded if value][-1]
    assert newest == fingerprint(), (
        "comparisons/sql/ changed since the newest migration that applies it: add a migration with "
        f"migrations.RunSQL(all_sql()) and SQL_FINGERPRINT = \"{fingerprint()}\"")
