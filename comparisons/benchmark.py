"""`manage.py benchmark`: synthetic data at scale in its own database, and the timings that matter.

The data is deterministic (seeded) and goes into a database of its own on the configured server
(`evalcompare_bench_<scale>`), never the user's. It is loaded with COPY while the big tables have no
secondary indexes, constraints or triggers; those are recreated afterwards and the tables ANALYZEd.
"""

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.db import connection
from tqdm import tqdm

from comparisons.ids import parse_uuid, uuid7, uuid7_max
from comparisons.queries import RowQuery, comparison_page, resolve_comparison, rows_queryset

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVALUATION = "bench_eval"
RUNNER_EVALUATION = "bench_runner"
METRICS = [("correct", "boolean", "max"), ("quality", "float", "max"), ("cost_score", "float", "min")]


@dataclass(frozen=True)
class Scale:
    datapoints: int
    runs: int
    deep_page: int  # the page number measured as "deep" (1-based)
    repeats: int
    runner_items: int
    runner_latency_s: float


SCALES = {
    "tiny": Scale(datapoints=400, runs=6, deep_page=3, repeats=3, runner_items=200, runner_latency_s=0.01),
    "small": Scale(datapoints=10_000, runs=10, deep_page=50, repeats=7, runner_items=1000, runner_latency_s=0.05),
    "default": Scale(datapoints=100_000, runs=20, deep_page=500, repeats=9, runner_items=1000,
                     runner_latency_s=0.05),
    "large": Scale(datapoints=1_000_000, runs=20, deep_page=5000, repeats=5, runner_items=1000,
                   runner_latency_s=0.05),
}
BIG_TABLES = ["comparisons_datapoint", "comparisons_inference", "comparisons_feedback"]


def _id(ms: int, sequence: int) -> str:
    """A UUIDv7 as hex from a millisecond and a per-millisecond sequence (deterministic)."""
    return "%032x" % ((ms << 80) | (0x7 << 76) | (0b10 << 62) | (sequence & ((1 << 62) - 1)))


