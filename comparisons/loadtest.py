"""`manage.py benchmark --load`: the production server under concurrent logged-in clients.

gunicorn with evalcompare's configuration (DEBUG off, collected static files, the connection pool)
serves the benchmark database on loopback; `clients` simulated users, each with its own session,
load the comparison page and then its next rows fragment (page 2, as the page's infinite scroll does),
over and over for `seconds`. A thread samples the server's connections in `pg_stat_activity`.
"""

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import psycopg
from django.conf import settings

MAX_CLIENTS = 200
MAX_SECONDS = 300
MAX_WORKERS = 16


def measure_load(evaluation: str, run_ids: list, after: str, *, clients: int, seconds: float, workers: int,
                 database_url: str, progress: bool = True) -> dict:
    """Serve the current database with gunicorn and load it; figures in milliseconds unless named otherwise.

    The rows fragment requested is the one that starts after datapoint `after`.
    """
    if not (1 <= clients <= MAX_CLIENTS and 0 < seconds <= MAX_SECONDS and 1 <= workers <= MAX_WORKERS):
        raise ValueError(f"the load test takes 1–{MAX_CLIENTS} clients, 1–{MAX_SECONDS} s and 1–{MAX_WORKERS} "
                         "workers")
    cookies = _sessions(clients)
    port = _free_loopback_port()
    application_name = f"evalcompare-load-{port}"
    with tempfile.TemporaryDirectory(prefix="evalcompare-load-") as static_root:
        env = _server_environment(database_url, static_root, application_name)
        collect = subprocess.run([sys.executable, "-m", "evalcompare.cli", "collectstatic", "--noinput", "-v0"],
                                 env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120)
        if collect.returncode != 0:
            raise RuntimeError(f"collectstatic failed: {collect.stderr[-500:]}")
        log = Path(static_root) / "gunicorn.log"  # a file, not a pipe nobody reads while the load runs
        with log.open("wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "evalcompare.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers",
                 str(workers)], env=env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_serving(server, base, log)
            if progress:
                print(f"loading gunicorn ({workers} workers) with {clients} clients for {seconds:g} s …",
                      file=sys.stderr)
            sampler = _ConnectionSampler(application_name, database_url)
            sampler.start()
            cpu_before, client_before = _workers_cpu_s(server), time.process_time()
            try:
                timings, errors, elapsed = _load(port, evaluation, run_ids, after, cookies, seconds)
            finally:
                sampler.stop()
            cpu_used = _workers_cpu_s(server) - cpu_before
            client_cpu = time.process_time() - client_before
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    requests = len(timings["page"]) + len(timings["rows"])
    return {
        "load_clients": clients, "load_seconds": seconds, "load_workers": workers,
        "load_pool_size": settings.DATABASE_POOL_SIZE,
        "load_requests": requests, "load_errors": len(errors), "load_error_examples": errors[:5],
        "load_requests_per_s": requests / elapsed,
        **{f"load_{kind}_{name}_ms": _percentile(timings[kind], fraction)
           for kind in ("page", "rows") for name, fraction in (("median", 0.5), ("p95", 0.95))},
        "load_db_connections_max": sampler.maximum,
        # What a request costs the server's workers (PostgreSQL apart), whatever else the machine runs:
        # cores × 1000 / this is what the machine could serve at most. And how busy the machine was.
        "load_server_cpu_ms_per_request": cpu_used * 1000 / max(requests, 1),
        # The other two users of the same cores: the PostgreSQL backends serving the server's
        # connections (when the database is on this machine) and the simulated clients themselves.
        "load_db_cpu_ms_per_request": sampler.backend_cpu_s * 1000 / max(requests, 1),
        "load_client_cpu_ms_per_request": client_cpu * 1000 / max(requests, 1),
        "load_machine_load_average": os.getloadavg()[0],
    }


def _sessions(count: int) -> list[str]:
    """`count` logged-in sessions of the benchmark user, as session cookie values."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.get(username="bench")
    cookies = []
    for _ in range(count):
        client = Client()
        client.force_login(user)
        cookies.append(client.cookies[settings.SESSION_COOKIE_NAME].value)
    return cookies


def _workers_cpu_s(server: subprocess.Popen) -> float:
    """CPU seconds (user + system) the gunicorn workers have used so far."""
    import psutil

    total = 0.0
    for worker in psutil.Process(server.pid).children(recursive=True):
        try:
            times = worker.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_environment(database_url: str, static_root: str, application_name: str) -> dict:
    """Production settings, but plain HTTP on loopback; the same SECRET_KEY, so the sessions are valid."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DEBUG", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "BIND", "PORT")}
    return {**env, "DJANGO_SETTINGS_MODULE": "evalcompare.settings", "DEBUG": "0", "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": database_url, "DATABASE_POOL_SIZE": str(settings.DATABASE_POOL_SIZE),
            "ALLOWED_HOSTS": "127.0.0.1", "STATIC_ROOT": static_root, "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0", "SECURE_HSTS_SECONDS": "0",
            "PGAPPNAME": application_name}  # libpq names the server's connections, for the sampler


