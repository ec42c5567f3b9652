"""The kept tables under concurrent writers, on real PostgreSQL connections (one per thread).

Eight reviewers correct the same cells at once while a runner batch is copied in, a datapoint is
edited back in time and a comparison fills its paired sums for the first time. Afterwards every kept
table must equal a from-scratch computation, exactly; `verify_scores` must find no drift.
"""

import random
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from comparisons.bulk import copy_rows
from comparisons.ids import uuid7
from comparisons.models import Feedback, Inference
from comparisons.queries import comparison_stats, paired_summaries, resolve_comparison
from tests.factories import DatapointFactory, InferenceFactory, RunFactory, at
from tests.test_window_scores import ADVERSARIAL, assert_kept_tables_exact, make_evaluation

WRITERS = 8
WRITES_EACH = 50


def run_threads(targets) -> list[BaseException]:
    """Start every target at once (a barrier), each on its own connection; return what they raised."""
    barrier = threading.Barrier(len(targets))
    errors = []

    def wrap(target):
        try:
            barrier.wait(timeout=30)
            target()
        except BaseException as error:  # reported to the test below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrap, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    return errors


def wait_until_another_connection_waits_for_a_lock(timeout: float = 20.0) -> None:
    """Poll pg_stat_activity until some other session of this database is waiting for a lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # activity is otherwise read once per transaction
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.005)
    raise AssertionError("the other writer never waited for the lock")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seed", [1, 2])
def test_concurrent_corrections_batches_edits_and_a_first_fill_leave_exact_tables(seed):
    evaluation = make_evaluation()
    baseline, other = (RunFactory(evaluation=evaluation, id=uuid7(at(m))) for m in (100, 200))
    datapoints = [DatapointFactory(evaluation=evaluation, created=at(i)) for i in range(10)]
    cells = []  # the contested cells: both runs' inferences on the first five datapoints
    for run in (baseline, other):
        for datapoint in datapoints[:5]:
            inference = InferenceFactory(run=run, datapoint=datapoint)
            cells.append(inference)
            Feedback.objects.create(inference=inference, metric="correct", value=1)
            Feedback.objects.create(inference=inference, metric="quality", value=0.5)
    comparison = resolve_comparison(evaluation, [baseline.id, other.id])

    def reviewer(number):
        rng = random.Random(seed * 100 + number)

        def write():
            inference = rng.choice(cells)
            metric = rng.choice(["correct", "quality"])
            value = float(rng.random() < 0.5) if metric == "correct" else \
                rng.choice([*ADVERSARIAL, rng.random(), rng.random()])
            Feedback.objects.record(inference, metric, value, source=rng.choice(["human", "evaluator"]))

        def work():
            done = 0
            while done < WRITES_EACH:
                if rng.random() < 0.3:  # a few corrections in one transaction
                    with transaction.atomic():
                        for _ in range(min(3, WRITES_EACH - done)):
                            write()
                            done += 1
                else:
                    write()
                    done += 1
        return work

    def runner_batch():
        """What the runner's recorder does: COPY a batch of inferences and their scores in one transaction,
        here also scores for the contested cells (as a re-scoring run would)."""
        rng = random.Random(seed)
        for _ in range(5):
            with transaction.atomic():
                new = [(uuid7(), other.id, d.id, {}, "out", "v", False, 10.0, None, None, None, None, {})
                       for d in datapoints[5:] if not Inference.objects.filter(run=other, datapoint=d).exists()]
                copy_rows(Inference, ["id", "run_id", "datapoint_id", "input", "output", "variant_name",
                                      "variant_pinned", "latency_ms", "input_tokens", "output_tokens", "cost",
                                      "error", "tags"], new)
                targets = [row[0] for row in new] + [c.id for c in rng.sample(cells, 4)]
                copy_rows(Feedback, ["id", "inference_id", "metric", "value", "source", "reason", "tags"],
                          [(uuid7(), target, "quality", rng.choice([0.1, 0.9, 1e20, -1e20]), "evaluator", "", {})
                           for target in targets])

    def editor():
        """A back-dated edit: the datapoint leaves the later run's window, then a delete of another."""
        datapoints[2].revise(when=at(150), name="edited")
        datapoints[4].retire(when=at(50))

    def first_fill():
        paired_summaries(comparison)

    errors = run_threads([reviewer(n) for n in range(WRITERS)] + [runner_batch, editor, first_fill])
    assert errors == []
    assert Feedback.objects.filter(source="human").count() > 0
    assert_kept_tables_exact()
    call_command("verify_scores")  # exits non-zero (CommandError) on any drift
    # The statistics the page shows are the kept ones.
    stats = comparison_stats(resolve_comparison(evaluation, [baseline.id, other.id]))
    assert stats.metrics[1].per_run[1].delta is not None


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_correcting_one_cell_at_once_count_it_once():
    """The reported drift: both read the same previous winner and both applied their change (n=3 for 2)."""
    evaluation = make_evaluation()
    run = RunFactory(evaluation=evaluation, id=uuid7(at(100)))
    inferences = [InferenceFactory(run=run, datapoint=DatapointFactory(evaluation=evaluation, created=at(i)))
                  for i in range(2)]
    for inference in inferences:
        Feedback.objects.create(inference=inference, metric="quality", value=0.8)
    contested = inferences[0]
    started = threading.Event()

    def first():
        with transaction.atomic():
            Feedback.objects.record(contested, "quality", 0.9, source="human")
            started.set()
            wait_until_another_connection_waits_for_a_lock()  # the second write is now in flight

    def second():
        started.wait(timeout=10)
        Feedback.objects.record(contested, "quality", 0.7, source="human")


    assert run_threads([first, second]) == []
    assert_kept_tables_exact()
