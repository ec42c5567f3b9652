"""Reversible migrations, release manifests and `manage.py rollback`, on real PostgreSQL databases.

Each test gets its own database (a copy of a template that was migrated and given the demo data
once), and drives `manage.py` in subprocesses against it, so moving the schema back and forth never
touches the test suite's shared database.
"""

import hashlib
import json
import os
import subprocess
import sys
import uuid
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS_COMPARISONS = "0008_drop_redundant_fk_indexes"
DATA_TABLES = ("comparisons_evaluation", "comparisons_evaluationrun", "comparisons_datapoint",
               "comparisons_inference", "comparisons_feedback", "comparisons_evaluator")


def server_params() -> dict:
    db = settings.DATABASES["default"]
    return {"host": db["HOST"] or None, "port": db["PORT"] or None, "user": db["USER"] or None,
            "password": db["PASSWORD"] or None}


def database_url(name: str) -> str:
    params = server_params()
    auth = quote(params["user"] or "") + (f":{quote(params['password'])}" if params["password"] else "")
    host, port = params["host"] or "", params["port"] or ""
    if host.startswith("/"):  # a socket directory
        return f"postgresql://{auth}@/{name}?host={quote(host)}" + (f"&port={port}" if port else "")
    return f"postgresql://{auth}@{host or 'localhost'}{':' + str(port) if port else ''}/{name}"


def admin_sql(statement: str) -> None:
    with psycopg.connect(dbname="postgres", autocommit=True, **server_params()) as conn:
        conn.execute(statement)


def query(name: str, sql: str) -> list[tuple]:
    with psycopg.connect(dbname=name, **server_params()) as conn:
        return conn.execute(sql).fetchall()


def manage(name: str, *args: str, check: bool = True, releases_dir: Path | None = None):
    env = {**os.environ, "DATABASE_URL": database_url(name), "DJANGO_SETTINGS_MODULE": "evalcompare.test_settings"}
    if releases_dir is not None:
        env["EVALCOMPARE_RELEASES_DIR"] = str(releases_dir)
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def counts(name: str) -> dict[str, int]:
    return {table: query(name, f"SELECT count(*) FROM {table}")[0][0] for table in DATA_TABLES}


def applied(name: str, app: str) -> list[str]:
    return [row[0] for row in query(name, f"SELECT name FROM django_migrations WHERE app = '{app}' ORDER BY name")]


@pytest.fixture(scope="module")
def demo_template():
    """A database at the current migrations with the demo data, to copy for each test."""
    name = f"evalcompare_rollback_template_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        manage(name, "migrate", "--noinput")
        manage(name, "load_demo")
        yield name
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def demo_database(demo_template):
    name = f"evalcompare_rollback_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{demo_template}"')
    yield name
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SCHEMA_QUERIES = {
    "functions": "SELECT p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc) FROM pg_proc p "
                 "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE NOT tgisinternal ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
               "WHERE table_schema = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
}


def schema(name: str) -> dict[str, list[tuple]]:
    """What a migration can change: functions, triggers, indexes, columns and constraints."""
    return {kind: query(name, sql) for kind, sql in SCHEMA_QUERIES.items()}


@pytest.fixture
def empty_database():
    name = f"evalcompare_rollback_empty_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    yield name
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def comparison_page(name: str) -> tuple[int, str]:
    """GET the demo's comparison of its two oldest support_answers runs as the demo user, in a subprocess."""
    script = (
        "from django.test import Client\n"
        "from django.test.utils import setup_test_environment\n"
        "from comparisons.models import EvaluationRun\n"
        "setup_test_environment()\n"
        "from django.contrib.auth import get_user_model\n"
        "client = Client()\n"
        "client.force_login(get_user_model().objects.get(username='demo'))\n"
        "runs = EvaluationRun.objects.filter(evaluation__name='support_answers').order_by('id')[:2]\n"
        "ids = ','.join(str(run.id) for run in runs)\n"
        "response = client.get(f'/evaluations/support_answers/?run_ids={ids}')\n"
        "print('STATUS', response.status_code)\n"
        "print(response.content.decode())\n"
    )
    output = manage(name, "shell", "--no-imports", "-c", script).stdout
    status, _, body = output.partition("STATUS ")[2].partition("\n")
    return int(status), body


