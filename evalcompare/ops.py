"""Operations endpoints: /healthz, /readyz, /metrics, and the per-request metrics behind /metrics.

They are answered by the first middleware, before the host check (ALLOWED_HOSTS), the HTTPS redirect,
sessions and login, so a container health check or a Prometheus scrape over plain HTTP on the internal
network works with any Host header. /metrics is off (404) until EVALCOMPARE_METRICS_TOKEN or
EVALCOMPARE_METRICS_ALLOW is set.

Metrics use prometheus-client. Under gunicorn every worker is its own process: set
PROMETHEUS_MULTIPROC_DIR to an empty directory (emptied at each server start) and each worker writes
its counters and histograms there; a scrape, whichever worker answers it, sums them all. Without it,
a scrape sees the answering process only (fine for runserver and a single process).
"""

import hmac
import ipaddress
import logging
import os
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Q
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

import evalcompare

log = logging.getLogger(__name__)

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

REQUEST_LATENCY = Histogram(
    "evalcompare_http_request_duration_seconds", "Time to answer a request, by view (URL name) and method.",
    ["view", "method"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30),
)
RESPONSES = Counter(
    "evalcompare_http_responses", "Responses by view, method and status code.", ["view", "method", "status"],
)
REQUEST_QUERIES = Histogram(
    "evalcompare_http_request_db_queries", "Database queries made while answering a request, by view.",
    ["view"], buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500),
)

# Runs that finished within this window feed the runner throughput and error metrics.
RUNNER_WINDOW = timedelta(hours=1)


def healthz(request):
    """The process is alive and answers; touches no database."""
    return JsonResponse({"status": "ok", "version": evalcompare.__version__})