def _ms(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# ---------------------------------------------------------------------------------------------
# The database


def database_name(scale: str) -> str:
    return f"evalcompare_bench_{scale}"


def use_database(name: str, *, create: bool) -> bool:
    """Point this process's default connection at database `name`; returns True if it was created."""
    created = False
    if create:
        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
                created = True
    connection.close()
    connection.close_pool()  # a pool's connections belong to the database it was made for
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name
    return created


def drop_database(name: str, original: str) -> None:
    use_database(original, create=False)
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url() -> str:
    """A DATABASE_URL for the current default connection (for the export subprocess)."""
    s = connection.settings_dict
    return (f"postgresql://{quote(s['USER'] or 'postgres')}:{quote(s['PASSWORD'] or '')}@/{s['NAME']}"
            f"?host={quote(s['HOST'] or 'localhost', safe='/')}&port={s['PORT'] or 5432}")


def is_loaded(scale: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('comparisons_dataset') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return False
        cursor.execute("SELECT description FROM comparisons_dataset WHERE name = 'bench_dataset'")
        row = cursor.fetchone()
        return row is not None and row[0] == f"complete:{scale}"


# ---------------------------------------------------------------------------------------------
# Loading


def _save_and_drop_indexes(cursor, tables=BIG_TABLES):
    """Drop the tables' secondary indexes, constraints (but primary keys) and triggers; return the
    statements that bring them back."""
    restore = []
    for table in tables:
        cursor.execute("""
            SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = %s::regclass AND contype <> 'p'""", [table])
        for name, definition in cursor.fetchall():
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            restore.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        cursor.execute("""
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.tablename = %s AND i.indexname NOT IN (
                SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)""", [table, table])
        for name, definition in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{name}"')
            restore.insert(0, definition)  # indexes before the constraints that may use them
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        restore.append(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    return restore


def load(scale_name: str, *, seed: int = 20261122, progress: bool = True) -> dict:
    """Generate and load the synthetic data into the current (fresh, migrated) database."""
    from django.contrib.auth import get_user_model

    from comparisons.bulk import copy_rows
    from comparisons.models import (
        Datapoint,
        Dataset,
        Evaluation,
        EvaluationRun,
        Evaluator,
        Feedback,
        Function,
        Inference,
    )

    scale = SCALES[scale_name]
    rng = random.Random(seed)
    function = Function.objects.create(name="bench_function", kind="chat")
    dataset = Dataset.objects.create(name="bench_dataset", description="loading")
    evaluation = Evaluation.objects.create(name=EVALUATION, function=function, dataset=dataset)
    for name, value_type, optimize in METRICS:
        Evaluator.objects.create(evaluation=evaluation, name=name, kind="custom", value_type=value_type,
                                 optimize=optimize)
    get_user_model().objects.create_user("bench", password=uuid.uuid4().hex)

    span = timedelta(days=100)
    run_times = [T0 + timedelta(days=85) + timedelta(days=25) * k / max(scale.runs - 1, 1) for k in range(scale.runs)]
    run_ids = [_id(_ms(t), 0) for t in run_times]
    horizon = T0 + timedelta(days=112)

    # Datapoint versions: (id_int_ms, id, staled_ms or None)
    versions = []
    for i in range(scale.datapoints):
        created = T0 + span * i / scale.datapoints
        ms = _ms(created)
        roll = rng.random()
        if roll < 0.07:  # edited once, at a spread time
            edited = created + (horizon - created) * rng.random()
            versions.append((ms, _id(ms, i + 1), _ms(edited), i))
            versions.append((_ms(edited), _id(_ms(edited), scale.datapoints + i + 1), None, i))
        elif roll < 0.10:  # deleted
            versions.append((ms, _id(ms, i + 1), _ms(created + (horizon - created) * rng.random()), i))
        else:
            versions.append((ms, _id(ms, i + 1), None, i))

    counts = {"datapoints": len(versions), "inferences": 0, "feedback": 0}
    with connection.cursor() as cursor:
        restore = _save_and_drop_indexes(cursor)
    bar = tqdm(total=len(versions) * (scale.runs + 1), desc=f"loading {scale_name}", unit="row", file=sys.stderr,
               disable=not progress, miniters=50_000)

    def datapoint_rows():
        for _created_ms, dp_id, staled_ms, i in versions:
            bar.update(1)
            yield (dp_id, dataset.id, function.id, f"dp-{i}", {"q": f"question {i}"}, f"answer {i}", {},
                   datetime.fromtimestamp(staled_ms / 1000, UTC) if staled_ms else None)

    copy_rows(Datapoint, ["id", "dataset_id", "function_id", "name", "input", "reference_output", "tags",
                          "staled_at"], datapoint_rows())
    for k, (run_id, run_time) in enumerate(zip(run_ids, run_times, strict=True)):
        EvaluationRun.objects.create(id=run_id, evaluation=evaluation, variant_name=f"variant-{k:02d}",
                                     status="completed", finished_at=run_time + timedelta(hours=1))
    inference_rows, feedback_rows = [], []

    def flush():
        counts["inferences"] += copy_rows(Inference, ["id", "run_id", "datapoint_id", "output", "variant_name",
                                                      "variant_pinned", "latency_ms", "error", "tags"], inference_rows)
        counts["feedback"] += copy_rows(Feedback, ["id", "inference_id", "metric", "value", "source", "reason",
                                                   "tags"], feedback_rows)
        inference_rows.clear()
        feedback_rows.clear()

    sequence = 1
    for k, (run_id, run_time) in enumerate(zip(run_ids, run_times, strict=True)):
        run_ms = _ms(run_time)
        skill = 0.55 + 0.4 * k / max(scale.runs - 1, 1)
        for ms, dp_id, staled_ms, i in versions:
            bar.update(1)
            if ms > run_ms or (staled_ms is not None and staled_ms <= run_ms):
                continue
            roll = rng.random()
            if roll < 0.02:
                continue  # missing inference
            sequence += 1
            inference_id = _id(run_ms, sequence)
            if roll < 0.03:
                inference_rows.append((inference_id, run_id, dp_id, None, f"variant-{k:02d}", True, 800.0,
                                       "TimeoutError: the model did not answer", {}))
                continue
            correct = 1.0 if rng.random() < skill else 0.0
            inference_rows.append((inference_id, run_id, dp_id, f"answer {i}" if correct else "wrong",
                                   f"variant-{k:02d}", True, 100 + rng.random() * 400, None, {}))
            feedback_ms = run_ms + 60_000
            for metric, value in (("correct", correct), ("quality", round(rng.random() * skill, 3)),
                                  ("cost_score", round(rng.random(), 3))):
                sequence += 1
                feedback_rows.append((_id(feedback_ms, sequence), inference_id, metric, value, "evaluator", "", {}))
            if rng.random() < 0.01:  # a human correction, later
                sequence += 1
                feedback_rows.append((_id(feedback_ms + 86_400_000, sequence), inference_id, "correct",
                                      1.0 - correct, "human", "corrected", {}))
            if len(feedback_rows) >= 200_000:
                flush()
    flush()
    bar.close()

    _ensure_runner_evaluation(RUNNER_EVALUATION, scale.runner_items)
    if progress:
        print("building indexes and constraints, window scores and run summaries, then VACUUM ANALYZE …",
              file=sys.stderr)
    with connection.cursor() as cursor:
        for statement in restore:
            cursor.execute(statement)
        # The score triggers were off during COPY: build WindowScore and the running sums set-based,
        # with WindowScore's foreign keys checked once afterwards rather than row by row.
        restore = _save_and_drop_indexes(cursor, ["comparisons_windowscore"])
        cursor.execute("SELECT comparisons_refresh_scores(NULL)")
        for statement in restore:
            cursor.execute(statement)
        # VACUUM too: it sets the visibility map, so index-only scans skip the heap (autovacuum would).
        cursor.execute("VACUUM ANALYZE")
    dataset.description = f"complete:{scale_name}"
    dataset.save(update_fields=["description"])
    return counts


def _ensure_runner_evaluation(name: str, items: int):
    """An evaluation `name` with `items` datapoints {"q": i} and one exact-match evaluator, made once."""
    from comparisons.bulk import copy_rows
    from comparisons.models import Datapoint, Dataset, Evaluation, Evaluator, Function

    if Evaluation.objects.filter(name=name).exists():
        return
    function = Function.objects.create(name=f"{name}_function", kind="chat")
    dataset = Dataset.objects.create(name=f"{name}_dataset")
    evaluation = Evaluation.objects.create(name=name, function=function, dataset=dataset)
    Evaluator.objects.create(evaluation=evaluation, name="exact", kind="exact_match", value_type="boolean")
    base = _ms(T0)
    offset = 10**12 if name == RUNNER_EVALUATION else 2 * 10**12  # id sequences apart from the others'
    copy_rows(Datapoint, ["id", "dataset_id", "function_id", "name", "input", "reference_output", "tags"],
              ((_id(base + i, offset + i), dataset.id, function.id, "", {"q": i}, f"a{i}", {})
               for i in range(items)))


# ---------------------------------------------------------------------------------------------
# Measuring


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return {"median": statistics.median(samples), "p95": p95}


# The floor: hand-written SQL for page 1's rows and cells. Two shapes are timed and the faster one
# counts: one output row per (datapoint, run, metric), or one per datapoint with its cells as JSON.
FLOOR_SQL = {
    "flat": """
WITH page AS (
    SELECT d.id, d.name, d.input, d.reference_output, d.staled_at
    FROM comparisons_datapoint d
    WHERE d.dataset_id = %(dataset)s AND d.function_id = %(function)s AND ({windows})
    ORDER BY d.id DESC
    LIMIT 101
)
SELECT p.id, p.name, p.input, p.reference_output, i.run_id, i.id, i.output, i.error, i.latency_ms,
       f.metric, f.value, f.source, f.reason
FROM page p
LEFT JOIN comparisons_inference i ON i.datapoint_id = p.id AND i.run_id = ANY(%(runs)s)
LEFT JOIN LATERAL (
    SELECT DISTINCT ON (fb.metric) fb.metric, fb.value, fb.source, fb.reason
    FROM comparisons_feedback fb WHERE fb.inference_id = i.id
    ORDER BY fb.metric, fb.id DESC
) f ON true
ORDER BY p.id DESC
""",
    "json": """
SELECT d.id, d.name, d.input, d.reference_output, d.staled_at, (
    SELECT json_agg(json_build_array(i.run_id, i.id, i.output, i.error, i.latency_ms, (
        SELECT json_agg(json_build_array(w.metric, w.value, w.source, w.reason)) FROM (
            SELECT DISTINCT ON (fb.metric) fb.metric, fb.value, fb.source, fb.reason FROM comparisons_feedback fb
            WHERE fb.inference_id = i.id ORDER BY fb.metric, fb.id DESC
        ) w
    )))::text
    FROM comparisons_inference i WHERE i.datapoint_id = d.id AND i.run_id = ANY(%(runs)s)
)
FROM comparisons_datapoint d
WHERE d.dataset_id = %(dataset)s AND d.function_id = %(function)s AND ({windows})
ORDER BY d.id DESC
LIMIT 101
""",
}


def floor_queries(comparison) -> dict[str, tuple[str, dict]]:
    """Each hand-written SQL shape for page 1's rows and cells, with its parameters."""
    windows, params = [], {"dataset": comparison.evaluation.dataset_id, "function": comparison.evaluation.function_id,
                           "runs": [r.id for r in comparison.runs]}
    for k, run in enumerate(comparison.runs):
        windows.append(f"(d.id <= %(bound{k})s AND (d.staled_at IS NULL OR d.staled_at > %(time{k})s))")
        params[f"bound{k}"], params[f"time{k}"] = uuid7_max(run.time), run.time
    return {name: (sql.format(windows=" OR ".join(windows)), params) for name, sql in FLOOR_SQL.items()}


def measure(scale_name: str, runs_compared: list[int], *, progress: bool = True) -> dict:
    """Every figure of the benchmark, in milliseconds unless named otherwise."""
    import psutil
    from django.test import Client, override_settings

    from comparisons.models import Evaluation, EvaluationRun, Feedback, Inference

    scale = SCALES[scale_name]
    # Measure as in production: with DEBUG on, Django would also log every query it runs.
    settings.DEBUG = False
    # The views, not the static files: plain static names, so no collectstatic manifest is needed here
    # (the load test serves the collected, hashed files with gunicorn).
    override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}, WHITENOISE_AUTOREFRESH=True).enable()
    settings.SECURE_SSL_REDIRECT = False  # the test client speaks plain HTTP
    # Every page rendered from the database, as on the first request after a write: the cached rows
    # (comparisons/rows_cache.py) are measured apart (rows_page1_cached) and by the load test.
    cached_rows = settings.CACHES["comparison_rows"]
    override_settings(CACHES={**settings.CACHES, "comparison_rows": {
        "BACKEND": "django.core.cache.backends.dummy.DummyCache"}}).enable()
    if "testserver" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="bench"))
    evaluation = Evaluation.objects.get(name=EVALUATION)
    all_runs = list(EvaluationRun.objects.filter(evaluation=evaluation).order_by("id").values_list("id", flat=True))
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "load-more"}
    url = f"/evaluations/{EVALUATION}/"

    def log(text):
        if progress:
            print(text, file=sys.stderr)

    def get(path, params, headers=htmx):
        response = client.get(path, params, **headers)
        if response.status_code != 200:
            raise RuntimeError(f"{path} {params} answered {response.status_code}: {response.content[:300]!r}")
        return response

    results = {"scale": scale_name, "datapoints": 0, "inferences": Inference.objects.count(),
               "feedback": Feedback.objects.count()}
    results["datapoints"] = evaluation.datapoints().count()
    per_runs, filled = {}, {}
    for count in runs_compared:
        run_ids = all_runs[-count:]
        ids = ",".join(str(r) for r in run_ids)
        comparison = resolve_comparison(evaluation, run_ids)
        log(f"measuring {count} runs …")
        figures = {}
        figures["rows_page1"] = _time(lambda ids=ids: get(url, {"run_ids": ids, "view": "stacked"}), scale.repeats)
        figures["rows_grid_page1"] = _time(lambda ids=ids: get(url, {"run_ids": ids, "view": "grid"}), scale.repeats)
        cursor_index = (scale.deep_page - 1) * 100 - 1
        deep_after = rows_queryset(comparison, RowQuery()).values_list("id", flat=True)[cursor_index:cursor_index + 1]
        deep_after = str(deep_after[0])
        deep_params = {"run_ids": ids, "after": deep_after, "view": "stacked"}
        figures["rows_deep"] = _time(lambda params=deep_params: get(url, params), scale.repeats)
        with override_settings(CACHES={**settings.CACHES, "comparison_rows": cached_rows}):
            figures["rows_page1_cached"] = _time(lambda ids=ids: get(url, {"run_ids": ids, "view": "stacked"}),
                                                 scale.repeats)
        # The queries alone (no HTTP, no templates): keyset paging should make these equal.
        figures["query_page1"] = _time(lambda c=comparison: comparison_page(c, RowQuery()), scale.repeats)
        deep_query = RowQuery(after=parse_uuid(deep_after))
        figures["query_deep"] = _time(lambda c=comparison, q=deep_query: comparison_page(c, q), scale.repeats)
        # How much each page holds: cells with an output (the rest are one-line notes).
        filled[count] = {name: sum(cell.inference is not None and cell.state != "out_of_window"
                                   for row in comparison_page(comparison, q).rows for cell in row.cells)
                         for name, q in (("page1", RowQuery()), ("deep", deep_query))}
        figures["stats"] = _time(lambda ids=ids: get(f"/evaluations/{EVALUATION}/stats/", {"run_ids": ids},
                                                     {"HTTP_HX_REQUEST": "true"}), scale.repeats)
        filtered = {"run_ids": ids, "filter": "regressed", "view": "stacked"}
        figures["filtered"] = _time(lambda params=filtered: get(url, params), scale.repeats)
        figures["sorted"] = _time(lambda ids=ids: get(url, {"run_ids": ids, "sort": "regressed_first",
                                                             "metric": "quality", "view": "stacked"}), scale.repeats)
        floors = {}
        for shape, (sql, params) in floor_queries(comparison).items():
            def floor(sql=sql, params=params):
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    cursor.fetchall()

            floors[shape] = _time(floor, scale.repeats)
        figures["floor"] = min(floors.values(), key=lambda timing: timing["median"])
        per_runs[count] = figures
    results["search_ms"] = _time(lambda: get(f"/evaluations/{EVALUATION}/runs/", {"q": "variant-1"},
                                             {"HTTP_HX_REQUEST": "true"}), scale.repeats)["median"]

    main = max(runs_compared) if 5 not in runs_compared else 5
    figures = per_runs[main]
    for key in ("rows_page1", "rows_page1_cached", "rows_grid_page1", "rows_deep", "query_page1", "query_deep",
                "stats", "filtered", "sorted", "floor"):
        results[f"{key}_ms"] = figures[key]["median"]
        results[f"{key}_p95_ms"] = figures[key]["p95"]
    results["rows_to_floor_ratio"] = results["rows_page1_ms"] / results["floor_ms"]
    results["deep_to_page1_ratio"] = results["rows_deep_ms"] / results["rows_page1_ms"]
    results["grid_to_stacked_ratio"] = results["rows_grid_page1_ms"] / results["rows_page1_ms"]
    results["runs_compared"] = main
    results["filled_cells_page1"], results["filled_cells_deep"] = filled[main]["page1"], filled[main]["deep"]
    results["by_runs_compared"] = {str(k): {f"{n}_ms": v["median"] for n, v in f.items()} for k, f in per_runs.items()}

    log("measuring the export …")
    ids = ",".join(str(r) for r in all_runs[-main:])
    command = [sys.executable, "manage.py", "export_comparison", EVALUATION, "--run-ids", ids, "--output", "-"]
    env = {**os.environ, "DATABASE_URL": database_url(), "DEBUG": "0",
           "SECRET_KEY": os.environ.get("SECRET_KEY") or "benchmark-only-not-a-secret"}
    started = time.perf_counter()
    process = psutil.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"export failed: {process.stderr.read().decode()[-500:]}")
    export_lines = main * rows_queryset(resolve_comparison(evaluation, all_runs[-main:]), RowQuery()).order_by().count()
    results["export_rows"] = export_lines
    results["export_s"] = elapsed
    results["export_rows_per_s"] = export_lines / elapsed
    results["export_peak_rss_mb"] = peak / 2**20

    log("measuring the runner …")
    results.update(measure_runner(scale))
    log("measuring runs launched from the portal (a worker process) …")
    results.update(measure_launch(scale, client, results["runner_actual_s"]))
    log("measuring the word diff …")
    results.update(measure_diff(scale))

    log("measuring feedback writes …")
    results.update(measure_feedback_writes(scale, all_runs[-main:]))
    log("verifying the kept tables against a recomputation …")
    from comparisons.integrity import find_drift

    results["kept_tables_drift"] = len(find_drift(all_runs[-main:]))
    return results