def test_every_comparisons_migration_reverses_to_zero_with_data_and_forward_again(demo_database):
    loaded = counts(demo_database)
    assert loaded["comparisons_feedback"] > 0 and loaded["comparisons_inference"] > 0

    manage(demo_database, "migrate", "comparisons", "zero", "--noinput")

    assert applied(demo_database, "comparisons") == []
    assert query(demo_database, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'comparisons\\_%'")[0][0] == 0
    # Going back removes the database functions too: nothing of comparisons' is left behind.
    assert query(demo_database, "SELECT proname FROM pg_proc WHERE proname LIKE 'comparisons\\_%'") == []

    manage(demo_database, "migrate", "--noinput")
    manage(demo_database, "load_demo")

    assert counts(demo_database) == loaded
    assert "No drift" in manage(demo_database, "verify_scores").stdout


def test_rollback_to_a_previous_release_keeps_the_data_and_forward_again_serves_the_pages(demo_database, tmp_path,
                                                                                          empty_database):
    current = call_command_json("release_manifest", "0.2.0")["migrations"]
    previous = {**current, "comparisons": PREVIOUS_COMPARISONS}
    (tmp_path / "0.1.0.json").write_text(json.dumps({"version": "0.1.0", "image": "evalcompare:0.1.0",
                                                     "image_id": "sha256:0123", "migrations": previous}))
    before = counts(demo_database)

    result = manage(demo_database, "rollback", "0.1.0", releases_dir=tmp_path)

    assert applied(demo_database, "comparisons")[-1] == PREVIOUS_COMPARISONS
    assert "Now redeploy the image evalcompare:0.1.0 (image id sha256:0123)" in result.stdout
    assert "comparisons → 0008_drop_redundant_fk_indexes" in result.stdout
    assert counts(demo_database) == before
    # The schema is the old one: evaluator ranges came with 0009, the run heartbeat with 0011.
    columns = {row[0] for row in query(demo_database, "SELECT column_name FROM information_schema.columns "
                                                      "WHERE table_name = 'comparisons_evaluator'")}
    assert "name" in columns and "min_value" not in columns
    # Exactly the schema of a database migrated forward to that release: every reverse operation
    # (SQL functions and triggers of 0002-0007 put back, indexes re-created) undid its migration.
    forward = "".join(f"call_command('migrate', {app!r}, {name!r}, interactive=False)\n"
                      for app, name in previous.items())
    manage(empty_database, "shell", "--no-imports", "-c", f"from django.core.management import call_command\n{forward}")
    rolled_back, forward = schema(demo_database), schema(empty_database)
    for kind in SCHEMA_QUERIES:
        assert set(rolled_back[kind]) - set(forward[kind]) == set(), kind
        assert set(forward[kind]) - set(rolled_back[kind]) == set(), kind

    again = manage(demo_database, "rollback", "0.1.0", check=False, releases_dir=tmp_path)
    assert again.returncode == 2
    assert "already at release 0.1.0" in again.stderr

    (tmp_path / "0.2.0.json").write_text(json.dumps({"version": "0.2.0", "migrations": current}))
    behind = manage(demo_database, "rollback", "0.2.0", check=False, releases_dir=tmp_path)
    assert behind.returncode == 2
    assert f"behind release 0.2.0: comparisons.{current['comparisons']} is not applied" in behind.stderr

    manage(demo_database, "migrate", "--noinput")

    assert applied(demo_database, "comparisons")[-1] == current["comparisons"]
    assert counts(demo_database) == before
    assert "No drift" in manage(demo_database, "verify_scores").stdout
    status, body = comparison_page(demo_database)
    assert status == 200
    assert "gpt-4o-mini-v1" in body and "gpt-4o-mini-cot" in body
    assert body.count('class="dp-name"') == 100  # a full first page of datapoint rows


def test_rollback_dry_run_lists_the_steps_and_changes_nothing(demo_database, tmp_path):
    current = call_command_json("release_manifest", "0.2.0")["migrations"]
    (tmp_path / "0.1.0.json").write_text(json.dumps(
        {"version": "0.1.0", "migrations": {**current, "comparisons": "0009_exact_kept_tables"}}))

    result = manage(demo_database, "rollback", "0.1.0", "--dry-run", releases_dir=tmp_path)

    assert ("unapply comparisons.0011_run_heartbeat\n  unapply comparisons.0010_name_validator_whole_string"
            in result.stdout)
    assert applied(demo_database, "comparisons")[-1] == current["comparisons"]


def call_command_json(*args) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def test_manifest_names_the_last_migration_of_every_app_from_the_graph(tmp_path):
    wheel = tmp_path / "evalcompare-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")

    manifest = call_command_json("release_manifest", "9.9.9", "--commit", "abc123", "--image-id", "sha256:feed",
                                 "--wheel", str(wheel))

    newest_file = sorted(p.stem for p in (ROOT / "comparisons" / "migrations").glob("0*.py"))[-1]
    assert manifest["migrations"]["comparisons"] == newest_file
    assert manifest["migrations"]["auth"] == "0012_alter_user_first_name_max_length"
    assert set(manifest["migrations"]) >= {"admin", "auth", "contenttypes", "sessions", "comparisons"}
    assert manifest["version"] == "9.9.9" and manifest["git_commit"] == "abc123"
    assert manifest["image"] == "evalcompare:9.9.9" and manifest["image_id"] == "sha256:feed"
    assert manifest["wheel"] == wheel.name
    assert manifest["wheel_sha256"] == hashlib.sha256(b"not really a wheel").hexdigest()