def _wait_until_serving(server: subprocess.Popen, base: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}: {log.read_text()[-800:]}")
        try:
            if httpx.get(f"{base}/login/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer on {base} within {timeout:g} s")


def _load(port, evaluation, run_ids, after, cookies, seconds):
    """Every client in turn loads the page, then a rows fragment, until `seconds` have passed.

    A thread per client with a keep-alive `http.client` connection: the clients share the server's
    two cores, and the standard library's client costs them a fraction of an async client's CPU.
    """
    ids = ",".join(str(run_id) for run_id in run_ids)
    path = f"/evaluations/{quote(evaluation)}/?{urlencode({'run_ids': ids})}"
    requests = (("page", path, {}),
                ("rows", f"{path}&{urlencode({'after': after})}", {"HX-Request": "true", "HX-Target": "load-more"}))
    timings = {"page": [], "rows": []}
    errors = []
    deadline = time.perf_counter() + seconds

    def user(cookie):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        cookie_header = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
        try:
            while time.perf_counter() < deadline:
                for kind, url, headers in requests:
                    started = time.perf_counter()
                    try:
                        connection.request("GET", url, headers={**cookie_header, **headers})
                        response = connection.getresponse()
                        response.read()
                        problem = None if response.status == 200 else f"{kind}: HTTP {response.status}"
                    except (OSError, http.client.HTTPException) as error:
                        problem = f"{kind}: {type(error).__name__}: {error}"
                        connection.close()  # reconnects on the next request
                    if problem:
                        errors.append(problem)
                    else:
                        timings[kind].append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(len(cookies), thread_name_prefix="load-client") as pool:
        list(pool.map(user, cookies))
    return timings, errors, time.perf_counter() - started


def _percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class _ConnectionSampler:
    """Counts the server's connections (by application name) in pg_stat_activity every 50 ms."""

    def __init__(self, application_name: str, database_url: str):
        self.application_name = application_name
        self.maximum = 0
        self._stop = threading.Event()
        self._database_url = database_url
        self._backend_cpu: dict[int, tuple[float, float]] = {}  # pid -> (CPU s when first seen, when last seen)
        self._sampled = False
        self._thread = threading.Thread(target=self._run, name="load-connection-sampler", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    @property
    def backend_cpu_s(self) -> float:
        """CPU seconds the server's backends used while sampled (0 when the database is elsewhere)."""
        return sum(last - first for first, last in self._backend_cpu.values())

    def _sample_backends(self, sampler):
        import psutil

        pids = [row[0] for row in sampler.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [self.application_name]).fetchall()]
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            used = times.user + times.system
            first, _ = self._backend_cpu.get(pid, (None, None))
            # A backend first seen now started during the load: all its CPU counts.
            self._backend_cpu[pid] = (0.0 if first is None and self._sampled else (used if first is None else first),
                                      used)
        self._sampled = True

    def _run(self):
        with psycopg.connect(self._database_url, autocommit=True) as sampler:
            while not self._stop.is_set():
                count = sampler.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                        [self.application_name]).fetchone()[0]
                self.maximum = max(self.maximum, count)
                self._sample_backends(sampler)
                self._stop.wait(0.05)
            self._sample_backends(sampler)


LOAD_KEYS = ["load_errors", "load_rows_p95_ms", "load_page_p95_ms", "load_requests_per_s", "load_db_connections_max",
             "load_server_cpu_ms_per_request", "load_db_cpu_ms_per_request", "load_client_cpu_ms_per_request",
             "load_machine_load_average"]
LOAD_TARGETS = {"load_errors": 0, "load_rows_p95_ms": 800, "load_page_p95_ms": 1500}


def format_load_table(results: dict) -> str:
    """The load figures with their targets (connections: ≤ workers × pool size)."""
    limit = results["load_workers"] * results["load_pool_size"]
    targets = {**LOAD_TARGETS, "load_db_connections_max": limit}
    lines = [f"load: gunicorn {results['load_workers']} workers, pool {results['load_pool_size']}, "
             f"{results['load_clients']} clients for {results['load_seconds']:g} s, "
             f"{results['load_requests']:,} requests", ""]
    for key in LOAD_KEYS:
        value = results[key]
        verdict = ""
        if key in targets:
            verdict = f"≤ {targets[key]:,}  {'ok' if value <= targets[key] else 'MISSED'}"
        lines.append(f"{key:<28}{value:>12,.1f}   {verdict}")
    for example in results["load_error_examples"]:
        lines.append(f"  error: {example}")
    return "\n".join(lines)
