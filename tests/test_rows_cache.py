"""The comparison's cached rows (comparisons/rows_cache.py) against fresh renders.

Every kind of write a page shows — a correction, a runner batch, a reverted or edited score, a
deleted inference, an edited or retired datapoint, an evaluator's cutoff, a renamed run — must reach
the next response, cached or not; and with several connections writing while others read, the pages
cached afterwards must equal pages rendered from scratch.
"""

import random
import threading

import pytest
from django.core.cache import caches
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from comparisons.bulk import copy_rows
from comparisons.ids import uuid7
from comparisons.models import Datapoint, DatasetVersion, Evaluator, Feedback, Inference
from comparisons.queries import PAGE_SIZE
from comparisons.rows_cache import CACHE_ALIAS
from tests.factories import DatapointFactory, RunFactory, UserFactory, at
from tests.test_concurrency import run_threads
from tests.test_window_scores import make_evaluation

INFERENCE_COLUMNS = ["id", "run_id", "datapoint_id", "input", "output", "variant_name", "variant_pinned",
                     "latency_ms", "input_tokens", "output_tokens", "cost", "error", "tags"]
FEEDBACK_COLUMNS = ["id", "inference_id", "metric", "value", "source", "reason", "tags"]
ROWS = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "load-more"}
COMPARISON = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "comparison"}


@pytest.fixture(autouse=True)
def empty_cache():
    caches[CACHE_ALIAS].clear()
    yield
    caches[CACHE_ALIAS].clear()


def inference_row(run, datapoint, output, error=None):
    return (uuid7(), run.id, datapoint.id, {}, output, run.variant_name, False, 10.0, None, None, None, error, {})


def make_comparison(datapoints=PAGE_SIZE + 8):
    """Two finished runs over `datapoints` datapoints (two pages), every cell scored; one cell missing."""
    evaluation = make_evaluation()
    points = [DatapointFactory(evaluation=evaluation, created=at(i / 1000)) for i in range(datapoints)]
    runs = [RunFactory(evaluation=evaluation, id=uuid7(at(m)), variant_name=f"v{m}") for m in (100, 200)]
    rng = random.Random(5)
    rows = [inference_row(run, d, f"answer {i} by {run.variant_name}") for run in runs
            for i, d in enumerate(points) if (run, i) != (runs[1], 3)]
    copy_rows(Inference, INFERENCE_COLUMNS, rows)
    copy_rows(Feedback, FEEDBACK_COLUMNS, [
        (uuid7(), row[0], metric, value, "evaluator", "", {}) for row in rows
        for metric, value in (("correct", float(rng.random() < 0.5)), ("quality", rng.random()))])
    return evaluation, runs, points


def pages(evaluation, runs, points):
    """(url, headers) of every kind of response that uses the cache."""
    base = f"/evaluations/{evaluation.name}/?run_ids={runs[0].id},{runs[1].id}"
    after = sorted((d.id for d in points), reverse=True)[min(PAGE_SIZE, len(points)) - 1]
    return [(base, COMPARISON), (f"{base}&after={after}", ROWS), (f"{base}&sort=regressed_first", COMPARISON),
            (f"{base}&filter=improved&metric=quality", COMPARISON), (f"{base}&filter=differs", ROWS)]


def fetch(client, url, headers) -> str:
    response = client.get(url, **headers)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def assert_cached_equals_fresh(client, urls) -> None:
    cached = [fetch(client, url, headers) for url, headers in urls]
    caches[CACHE_ALIAS].clear()
    fresh = [fetch(client, url, headers) for url, headers in urls]
    for (url, _), was, now in zip(urls, cached, fresh, strict=True):
        assert was == now, f"{url} served from the cache differs from a fresh render"


def logged_in_client() -> Client:
    client = Client()
    client.force_login(UserFactory())
    return client


def test_a_second_request_is_served_from_the_cache_and_equals_the_first(db):
    evaluation, runs, points = make_comparison()
    client = logged_in_client()
    urls = pages(evaluation, runs, points)
    first = [fetch(client, url, headers) for url, headers in urls]
    with CaptureQueriesContext(connection) as queries:
        assert [fetch(client, url, headers) for url, headers in urls] == first
    assert not [q for q in queries.captured_queries if "comparisons_feedback" in q["sql"]], \
        "a cached page read the rows again"
    assert f"answer {len(points) - 1} by v100" in first[0] and "load-more" in first[0]
    assert "answer 0 by v100" in first[1]


