"""`run_evaluation` interrupted by real signals in a real process: nothing reported is lost, the
run's status is the truth, and the exit code says which signal it was.

The seeded test interrupts EVALCOMPARE_INTERRUPT_MOMENTS runs (default 8) at moments drawn with
EVALCOMPARE_INTERRUPT_SEED (default 11); for a thorough check:
    EVALCOMPARE_INTERRUPT_MOMENTS=50 .venv/bin/pytest tests/test_run_evaluation_interrupts.py
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.urls import reverse

from comparisons.models import EvaluationRun, Inference
from tests.dburl import subprocess_database_url
from tests.factories import qa_evaluation

pytestmark = pytest.mark.django_db(transaction=True)  # the subprocess must see the data, and we its rows

DATAPOINTS = 400


@pytest.fixture
def evaluation():
    return qa_evaluation(DATAPOINTS)


@pytest.fixture
def start():
    """start(task, *args): a `run_evaluation --format jsonl` process; killed at teardown if still running."""
    processes = []

    def start(task, *args):
        processes.append(_start(task, *args))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _start(task, *args):
    url = subprocess_database_url()
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_evaluation", "qa", "--variant", "v", "--task", task, "--format", "jsonl",
         "--no-progress", *args],
        env={**os.environ, "DATABASE_URL": url, "DEBUG": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.005)
    return found


def new_run(known):
    """Wait for the run the process records (its handlers are installed before it exists)."""
    return wait_for(lambda: EvaluationRun.objects.exclude(id__in=known).first())


def reported(stdout):
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    items = {line["inference_id"] for line in lines if "inference_id" in line}
    summary = next((line for line in lines if line.get("summary")), None)
    return items, summary


def recorded(run):
    return {str(i) for i in Inference.objects.filter(run=run).values_list("id", flat=True)}


def test_signals_at_random_moments_lose_nothing_reported_and_leave_a_true_status(evaluation, start):
    moments = int(os.environ.get("EVALCOMPARE_INTERRUPT_MOMENTS", "8"))
    rng = random.Random(int(os.environ.get("EVALCOMPARE_INTERRUPT_SEED", "11")))
    known = set()

    # An uninterrupted run: it completes, and times the window the moments are drawn from.
    process = start("tests.sample_tasks:steady", "--concurrency", "8")
    run = new_run(known)
    began = time.monotonic()
    stdout, _stderr = process.communicate(timeout=120)
    duration = time.monotonic() - began
    known.add(run.id)
    run.refresh_from_db()
    assert process.returncode == 0 and run.status == "completed" and len(recorded(run)) == DATAPOINTS
    assert reported(stdout)[0] == recorded(run)

    outcomes = []
    for _ in range(moments):
        number = rng.choice([signal.SIGINT, signal.SIGTERM])
        delay = rng.uniform(0, duration * 1.1)  # during tasks, during writes, after the last task
        process = start("tests.sample_tasks:steady", "--concurrency", "8")
        run = new_run(known)
        known.add(run.id)
        time.sleep(delay)  # the moment of the interrupt, not something asserted
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=60)
        run.refresh_from_db()
        items, summary = reported(stdout)
        rows = recorded(run)
        context = f"signal {number!r} at {delay:.3f} s: exit {process.returncode}, {run.status}, stderr {stderr[-500:]}"
        assert items <= rows, f"{len(items - rows)} reported item(s) lost; {context}"
        assert run.finished_at is not None and "Traceback" not in stderr, context
        if run.status == "cancelled":
            assert process.returncode == 128 + number and len(rows) < DATAPOINTS, context
            assert items == rows and summary["status"] == "cancelled" and summary["inferences"] == len(rows), context
        else:  # the signal came after every datapoint had finished: nothing was left to cancel
            assert run.status == "completed" and len(rows) == DATAPOINTS, context
            assert process.returncode in (0, -number), context
        outcomes.append(run.status)
    assert "cancelled" in outcomes  # the moments did interrupt runs


def test_sigterm_cancels_the_run_and_exits_143(evaluation, start):
    process = start("tests.sample_tasks:steady", "--concurrency", "2")
    run = new_run(set())
    wait_for(lambda: Inference.objects.filter(run=run).exists())
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    run.refresh_from_db()
    items, summary = reported(stdout)
    assert process.returncode == 143 and run.status == "cancelled" and "Traceback" not in stderr
    assert 0 < len(items) < DATAPOINTS and items == recorded(run) and summary["status"] == "cancelled"


def test_a_hung_sync_task_is_abandoned_and_the_process_exits_130_within_2_s(evaluation, start):
    process = start("tests.sample_tasks:hang_after_first", "--concurrency", "8")
    run = new_run(set())
    wait_for(lambda: Inference.objects.filter(run=run).exists())  # question 0 is written; the others hang
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {time.monotonic() - interrupted:.1f} s after Ctrl-C")
    stdout, stderr = process.communicate()
    run.refresh_from_db()
    items, summary = reported(stdout)
    assert process.returncode == 130 and run.status == "cancelled" and "Traceback" not in stderr
    assert items == recorded(run) and len(items) == 1
    assert summary["inferences"] == 1 and summary["datapoints"] == DATAPOINTS


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(evaluation, start):
    # Tasks that swallow cancellation keep the first Ctrl-C's wind-down waiting (ABANDON_AFTER_S).
    process = start("tests.sample_tasks:ignores_cancel_after_first", "--concurrency", "8")
    run = new_run(set())
    wait_for(lambda: Inference.objects.filter(run=run).exists())
    process.send_signal(signal.SIGINT)
    seen = []
    wait_for(lambda: seen.append(os.read(process.stderr.fileno(), 4096).decode()) or "cancelling" in "".join(seen))
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    stderr = "".join(seen) + stderr
    assert process.returncode == 130
    assert "Interrupted again (SIGINT): exiting at once" in stderr and "Traceback" not in stderr
    assert reported(stdout)[1] is None  # gone before any summary
    run.refresh_from_db()
    assert run.status == "running" and run.heartbeat_at is not None  # left to the heartbeat to show


def test_a_killed_process_leaves_a_heartbeat_by_which_its_run_shows_as_interrupted(evaluation, start, client_logged_in):
    process = start("tests.sample_tasks:hang_after_first", "--concurrency", "8")
    run = new_run(set())
    wait_for(lambda: Inference.objects.filter(run=run).exists())
    process.kill()
    process.communicate(timeout=60)
    run.refresh_from_db()
    assert run.status == "running" and run.heartbeat_at is not None and not run.interrupted
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=run.heartbeat_at - timedelta(seconds=61))
    run.refresh_from_db()
    assert run.interrupted and run.shown_status == "interrupted" and run.shown_status_display == "Interrupted"
    page = client_logged_in.get(reverse("run_detail", args=[run.id])).content.decode()
    assert '<span class="status interrupted">Interrupted</span>' in page
    for page in (client_logged_in.get(reverse("evaluation_list")),
                 client_logged_in.get(reverse("run_search", args=["qa"]), headers={"HX-Request": "true"})):
        assert '<span class="status interrupted">Interrupted</span>' in page.content.decode()


def test_a_reader_that_goes_away_fails_the_run_quietly_with_what_finished(evaluation):
    """`run_evaluation --format jsonl | head -1`: the pipe closes under the run."""
    process = _start("tests.sample_tasks:steady", "--concurrency", "4")
    first = process.stdout.readline()
    process.stdout.close()  # like `head -1` exiting
    process.wait(timeout=60)
    stderr = process.stderr.read()
    run = EvaluationRun.objects.get()
    assert json.loads(first)["inference_id"] in recorded(run)
    assert process.returncode == 128 + signal.SIGPIPE and "Traceback" not in stderr
    assert "The output was closed (broken pipe)" in stderr
    assert run.status == "failed" and "BrokenPipeError" in run.tags["evalcompare::failure"]
    assert 0 < len(recorded(run)) < DATAPOINTS
