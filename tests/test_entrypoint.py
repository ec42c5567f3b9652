"""The image's entrypoint (scripts/docker-entrypoint), run by sh with a stand-in `evalcompare` on PATH."""

import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parent.parent / "scripts" / "docker-entrypoint"


@pytest.fixture
def fake_bin(tmp_path):
    """A directory with an `evalcompare` that prints its arguments (and a version for --version)."""
    script = tmp_path / "evalcompare"
    script.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "evalcompare 9.9.9"; exit 0; fi\n'
                      'echo "evalcompare $*"\n')
    script.chmod(0o755)
    return tmp_path


def entrypoint(fake_bin, *args, env=None):
    environment = {"PATH": f"{fake_bin}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=environment, timeout=60)


@pytest.mark.parametrize("args, called", [
    ((), "evalcompare serve"),
    (("serve", "--workers", "3"), "evalcompare serve --workers 3"),
    (("migrate",), "evalcompare migrate --noinput"),
    (("migrate", "comparisons", "0010"), "evalcompare migrate --noinput comparisons 0010"),
    (("createsuperuser", "--username", "ada"), "evalcompare createsuperuser --username ada"),
    (("rollback", "0.1.0"), "evalcompare rollback 0.1.0"),
    (("--version",), "evalcompare 9.9.9"),
])
def test_commands_reach_evalcompare(fake_bin, args, called):
    result = entrypoint(fake_bin, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == called


def test_worker_runs_the_job_worker_on_the_runs_queue(fake_bin):
    result = entrypoint(fake_bin, "worker", "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("evalcompare procrastinate worker --queues runs --shutdown-graceful-timeout 5 "
                                     "--concurrency 2")


class Health(http.server.BaseHTTPRequestHandler):
    status = 200
    hosts: list[str] = []

    def do_GET(self):  # noqa: N802 (the handler's method name)
        Health.hosts.append(self.headers["Host"])
        self.send_response(Health.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_healthcheck_asks_healthz_as_the_first_allowed_host(fake_bin, health_server):
    port = str(health_server.server_address[1])
    Health.status, Health.hosts = 200, []
    ok = entrypoint(fake_bin, "healthcheck", env={"PORT": port, "ALLOWED_HOSTS": ".example.org, portal.example.org"})
    assert ok.returncode == 0, ok.stderr
    assert Health.hosts == ["example.org"]

    Health.status = 503
    unhealthy = entrypoint(fake_bin, "healthcheck", env={"PORT": port})
    assert unhealthy.returncode == 1
    assert "503" in unhealthy.stderr


def test_healthcheck_fails_when_nothing_listens(fake_bin, health_server):
    port = health_server.server_address[1]
    health_server.shutdown()
    health_server.server_close()
    result = entrypoint(fake_bin, "healthcheck", env={"PORT": str(port)})
    assert result.returncode == 1
    assert "Connection refused" in result.stderr
