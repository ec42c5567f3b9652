"""/healthz, /readyz, /metrics and the version: status codes, protection, what a scrape shows."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

import evalcompare
from comparisons.ids import uuid7
from tests.factories import FeedbackFactory, InferenceFactory, RunFactory

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "a-scrape-token-for-the-tests"


def test_healthz_answers_with_the_version_without_touching_the_database(client):
    response = client.get("/healthz")  # without the db fixture: any query would fail this test
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert response.json() == {"status": "ok", "version": evalcompare.__version__}
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_readyz_is_ready_when_every_migration_is_applied(client):
    response = client.get("/readyz/")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


@pytest.mark.django_db
def test_readyz_is_503_naming_an_unapplied_migration(client):
    executor = MigrationExecutor(connection)
    leaf = next(node for node in executor.loader.graph.leaf_nodes() if node[0] == "comparisons")
    # As after deploying code with a new migration before `migrate`: the database lacks the leaf.
    MigrationRecorder(connection).record_unapplied(*leaf)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == f"1 unapplied migration: {leaf[0]}.{leaf[1]}"


def manage_shell(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    return subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**base, "SECRET_KEY": "ops-test-secret", **env})


def test_readyz_is_503_when_the_database_is_unreachable_and_healthz_is_still_200():
    code = ("from django.test import Client; c = Client(); r = c.get('/readyz'); h = c.get('/healthz');"
            "print(r.status_code, r.content.decode()); print(h.status_code)")
    result = manage_shell(code, DATABASE_URL="postgresql://nobody@127.0.0.1:9/nowhere", DEBUG="0",
                          ALLOWED_HOSTS="testserver")
    assert result.returncode == 0, result.stderr
    ready, health = result.stdout.strip().splitlines()[-2:]
    status, body = ready.split(" ", 1)
    assert status == "503" and health == "200"
    assert json.loads(body)["reason"] == "database unreachable (OperationalError)"


@pytest.mark.django_db
def test_health_endpoints_skip_the_https_redirect_and_the_host_check():
    with override_settings(SECURE_SSL_REDIRECT=True, ALLOWED_HOSTS=["evalcompare.example"]):
        client = Client()
        # A container health check: plain HTTP, Host: localhost.
        assert client.get("/healthz", HTTP_HOST="localhost:8000").status_code == 200
        assert client.get("/readyz", HTTP_HOST="localhost:8000").status_code == 200
        assert client.get("/login/", HTTP_HOST="evalcompare.example").status_code == 301  # the rest is redirected


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_metrics_are_off_unless_a_token_or_an_allowlist_is_set(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOW = "", []
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_metrics_need_the_bearer_token(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOW = TOKEN, []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


@pytest.mark.django_db
def test_metrics_allowlist_matches_the_peer_address(client, settings):
    import ipaddress

    settings.METRICS_TOKEN, settings.METRICS_ALLOW = "", [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="10.0.0.5").status_code == 403  # a header is no address
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    settings.METRICS_TOKEN = TOKEN  # both set: both needed
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_a_bad_allowlist_is_a_clear_settings_error():
    base = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**base, "DEBUG": "1", "EVALCOMPARE_METRICS_ALLOW": "10.0.0.0/8, bad"})
    assert result.returncode != 0
    assert "EVALCOMPARE_METRICS_ALLOW: 'bad' does not appear to be an IPv4 or IPv6 network" in result.stderr


@pytest.mark.django_db
def test_request_metrics_by_view(client_logged_in, evaluation, settings):
    settings.METRICS_TOKEN = TOKEN
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    before = scrape(client_logged_in, **auth)
    assert client_logged_in.get(reverse("comparison_detail", args=["qa"])).status_code == 200
    assert client_logged_in.get("/no/such/page/").status_code == 404
    after = scrape(client_logged_in, **auth)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("evalcompare_http_request_duration_seconds_count", view="comparison_detail", method="GET") == 1
    assert delta("evalcompare_http_request_duration_seconds_bucket", view="comparison_detail", method="GET",
                 le="+Inf") == 1
    assert delta("evalcompare_http_responses_total", view="comparison_detail", method="GET", status="200") == 1
    assert delta("evalcompare_http_responses_total", view="unresolved", method="GET", status="404") == 1
    assert delta("evalcompare_http_request_db_queries_count", view="comparison_detail") == 1
    assert delta("evalcompare_http_request_db_queries_sum", view="comparison_detail") >= 3  # session, user, page
    # Scrapes themselves are not measured.
    assert not [key for key in after if ("view", "metrics") in key[1]]


@pytest.mark.django_db
def test_product_metrics_come_from_the_database(client, settings, evaluation, reviewer):
    settings.METRICS_TOKEN = TOKEN
    now = timezone.now()
    # A run that finished 10 minutes ago after 100 s, with 3 inferences, one failed, and a human correction.
    done = RunFactory(evaluation=evaluation, id=uuid7(now - timedelta(seconds=700)), status="completed",
                      finished_at=now - timedelta(seconds=600))
    inferences = [InferenceFactory(run=done) for _ in range(3)]
    inferences[0].error = "timeout"
    inferences[0].save()
    FeedbackFactory(inference=inferences[1], metric="correct", value=1.0)
    FeedbackFactory(inference=inferences[1], metric="correct", value=0.0, source="human", created_by=reviewer)
    RunFactory(evaluation=evaluation, status="failed", finished_at=now - timedelta(hours=3))  # not recent
    RunFactory(evaluation=evaluation, status="running", heartbeat_at=now)
    RunFactory(evaluation=evaluation, status="running", heartbeat_at=now - timedelta(minutes=5))  # killed

    samples = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert value(samples, "evalcompare_metrics_database_up") == 1
    assert value(samples, "evalcompare_build_info", version=evalcompare.__version__) == 1
    assert value(samples, "evalcompare_runs", status="completed") == 1
    assert value(samples, "evalcompare_runs", status="failed") == 1
    assert value(samples, "evalcompare_runs", status="running") == 2
    assert value(samples, "evalcompare_runs", status="cancelled") == 0
    assert value(samples, "evalcompare_runs_interrupted") == 1
    assert value(samples, "evalcompare_inferences_total") == 3
    assert value(samples, "evalcompare_feedback_total") == 2
    assert value(samples, "evalcompare_human_corrections_total") == 1
    assert value(samples, "evalcompare_runner_recent_runs", status="completed") == 1
    assert value(samples, "evalcompare_runner_recent_runs", status="failed") == 0
    assert value(samples, "evalcompare_runner_recent_inferences") == 3
    assert value(samples, "evalcompare_runner_recent_inference_errors") == 1
    assert value(samples, "evalcompare_runner_recent_throughput") == pytest.approx(3 / 100, rel=0.01)


MULTIPROCESS_REQUEST = """
from django.test import Client
assert Client().get('/login/').status_code == 200
"""

MULTIPROCESS_SCRAPE = """
from django.test import Client
print(Client().get('/metrics', HTTP_AUTHORIZATION='Bearer {token}').content.decode())
"""


def test_in_multiprocess_mode_a_scrape_sums_every_worker(tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "DEBUG": "1", "ALLOWED_HOSTS": "testserver",
           "EVALCOMPARE_METRICS_TOKEN": TOKEN}
    for _worker in range(2):  # two processes, as two gunicorn workers
        result = manage_shell(MULTIPROCESS_REQUEST, **env)
        assert result.returncode == 0, result.stderr
    result = manage_shell(MULTIPROCESS_SCRAPE.format(token=TOKEN), **env)
    assert result.returncode == 0, result.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(result.stdout) for s in family.samples}
    assert value(samples, "evalcompare_http_responses_total", view="login", method="GET", status="200") == 2
    assert value(samples, "evalcompare_http_request_duration_seconds_count", view="login", method="GET") == 2


def test_manage_py_version_prints_the_package_version():
    result = subprocess.run([sys.executable, "manage.py", "version"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout == f"{evalcompare.__version__}\n"
    assert evalcompare.__version__ != "0+unknown"


@pytest.mark.django_db
def test_the_footer_shows_the_version(client):
    assert f"evalcompare {evalcompare.__version__}</footer>" in client.get(reverse("login")).content.decode()