def test_manifest_written_to_a_file_round_trips(tmp_path):
    target = tmp_path / "releases" / "1.2.3.json"
    call_command("release_manifest", "1.2.3", "--output", str(target), stdout=StringIO())
    assert json.loads(target.read_text())["version"] == "1.2.3"


def test_rollback_refuses_without_a_manifest(tmp_path):
    (tmp_path / "0.0.1.json").write_text("{}")
    with pytest.raises(CommandError, match=r"No manifest for release 0\.1\.0: .*0\.1\.0\.json does not exist "
                                           r"\(manifests there: 0\.0\.1\)"):
        call_command("rollback", "0.1.0", "--releases-dir", str(tmp_path))


def test_rollback_refuses_a_manifest_without_migrations_or_of_another_version(tmp_path):
    (tmp_path / "0.1.0.json").write_text(json.dumps({"version": "0.1.0"}))
    with pytest.raises(CommandError, match="has no 'migrations' object"):
        call_command("rollback", "0.1.0", "--releases-dir", str(tmp_path))
    (tmp_path / "0.1.0.json").write_text(json.dumps({"version": "0.0.9", "migrations": {}}))
    with pytest.raises(CommandError, match="is for version '0.0.9', not 0.1.0"):
        call_command("rollback", "0.1.0", "--releases-dir", str(tmp_path))


@pytest.mark.django_db
def test_rollback_refuses_a_migration_this_code_does_not_have(tmp_path):
    (tmp_path / "0.1.0.json").write_text(json.dumps({"version": "0.1.0",
                                                     "migrations": {"comparisons": "0099_from_the_future"}}))
    with pytest.raises(CommandError, match="ends app 'comparisons' at migration 0099_from_the_future, which this "
                                           "code does not have"):
        call_command("rollback", "0.1.0", "--releases-dir", str(tmp_path))


@pytest.mark.django_db
def test_an_app_the_release_did_not_have_goes_to_zero_after_its_dependents(tmp_path):
    current = call_command_json("release_manifest", "0.2.0")["migrations"]
    without_admin = {app: name for app, name in current.items() if app != "admin"}
    (tmp_path / "0.1.0.json").write_text(json.dumps({"version": "0.1.0", "migrations": without_admin}))
    out = StringIO()

    call_command("rollback", "0.1.0", "--dry-run", "--releases-dir", str(tmp_path), stdout=out)

    assert ("unapply admin.0003_logentry_add_action_flag_choices\n  unapply admin.0002_logentry_remove_auto_add\n"
            "  unapply admin.0001_initial\nleaving") in out.getvalue()
    assert "admin → zero" in out.getvalue()


@pytest.mark.django_db
def test_a_manifest_that_unapplying_would_contradict_is_refused(tmp_path):
    """Without contenttypes (→ zero), auth and everything on it would go too, yet the manifest keeps them."""
    current = call_command_json("release_manifest", "0.2.0")["migrations"]
    inconsistent = {app: name for app, name in current.items() if app != "contenttypes"}
    (tmp_path / "0.1.0.json").write_text(json.dumps({"version": "0.1.0", "migrations": inconsistent}))

    with pytest.raises(CommandError, match=r"Release 0\.1\.0's manifest is inconsistent: going back to it unapplies "
                                           r"\w+\.\w+, which its \w+\.\w+ depends on"):
        call_command("rollback", "0.1.0", "--dry-run", "--releases-dir", str(tmp_path), stdout=StringIO())