def readiness_problem() -> str | None:
    """Why this process should not get traffic (database unreachable, migrations not applied), or None."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as error:
        log.warning("readyz: database unreachable: %s", error)
        # The driver's message can name hosts and users; the log has it, the unauthenticated answer does not.
        return f"database unreachable ({type(error).__name__})"
    except Exception as error:
        log.exception("readyz: migration state unreadable")
        return f"migration state unreadable ({type(error).__name__})"
    if plan:
        names = [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return f"{len(names)} unapplied migration{'s' if len(names) != 1 else ''}: {shown}"
    return None


def readyz(request):
    """200 when the database answers and every migration is applied; 503 with the reason otherwise."""
    problem = readiness_problem()
    if problem:
        return JsonResponse({"status": "unavailable", "reason": problem, "version": evalcompare.__version__},
                            status=503)
    return JsonResponse({"status": "ready", "version": evalcompare.__version__})


def metrics_refusal(request) -> int | None:
    """404 while /metrics is not configured, 403 for a scraper that fails the token or the allowlist."""
    if not settings.METRICS_TOKEN and not settings.METRICS_ALLOW:
        return 404
    if settings.METRICS_ALLOW:
        try:
            peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return 403
        if not any(peer in network for network in settings.METRICS_ALLOW):
            return 403
    if settings.METRICS_TOKEN:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.METRICS_TOKEN.encode()):
            return 403
    return None


def metrics(request):
    refusal = metrics_refusal(request)
    if refusal:
        text = ("Not found." if refusal == 404
                else "Forbidden: a valid bearer token and/or an allowed address is needed.")
        return HttpResponse(text, status=refusal, content_type="text/plain; charset=utf-8")
    return HttpResponse(generate_latest(ScrapeRegistry()), content_type=CONTENT_TYPE_LATEST)


class ScrapeRegistry:
    """What a scrape shows: the request metrics (of every worker in multiprocess mode, else of this
    process, with its process and GC metrics) and the product metrics, read from the database now."""

    def collect(self):
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            yield from registry.collect()
        else:
            yield from REGISTRY.collect()
        yield from ProductCollector().collect()


class ProductCollector:
    """Product metrics counted in the database at scrape time, so every worker shows the same numbers."""

    def collect(self):
        info = GaugeMetricFamily("evalcompare_build_info", "The running version.", labels=["version"])
        info.add_metric([evalcompare.__version__], 1)
        yield info
        up = GaugeMetricFamily("evalcompare_metrics_database_up",
                               "1 when the product metrics could be read from the database, 0 otherwise.")
        try:
            families = list(product_families())
        except DatabaseError as error:
            log.warning("metrics: product metrics unreadable: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def product_families():
    from comparisons.models import EvaluationRun, Feedback, Inference

    Status = EvaluationRun.Status
    by_status = dict.fromkeys(Status.values, 0)
    by_status.update(EvaluationRun.objects.order_by().values_list("status").annotate(n=Count("id")))
    runs = GaugeMetricFamily("evalcompare_runs", "Evaluation runs by recorded status.", labels=["status"])
    for status, n in by_status.items():
        runs.add_metric([status], n)
    yield runs

    now = timezone.now()
    running = EvaluationRun.objects.filter(status=Status.RUNNING).only("id", "status", "heartbeat_at")
    interrupted = GaugeMetricFamily(
        "evalcompare_runs_interrupted",
        "Runs still marked running whose runner stopped sending heartbeats (killed without saying so).")
    interrupted.add_metric([], sum(1 for run in running if run.interrupted))
    yield interrupted

    yield CounterMetricFamily("evalcompare_inferences", "Inferences recorded (rows in the database).",
                              value=Inference.objects.count())
    yield CounterMetricFamily("evalcompare_feedback", "Metric values recorded, by evaluators and by humans.",
                              value=Feedback.objects.count())
    yield CounterMetricFamily("evalcompare_human_corrections",
                              "Metric values corrected by a reviewer (human feedback).",
                              value=Feedback.objects.filter(source=Feedback.Source.HUMAN).count())

    recent = list(
        EvaluationRun.objects.order_by()
        .filter(finished_at__gte=now - RUNNER_WINDOW)
        .annotate(n=Count("inferences"), errors=Count("inferences", filter=Q(inferences__error__isnull=False)))
        .values_list("id", "status", "finished_at", "n", "errors")
    )
    window = f"{int(RUNNER_WINDOW.total_seconds())}s"
    finished = GaugeMetricFamily("evalcompare_runner_recent_runs",
                                 f"Runs that finished in the last {window}, by status.", labels=["status"])
    counts = dict.fromkeys([Status.COMPLETED, Status.FAILED, Status.CANCELLED], 0)
    for _id, status, *_ in recent:
        counts[status] = counts.get(status, 0) + 1
    for status, n in counts.items():
        finished.add_metric([status], n)
    yield finished
    yield GaugeMetricFamily("evalcompare_runner_recent_inferences",
                            f"Inferences recorded by the runs that finished in the last {window}.",
                            value=sum(row[3] for row in recent))
    yield GaugeMetricFamily("evalcompare_runner_recent_inference_errors",
                            "Of those, inferences that failed (error recorded).", value=sum(row[4] for row in recent))
    seconds = sum(max((finished_at - EvaluationRun(id=run_id).started_at).total_seconds(), 0.001)
                  for run_id, _status, finished_at, _n, _errors in recent)
    yield GaugeMetricFamily("evalcompare_runner_recent_throughput",
                            f"Inferences per second of run time over the runs that finished in the last {window} "
                            "(0 when none did).", value=sum(row[3] for row in recent) / seconds if seconds else 0.0)


OPS_VIEWS = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


class OpsEndpointsMiddleware:
    """Answers /healthz, /readyz and /metrics before any other middleware (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = OPS_VIEWS.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse({"error": "Only GET and HEAD are allowed here."}, status=405)
            response["Allow"] = "GET, HEAD"
        else:
            response = view(request)
        response["Cache-Control"] = "no-store"
        return response


class QueryCounter:
    """A connection.execute_wrapper that counts the queries run through it."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


class RequestMetricsMiddleware:
    """Records each request's latency, status and database query count, labelled by the view's URL name."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        counter = QueryCounter()
        started = time.perf_counter()
        with connection.execute_wrapper(counter):
            response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match else "unresolved"
        method = request.method if request.method in METHODS else "other"
        REQUEST_LATENCY.labels(view, method).observe(elapsed)
        RESPONSES.labels(view, method, str(response.status_code)).inc()
        REQUEST_QUERIES.labels(view).observe(counter.count)
        return response
