"""gunicorn's configuration for evalcompare, the production server.

    evalcompare serve [gunicorn options]
    gunicorn -c python:evalcompare.gunicorn_conf evalcompare.wsgi:application   # the same

Read from the environment (gunicorn's own command-line options override any of these):

- WEB_CONCURRENCY: worker processes, default 4. The work is CPU-bound (rendering) and PostgreSQL
  runs beside it, so two workers per core; 4 suits the 2-core machines the benchmark runs on.
- BIND: comma-separated addresses (`127.0.0.1:8000`, `unix:/run/evalcompare.sock`); default
  `0.0.0.0:$PORT`, PORT default 8000.
- GUNICORN_TIMEOUT: seconds a request may take before its worker is restarted, default 120 (a
  large CSV export streams for a while).
- PROMETHEUS_MULTIPROC_DIR: where the workers' request metrics meet, so that any worker's /metrics
  shows all of them; emptied when the server starts. Default: a new temporary directory.

Workers are synchronous, one request at a time each, so each holds at most one database connection
(the CSV export up to 4; see DATABASE_POOL_SIZE in settings.py). The app is loaded once in the master
before the workers fork (preload): a settings error stops the server at once instead of every worker
failing to boot, and no database connection exists before the fork (the pool opens in each worker on
its first query). A worker is replaced after about 1,000 requests, which bounds any slow leak.
"""

import os
import shutil
import sys
import tempfile


def _whole_number(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) < minimum or (maximum and int(value) > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum else f"≥ {minimum}"
        sys.exit(f"{name} must be a whole number {bounds} (got {value!r}).")
    return int(value)


wsgi_app = "evalcompare.wsgi:application"
workers = _whole_number("WEB_CONCURRENCY", 4)
bind = ([address.strip() for address in os.environ.get("BIND", "").split(",") if address.strip()]
        or [f"0.0.0.0:{_whole_number('PORT', 8000, maximum=65535)}"])
worker_class = "sync"
timeout = _whole_number("GUNICORN_TIMEOUT", 120)
graceful_timeout = 30
keepalive = 5
preload_app = True
max_requests = 1000
max_requests_jitter = 200  # so the workers are not all replaced at the same moment

accesslog = "-"  # stdout; errors go to stderr
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
proc_name = "evalcompare"
# Heartbeat files in memory: a container's /tmp may be an overlay filesystem that stalls writes.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):  # a chroot's may not be writable
    worker_tmp_dir = "/dev/shm"
# gunicorn ≥ 25 opens a control socket at one fixed path per user: several servers on one machine
# (tests, the benchmark) would collide on it, and it is not used.
control_socket_disable = True

# Request metrics of every worker in one place (prometheus-client's multiprocess mode), set before the
# app is loaded so that its metrics are made in that mode. A directory left by an earlier server would
# add that server's counts to this one's: it is emptied when the server starts.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="evalcompare-metrics-"))


def on_starting(server):
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
