"""Helpers for the tests that run the production server (gunicorn, DEBUG off) as a real process."""

import os
import re
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "a-long-random-production-secret-for-the-serving-tests-0123456789"
# The pytest process's own settings must not leak into a deployment-like process.
NOT_INHERITED = ("DEBUG", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "EVALCOMPARE_EMBEDDED_DB", "BIND",
                 "PORT", "WEB_CONCURRENCY", "DATABASE_URL", "STATIC_ROOT")


def production_environment(database_url: str, static_root: Path, **extra: str) -> dict:
    """Production settings (DEBUG off), except plain HTTP on loopback so the test can speak to it."""
    base = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    return {**base, "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url, "ALLOWED_HOSTS": "127.0.0.1",
            "STATIC_ROOT": str(static_root), "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0", "SECURE_HSTS_SECONDS": "0", **extra}


def run(command: list[str], env: dict, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@contextmanager
def gunicorn(evalcompare: list[str], env: dict, log: Path, cwd: Path = ROOT, workers: int = 2):
    """`evalcompare serve` on a free loopback port; yields the base URL, stops the server after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("wb") as output:
        server = subprocess.Popen([*evalcompare, "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
                                  env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"gunicorn exited ({server.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"gunicorn did not answer:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/login/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def log_in(client: httpx.Client, username: str, password: str) -> None:
    """Log in through the real login form (CSRF token and session cookie included)."""
    form = client.get("/login/")
    assert form.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    response = client.post("/login/", data={"username": username, "password": password,
                                            "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response.headers["location"] == "/evaluations/", response.text[:500]


def static_urls(html: str) -> list[str]:
    """The stylesheets and scripts a page links to."""
    return re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', html)


def assert_serves_hashed_static_files(client: httpx.Client, html: str) -> list[str]:
    """The page's CSS and htmx have content-hashed names, and each is served (gzip too) and cached for long."""
    urls = static_urls(html)
    assert any(re.fullmatch(r"/static/comparisons/evalcompare\.[0-9a-f]{12}\.css", url) for url in urls), urls
    assert any(re.fullmatch(r"/static/comparisons/htmx-2\.0\.\d+\.min\.[0-9a-f]{12}\.js", url) for url in urls), urls
    for url in urls:
        response = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200, url
        assert response.headers["content-encoding"] == "gzip", url
        assert "immutable" in response.headers["cache-control"] and "no-store" not in response.headers["cache-control"]
        assert len(response.content) > 100
    return urls
