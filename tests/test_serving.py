"""Production serving: settings from the environment, the connection pool, Cache-Control, and a real
gunicorn (`evalcompare serve`, DEBUG off) serving pages with their collected, hashed static files."""

import json
import subprocess
import sys
import threading

import httpx
import pytest
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper

import evalcompare
from comparisons.benchmark import database_url
from tests.factories import DatapointFactory, FeedbackFactory, InferenceFactory, RunFactory, at
from tests.serving import (
    ROOT,
    assert_serves_hashed_static_files,
    gunicorn,
    log_in,
    production_environment,
    run,
)

EVALCOMPARE = [sys.executable, "-m", "evalcompare.cli"]
SHOW_DATABASE = ("from django.conf import settings; import json; "
                 "print(json.dumps(settings.DATABASES['default'], default=str))")


def settings_process(code: str, **env: str) -> subprocess.CompletedProcess:
    """Python with the production settings loaded (through the `evalcompare` command's settings check)."""
    environment = production_environment("", ROOT / "unused-static-root", **env)
    environment = {key: value for key, value in environment.items() if value != ""}
    return subprocess.run([sys.executable, "-c", "from evalcompare.cli import check_settings; check_settings(); "
                           + code], env=environment, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_any_postgresql_url_with_or_without_options_and_the_pool_from_the_environment():
    plain = settings_process(SHOW_DATABASE, DATABASE_URL="postgresql://user@db:5432/evalcompare")
    assert plain.returncode == 0, plain.stderr
    database = json.loads(plain.stdout)
    assert (database["HOST"], database["PORT"], database["NAME"], database["USER"]) == ("db", 5432, "evalcompare",
                                                                                         "user")
    # The pool's documented default size; a pool needs CONN_MAX_AGE 0.
    assert database["OPTIONS"]["pool"]["max_size"] == 4 and database["CONN_MAX_AGE"] == 0

    options = settings_process(SHOW_DATABASE, DATABASE_POOL_SIZE="9",
                               DATABASE_URL="postgres://u:p%40ss@/evalcompare?host=/run/postgresql&sslmode=prefer")
    assert options.returncode == 0, options.stderr
    database = json.loads(options.stdout)
    assert (database["HOST"], database["PASSWORD"]) == ("/run/postgresql", "p@ss")
    assert database["OPTIONS"]["sslmode"] == "prefer" and database["OPTIONS"]["pool"]["max_size"] == 9

    no_pool = settings_process(SHOW_DATABASE, DATABASE_POOL_SIZE="0", DATABASE_URL="postgresql://db/evalcompare")
    database = json.loads(no_pool.stdout)
    assert "pool" not in database["OPTIONS"] and database["CONN_MAX_AGE"] == 60


@pytest.mark.parametrize(("env", "message"), [
    ({}, "DATABASE_URL is not set. Set DATABASE_URL to a PostgreSQL URL (postgresql://user:password@host:5432/name), "
         "or EVALCOMPARE_EMBEDDED_DB=1 (or DEBUG=1) to start the embedded development PostgreSQL."),
    ({"DATABASE_URL": "mysql://db/evalcompare"}, "DATABASE_URL must be a PostgreSQL URL"),
    ({"DATABASE_URL": "postgresql://db/e", "DATABASE_POOL_SIZE": "four"},
     "DATABASE_POOL_SIZE must be a whole number ≥ 0 (got 'four')."),
])
def test_a_missing_or_bad_database_setting_is_one_clear_line(env, message):
    for command in (EVALCOMPARE + ["check"], [sys.executable, "manage.py", "check"]):
        environment = {key: value for key, value in production_environment("", ROOT / "static").items()
                       if key != "DATABASE_URL"}
        result = subprocess.run(command, env={**environment, **env}, cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY must be a whole number ≥ 1 (got 'many')."),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be a whole number ≥ 1 (got '0')."),
    ({"PORT": "99999"}, "PORT must be a whole number between 1 and 65535 (got '99999')."),
])
def test_serve_refuses_bad_server_settings_clearly(env, message, tmp_path):
    environment = production_environment("postgresql://db/evalcompare", tmp_path, **env)
    result = subprocess.run(EVALCOMPARE + ["serve"], env=environment, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_version_and_management_commands_through_the_evalcompare_command(tmp_path):
    environment = production_environment(database_url(), tmp_path)
    assert run(EVALCOMPARE + ["--version"], environment).stdout.strip() == evalcompare.__version__
    assert "System check identified no issues" in run(EVALCOMPARE + ["check"], environment).stdout
    usage = run(EVALCOMPARE + ["help"], environment).stdout
    assert "evalcompare serve [gunicorn args]" in usage and "load_demo" in usage


@pytest.mark.django_db
def test_the_pool_lends_at_most_its_size_to_concurrent_requests():
    """Ten threads of one process query at once through the pool of the default settings (size 4): the
    server sees at most 4 connections. The pool is the default database's, under an alias of its own
    whose connections carry an application name, so that only they are counted."""
    pooled = {**connections.settings["default"]}
    assert "pool" in pooled["OPTIONS"] and pooled["CONN_MAX_AGE"] == 0
    # The production default (the test settings lend their threads 16; the size itself is checked above).
    pooled["OPTIONS"] = {**pooled["OPTIONS"], "application_name": "evalcompare-pool-test",
                         "pool": {**pooled["OPTIONS"]["pool"], "max_size": 4}}
    start = threading.Barrier(10)
    failures, counts, done = [], [], threading.Event()

    def query():
        try:
            start.wait()
            database = DatabaseWrapper(pooled, alias="pool_test")  # as each thread's `connection` is
            with database.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.2)")
            database.close()  # back to the pool, as at the end of a request
        except Exception as error:  # reported below
            failures.append(error)

    def sample():
        import psycopg

        with psycopg.connect(database_url(), autocommit=True) as sampler:
            while not done.is_set():
                counts.append(sampler.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                              ["evalcompare-pool-test"]).fetchone()[0])
                done.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=query) for _ in range(10)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        done.set()
        sampler.join()
        DatabaseWrapper(pooled, alias="pool_test").close_pool()
    assert failures == []
    assert 2 <= max(counts) <= 4  # concurrent for real, and never beyond the pool's size