WRITES = {
    "a correction": lambda runs, points: Feedback.objects.record(
        Inference.objects.get(run=runs[1], datapoint=points[-1]), "quality", 0.123456, reason="looked again"),
    "a runner batch filling the missing cell": lambda runs, points: (
        copy_rows(Inference, INFERENCE_COLUMNS, [row := inference_row(runs[1], points[3], "late answer")]),
        copy_rows(Feedback, FEEDBACK_COLUMNS, [(uuid7(), row[0], "correct", 1.0, "evaluator", "", {})])),
    "a reverted score": lambda runs, points: Feedback.objects.filter(
        inference__run=runs[1], inference__datapoint=points[-1], metric="correct").delete(),
    "a changed score": lambda runs, points: Feedback.objects.filter(
        inference__run=runs[0], inference__datapoint=points[-2], metric="quality").update(value=0.999),
    "a deleted inference": lambda runs, points: Inference.objects.filter(run=runs[0], datapoint=points[-3]).delete(),
    "an errored output": lambda runs, points: Inference.objects.filter(run=runs[0], datapoint=points[-4]).update(
        error="timeout ☃"),
    "a retired datapoint": lambda runs, points: points[-5].retire(when=at(150)),
    "an edited datapoint": lambda runs, points: points[-6].revise(when=at(50), name="renamed ✓"),
    "a new cutoff": lambda runs, points: Evaluator.objects.filter(name="quality").update(cutoff=0.5),
    "a renamed run": lambda runs, points: type(runs[1]).objects.filter(id=runs[1].id).update(
        variant_name="renamed-variant"),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_every_kind_of_write_reaches_the_next_response(db, write):
    evaluation, runs, points = make_comparison()
    client = logged_in_client()
    urls = pages(evaluation, runs, points)
    before = [fetch(client, url, headers) for url, headers in urls]
    WRITES[write](runs, points)
    after = [fetch(client, url, headers) for url, headers in urls]
    assert after != before, f"{write} changed nothing on the page"
    assert_cached_equals_fresh(client, urls)


def test_the_version_changes_in_the_writing_transaction_and_only_there(db):
    evaluation, runs, points = make_comparison()
    version = DatasetVersion.objects.get(dataset_id=evaluation.dataset_id).version
    with transaction.atomic():
        Feedback.objects.record(Inference.objects.filter(run=runs[0]).first(), "correct", 0.0)
        Feedback.objects.record(Inference.objects.filter(run=runs[0]).last(), "correct", 1.0)
    assert DatasetVersion.objects.get(dataset_id=evaluation.dataset_id).version == version + 2  # per statement
    fetch(logged_in_client(), *pages(evaluation, runs, points)[0])  # reading writes nothing
    assert DatasetVersion.objects.get(dataset_id=evaluation.dataset_id).version == version + 2


def test_turned_off_it_keeps_nothing(db, settings):
    from django.core.cache.backends.dummy import DummyCache

    evaluation, runs, points = make_comparison(datapoints=5)
    settings.CACHES = {**settings.CACHES, CACHE_ALIAS: {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    assert isinstance(caches[CACHE_ALIAS], DummyCache)  # the setting_changed signal remade the handler
    client = logged_in_client()
    url, headers = pages(evaluation, runs, points)[0]
    assert fetch(client, url, headers) == fetch(client, url, headers)
    assert "answer 4 by v100" in fetch(client, url, headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seed", [1, 2])
def test_pages_cached_while_several_connections_write_equal_fresh_renders(seed):
    """Writers commit corrections, runner batches, deletes and datapoint edits on their own connections
    while readers fill the cache on theirs; after every round the cached pages equal fresh ones."""
    evaluation, runs, points = make_comparison()
    urls = pages(evaluation, runs, points)
    checker = logged_in_client()
    for round_number in range(2):
        write_while_reading(random.Random(seed * 10 + round_number), evaluation, runs, points, urls)
        assert_cached_equals_fresh(checker, urls)


def write_while_reading(rng, evaluation, runs, points, urls):
    writing = threading.Event()
    writing.set()

    def corrector(number):
        local = random.Random(rng.random() + number)

        def work():
            inferences = list(Inference.objects.filter(run__in=runs).values_list("id", flat=True))
            for _ in range(15):
                inference = Inference.objects.filter(id=local.choice(inferences)).first()  # a batch may delete it
                if inference is not None:
                    Feedback.objects.record(inference, local.choice(["correct", "quality"]),
                                            float(local.random() < 0.5), source=local.choice(["human", "evaluator"]))
        return work

    def batcher():
        local = random.Random(rng.random())
        for _ in range(4):
            with transaction.atomic():
                rows = [inference_row(runs[1], d, f"re-run {local.random():.6f}") for d in local.sample(points, 3)
                        if not Inference.objects.filter(run=runs[1], datapoint=d).exists()]
                copy_rows(Inference, INFERENCE_COLUMNS, rows)
                targets = [r[0] for r in rows] + list(Inference.objects.filter(run=runs[0]).order_by("?")
                                                      .values_list("id", flat=True)[:5])
                copy_rows(Feedback, FEEDBACK_COLUMNS, [(uuid7(), t, "quality", local.random(), "evaluator", "", {})
                                                       for t in targets])
                Inference.objects.filter(run=runs[1], datapoint=local.choice(points)).delete()

    def editor():
        local = random.Random(rng.random())
        for _ in range(3):
            point = Datapoint.objects.filter(dataset_id=evaluation.dataset_id, staled_at__isnull=True).order_by(
                "?").first()
            if local.random() < 0.5:
                point.revise(when=at(local.choice([50, 150, 250])), name=f"edit {local.random():.4f}")
            else:
                point.retire(when=at(local.choice([50, 150, 250])))

    def reader():
        client = logged_in_client()
        while writing.is_set():
            for url, headers in urls:
                fetch(client, url, headers)

    reader_errors = []
    readers = threading.Thread(target=lambda: reader_errors.extend(run_threads([reader, reader])))
    readers.start()
    try:
        assert run_threads([corrector(0), corrector(1), corrector(2), batcher, editor]) == []
    finally:
        writing.clear()
        readers.join(timeout=120)
    assert reader_errors == []