def measure_load(runs_compared: list[int], **options) -> dict:
    """The load test (comparisons/loadtest.py) on the runs `measure` compares: the page, and page 2's rows
    fragment, the first one its infinite scroll loads."""
    from comparisons.loadtest import measure_load as load
    from comparisons.models import EvaluationRun

    run_ids = list(EvaluationRun.objects.filter(evaluation__name=EVALUATION).order_by("id")
                   .values_list("id", flat=True))[-(5 if 5 in runs_compared else max(runs_compared)):]
    page1 = list(rows_queryset(resolve_comparison(EVALUATION, run_ids), RowQuery()).values_list("id", flat=True)[:100])
    return load(EVALUATION, run_ids, str(page1[-1]), database_url=database_url(), **options)


def measure_feedback_writes(scale: Scale, run_ids) -> dict:
    """The write path through the triggers, with the compared runs' pairs cached (stats were measured):
    one human correction per transaction, and runner-style COPY batches of 1,000 scores."""
    from django.db import transaction

    from comparisons.bulk import copy_rows
    from comparisons.models import Feedback, Inference

    rng = random.Random(11)
    inferences = list(Inference.objects.filter(run_id__in=run_ids, error__isnull=True)
                      .order_by("id").values_list("id", flat=True)[:5000])
    values = [0.0, 1.0]

    def correction():
        Feedback.objects.create(inference_id=rng.choice(inferences), metric="correct", value=rng.choice(values),
                                source="human")

    write = _time(correction, max(scale.repeats * 5, 30))
    batch = [(None, rng.choice(inferences), "quality", rng.random(), "evaluator", "", {}) for _ in range(1000)]
    samples = []
    for _ in range(3):
        rows = [(uuid7(), *row[1:]) for row in batch]
        started = time.perf_counter()
        with transaction.atomic():
            copy_rows(Feedback, ["id", "inference_id", "metric", "value", "source", "reason", "tags"], rows)
        samples.append(time.perf_counter() - started)
    return {"feedback_write_ms": write["median"], "feedback_write_p95_ms": write["p95"],
            "feedback_batch_rows_per_s": len(batch) / statistics.median(samples)}