@pytest.mark.django_db
def test_portal_html_is_private_and_never_stored(client, user, evaluation):
    login = client.get("/login/")
    assert "no-store" in login["Cache-Control"]
    client.force_login(user)
    for url in ("/evaluations/", f"/evaluations/{evaluation.name}/"):
        response = client.get(url)
        assert response.status_code == 200
        assert set(response["Cache-Control"].replace(" ", "").split(",")) == {"private", "no-store"}


@pytest.fixture
def comparison(transactional_db, evaluation):
    """Two runs of "qa" over three datapoints, committed so that another process sees them."""
    runs = [RunFactory(evaluation=evaluation, at=at(100), variant_name="baseline"),
            RunFactory(evaluation=evaluation, at=at(200), variant_name="candidate")]
    for i in range(3):
        datapoint = DatapointFactory(evaluation=evaluation, created=at(i))
        for run_ in runs:
            FeedbackFactory(inference=InferenceFactory(run=run_, datapoint=datapoint, output=f"out {i}"),
                            metric="correct", value=float(i % 2))
    return evaluation, runs


def test_gunicorn_with_debug_off_serves_login_comparison_and_hashed_static_files(comparison, tmp_path):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    evaluation, runs = comparison
    # The server uses the production password hashers, not the suite's fast one.
    hasher = PBKDF2PasswordHasher()
    get_user_model().objects.create(username="analyst", password=hasher.encode("s3cret-pass", hasher.salt()))
    environment = production_environment(database_url(), tmp_path / "static", EVALCOMPARE_METRICS_TOKEN="scrape-me")
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server makes its own
    assert "static files copied" in run(EVALCOMPARE + ["collectstatic", "--noinput"], environment).stdout

    with gunicorn(EVALCOMPARE, environment, tmp_path / "gunicorn.log") as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        login = client.get("/login/")
        assert "no-store" in login.headers["cache-control"]
        assert_serves_hashed_static_files(client, login.text)
        assert client.get("/static/comparisons/no-such-file.css").status_code == 404
        log_in(client, "analyst", "s3cret-pass")
        page = client.get(f"/evaluations/{evaluation.name}/", params={"run_ids": ",".join(str(r.id) for r in runs)})
        assert page.status_code == 200
        assert page.headers["cache-control"] == "private, no-store"
        assert "candidate" in page.text and "out 2" in page.text
        assert_serves_hashed_static_files(client, page.text)
        rows = client.get(f"/evaluations/{evaluation.name}/", headers={"HX-Request": "true", "HX-Target": "load-more"},
                          params={"run_ids": ",".join(str(r.id) for r in runs)})
        assert rows.status_code == 200 and "out 1" in rows.text and "<html" not in rows.text
        # Every request above is counted whichever of the two workers answers the scrape.
        scrapes = [client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text for _ in range(6)]
        counted = {sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("evalcompare_http_responses_total{") and 'view="comparison_detail"' in line)
                   for text in scrapes}
        assert counted == {2.0}, counted
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Booting worker" in log and f'"GET /evaluations/{evaluation.name}/?run_ids=' in log  # the access log