def diff_texts(words: int = 10_000, *, seed: int = 20261122) -> tuple[str, str, str]:
    """Three deterministic texts of `words` words: a, an unrelated b, and a with 3% of its words edited."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 10)))
                  for _ in range(5000)]

    def text(tokens):
        # Sentences of 12 words and paragraphs of 8 sentences, as long LLM outputs have.
        return "".join(token + ("\n\n" if (k + 1) % 96 == 0 else ". " if (k + 1) % 12 == 0 else " ")
                       for k, token in enumerate(tokens)).strip()

    a = [rng.choice(vocabulary) for _ in range(words)]
    b = [rng.choice(vocabulary) for _ in range(words)]
    edited = list(a)
    for _ in range(words * 3 // 100):
        edited[rng.randrange(words)] = rng.choice(vocabulary)
    return text(a), text(b), text(edited)


def measure_diff(scale: Scale) -> dict:
    """The datapoint page's word diff of two 10,000-word outputs: unrelated (the worst case, where the
    time limit stops the diff) and similar (3% of the words edited)."""
    from comparisons.diff import word_diff

    a, b, edited = diff_texts()
    return {"diff_10k_words_ms": _time(lambda: word_diff(a, b), scale.repeats)["median"],
            "diff_10k_words_similar_ms": _time(lambda: word_diff(a, edited), scale.repeats)["median"]}


RUNNER_10K = {"items": 10_000, "concurrency": 200, "latency_s": 0.05}
RUNNER_10K_TINY = {"items": 1_000, "concurrency": 200, "latency_s": 0.01}  # the tiny scale's smoke test


def measure_runner(scale: Scale) -> dict:
    """The runner against the ideal: `runner_items` datapoints whose task sleeps `runner_latency_s`, at
    concurrency 50, as an async task (asyncio.sleep) and as a sync one (time.sleep, in threads); then
    10,000 at concurrency 200 against a bare asyncio loop doing the same sleeps, in a fresh process so
    that its peak RSS is the runner's."""
    from comparisons.models import EvaluationRun
    from comparisons.runner import evaluate

    latency = scale.runner_latency_s

    async def async_task(input):
        await asyncio.sleep(latency)
        return f"a{input['q']}"

    def sync_task(input):
        time.sleep(latency)
        return f"a{input['q']}"

    ideal = scale.runner_items * latency / 50
    results = {"runner_ideal_s": ideal}
    for key, task in (("runner", async_task), ("runner_sync", sync_task)):
        samples = []
        for k in range(3):
            started = time.perf_counter()
            result = evaluate(RUNNER_EVALUATION, f"bench-{k}", task, concurrency=50, progress=False)
            samples.append(time.perf_counter() - started)
            if len(result.items) != scale.runner_items or result.errors:
                raise RuntimeError("the runner benchmark did not complete every item")
        results[f"{key}_actual_s"] = statistics.median(samples)
        results[f"{key}_overhead_ratio"] = statistics.median(samples) / ideal
    EvaluationRun.objects.filter(evaluation__name=RUNNER_EVALUATION).delete()

    workload = RUNNER_10K_TINY if scale == SCALES["tiny"] else RUNNER_10K
    _ensure_runner_evaluation(RUNNER_EVALUATION + "_10k", workload["items"])
    code = ("import django; django.setup(); from comparisons.benchmark import runner_10k_child; "
            f"runner_10k_child({workload!r})")
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "evalcompare.settings",
           "SECRET_KEY": os.environ.get("SECRET_KEY") or "benchmark-only-not-a-secret"}
    child = subprocess.run([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR, capture_output=True,
                           text=True, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"the 10,000-item runner benchmark failed: {child.stderr[-800:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    EvaluationRun.objects.filter(evaluation__name=RUNNER_EVALUATION + "_10k").delete()
    results.update(figures)
    results["runner_10k_ratio"] = figures["runner_10k_s"] / figures["runner_10k_bare_s"]
    return results


LAUNCH_TASK = "bench-sleep"


async def bench_sleep_task(input):
    """The launch benchmark's task, run by a worker process: sleeps EVALCOMPARE_BENCH_LATENCY_S."""
    await asyncio.sleep(float(os.environ.get("EVALCOMPARE_BENCH_LATENCY_S", "0.05")))
    return f"a{input['q']}"


def measure_launch(scale: Scale, client, cli_s: float) -> dict:
    """Runs launched through the New-run form and run by a real worker process, on the runner
    benchmark's work (`runner_items` × `runner_latency_s` at concurrency 50), with an idle worker:
    `launch_first_progress_s`, from the POST to the first recorded datapoint (what the progress
    fragment counts); `launch_s`, from the POST to the run's final status; `launch_overhead_ratio`,
    launch_s over the command-line runner's time for the same work (`runner_actual_s`)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    from comparisons.models import EvaluationRun, Inference

    get_user_model().objects.get(username="bench").user_permissions.add(
        Permission.objects.get(codename="launch_run", content_type__app_label="comparisons"))
    path = "comparisons.benchmark:bench_sleep_task"
    settings.EVALCOMPARE_TASKS = {**settings.EVALCOMPARE_TASKS, LAUNCH_TASK: path}  # the form lists it
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "evalcompare.settings",
           "SECRET_KEY": os.environ.get("SECRET_KEY") or "benchmark-only-not-a-secret",
           "EVALCOMPARE_TASKS": json.dumps({LAUNCH_TASK: path}),
           "EVALCOMPARE_BENCH_LATENCY_S": repr(scale.runner_latency_s)}
    env.pop("DEBUG", None)
    log = open(os.devnull, "w")  # noqa: SIM115 -- closed below
    worker = subprocess.Popen([sys.executable, "manage.py", "procrastinate", "worker", "--queues", "runs"],
                              env=env, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT)

    def wait(condition, what):
        deadline = time.perf_counter() + 300
        while not condition():
            if worker.poll() is not None:
                raise RuntimeError(f"the benchmark's worker exited ({worker.returncode}) while {what}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the launch benchmark timed out while {what}")
            time.sleep(0.002)

    def launch(variant):
        started = time.perf_counter()
        response = client.post(f"/evaluations/{RUNNER_EVALUATION}/runs/new/", {
            "variant": variant, "task": LAUNCH_TASK, "concurrency": "50", "pinned": "on"})
        if response.status_code != 302:
            raise RuntimeError(f"launching failed: HTTP {response.status_code}")
        run = EvaluationRun.objects.get(evaluation__name=RUNNER_EVALUATION, variant_name=variant)
        wait(lambda: Inference.objects.filter(run=run).exists(), "waiting for the first progress")
        first = time.perf_counter() - started
        ended = (EvaluationRun.Status.COMPLETED, EvaluationRun.Status.FAILED, EvaluationRun.Status.CANCELLED)
        wait(lambda: EvaluationRun.objects.filter(id=run.id, status__in=ended).exists(), "waiting for the run")
        total = time.perf_counter() - started
        if (EvaluationRun.objects.get(id=run.id).status != EvaluationRun.Status.COMPLETED
                or Inference.objects.filter(run=run, error__isnull=True).count() != scale.runner_items):
            raise RuntimeError("a launched benchmark run did not complete every item")
        return first, total

    try:
        launch("bench-launch-warm-up")  # the worker's start-up and first imports are not a launch's
        samples = [launch(f"bench-launch-{k}") for k in range(3)]
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        EvaluationRun.objects.filter(evaluation__name=RUNNER_EVALUATION).delete()
    first = statistics.median(sample[0] for sample in samples)
    total = statistics.median(sample[1] for sample in samples)
    return {"launch_first_progress_s": first, "launch_s": total, "launch_overhead_ratio": total / cli_s}


def runner_10k_child(workload: dict = RUNNER_10K):
    """In a fresh process: the bare asyncio loop, then evaluate(), over the same 10,000 sleeps; prints
    the figures as JSON. Peak RSS is the process's own high-water mark (VmHWM where there is one),
    Django and the runner included."""
    import resource

    from comparisons.runner import evaluate

    items, concurrency, latency = workload["items"], workload["concurrency"], workload["latency_s"]

    async def task(input):
        await asyncio.sleep(latency)
        return f"a{input['q']}"

    async def bare():  # the same work with nothing around it: workers pulling from one iterator
        inputs = iter([{"q": i} for i in range(items)])
        outputs = []

        async def worker():
            for input in inputs:
                outputs.append(await task(input))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return outputs

    bare_samples, runner_samples = [], []
    for k in range(3):
        started = time.perf_counter()
        asyncio.run(bare())
        bare_samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = evaluate(RUNNER_EVALUATION + "_10k", f"bench-10k-{k}", task, concurrency=concurrency,
                          progress=False)
        runner_samples.append(time.perf_counter() - started)
        if len(result.items) != items or result.errors:
            raise RuntimeError("the 10,000-item runner benchmark did not complete every item")
        del result
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:  # Linux: ru_maxrss survives fork and exec, so it would report the (large) benchmark parent's peak
        with open("/proc/self/status") as status:
            peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        pass
    print(json.dumps({"runner_10k_bare_s": statistics.median(bare_samples),
                      "runner_10k_s": statistics.median(runner_samples), "runner_10k_peak_rss_mb": peak_kb / 1024}))


JSON_KEYS = ["scale", "datapoints", "inferences", "feedback", "rows_page1_ms", "rows_deep_ms", "floor_ms",
             "rows_to_floor_ratio", "deep_to_page1_ratio", "query_page1_ms", "query_deep_ms", "rows_page1_cached_ms",
             "rows_grid_page1_ms", "grid_to_stacked_ratio",
             "stats_ms", "search_ms",
             "filtered_ms", "sorted_ms",
             "export_rows_per_s", "export_peak_rss_mb", "runner_ideal_s", "runner_actual_s", "runner_overhead_ratio",
             "runner_sync_actual_s", "runner_sync_overhead_ratio", "runner_10k_bare_s", "runner_10k_s",
             "runner_10k_ratio", "runner_10k_peak_rss_mb", "launch_first_progress_s", "launch_s",
             "launch_overhead_ratio",
             "feedback_write_ms", "feedback_batch_rows_per_s", "kept_tables_drift", "diff_10k_words_ms",
             "diff_10k_words_similar_ms"]
TARGETS = {"rows_to_floor_ratio": ("≤", 2), "deep_to_page1_ratio": ("≤", 1.2),
           "grid_to_stacked_ratio": ("≤", 1.2), "stats_ms": ("≤", 300),
           "search_ms": ("≤", 50), "filtered_ms": ("≤", 500), "sorted_ms": ("≤", 500),
           "export_rows_per_s": ("≥", 50_000), "export_peak_rss_mb": ("≤", 150), "runner_overhead_ratio": ("≤", 1.10),
           "runner_sync_overhead_ratio": ("≤", 1.15), "runner_10k_ratio": ("≤", 1.15),
           "runner_10k_peak_rss_mb": ("≤", 150), "launch_first_progress_s": ("≤", 1.5),
           "launch_overhead_ratio": ("≤", 1.25),
           "feedback_write_ms": ("≤", 20), "kept_tables_drift": ("≤", 0),
           "diff_10k_words_ms": ("≤", 300)}


def format_table(results: dict) -> str:
    lines = [f"evalcompare benchmark · scale {results['scale']} · {results['datapoints']:,} datapoint versions, "
             f"{results['inferences']:,} inferences, {results['feedback']:,} feedback rows · "
             f"{results['runs_compared']} runs compared", ""]
    lines.append(f"{'figure':<24}{'median':>12}{'p95':>12}   target (at default scale)")
    for key in JSON_KEYS[4:]:
        value = results[key]
        p95 = results.get(key.replace("_ms", "_p95_ms")) if key.endswith("_ms") else None
        target = TARGETS.get(key)
        verdict = ""
        if target:
            ok = value <= target[1] if target[0] == "≤" else value >= target[1]
            verdict = f"{target[0]} {target[1]:,}  {'ok' if ok else 'MISSED'}"
        shown = f"{value:,.1f}" if value >= 10 else f"{value:.3f}"
        lines.append(f"{key:<24}{shown:>12}{(f'{p95:,.1f}' if p95 is not None else ''):>12}   {verdict}")
    for count, figures in results["by_runs_compared"].items():
        lines.append(f"  {count} runs: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()))
    lines.append(f"  cells with an output: page 1 {results['filled_cells_page1']}, "
                 f"deep page {results['filled_cells_deep']}")
    return "\n".join(lines)
