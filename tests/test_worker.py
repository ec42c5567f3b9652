"""A real worker process (`manage.py procrastinate worker`) runs portal-launched runs: launch, watch the
progress advance, stop (what finished is kept), resume (every datapoint exactly once)."""

import re
import signal
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.models import Count
from django.urls import reverse
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.exceptions import AlreadyEnqueued

from comparisons.jobs import RECOVER_TASK_NAME, TASK_NAME, recover_stalled_runs, recover_stalled_runs_every_minute
from comparisons.models import EvaluationRun, Inference
from tests.factories import UserFactory, qa_evaluation

pytestmark = pytest.mark.django_db(transaction=True)  # the worker must see the runs, and we its rows

DATAPOINTS = 300


@pytest.fixture
def qa():
    return qa_evaluation(DATAPOINTS)


@pytest.fixture
def launcher_client(client):
    user = UserFactory(username="launcher")
    user.user_permissions.add(Permission.objects.get(codename="launch_run", content_type__app_label="comparisons"))
    client.force_login(user)
    return client


def wait_for(condition, timeout=90):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)
    return found


def status(run):
    return EvaluationRun.objects.values_list("status", flat=True).get(id=run.id)


def done_shown(client, run) -> int:
    body = client.get(reverse("run_progress", args=[run.id]), headers={"HX-Request": "true"}).content.decode()
    return int(re.search(r"<strong>(\d+)</strong> / \d+ datapoints", body).group(1))


def test_a_worker_runs_a_launched_run_which_is_stopped_and_resumed(qa, launcher_client, workers):
    workers()
    response = launcher_client.post(reverse("run_create", args=["qa"]), {
        "variant": "portal", "task": "sample-steady", "concurrency": "1", "tags": "via=portal", "pinned": "on"})
    assert response.status_code == 302
    run = EvaluationRun.objects.get(variant_name="portal")

    # Watching: the progress fragment polls while it runs, and what it shows advances.
    wait_for(lambda: status(run) == "running")
    first = wait_for(lambda: done_shown(launcher_client, run))
    wait_for(lambda: done_shown(launcher_client, run) > first)
    fragment = launcher_client.get(reverse("run_progress", args=[run.id]), headers={"HX-Request": "true"})
    assert 'hx-trigger="every 1s"' in fragment.content.decode()

    # Stop: the worker cancels the run; what finished is kept.
    assert launcher_client.post(reverse("run_stop", args=[run.id])).status_code == 302
    wait_for(lambda: status(run) == "cancelled")
    kept = Inference.objects.filter(run=run).count()
    assert 0 < kept < DATAPOINTS
    final = launcher_client.get(reverse("run_progress", args=[run.id]), headers={"HX-Request": "true"}).content
    assert b"hx-trigger" not in final  # the polling stops
    assert b"Resume" in final

    # Resume: the same run completes with every datapoint exactly once.
    assert launcher_client.post(reverse("run_resume", args=[run.id])).status_code == 302
    wait_for(lambda: status(run) == "completed")
    counts = Inference.objects.filter(run=run).values("datapoint").annotate(n=Count("id"))
    assert len(counts) == DATAPOINTS
    assert {row["n"] for row in counts} == {1}
    run.refresh_from_db()
    assert run.stop_requested_at is None
    assert run.tags["via"] == "portal"
    assert run.inferences.filter(error__isnull=False).count() == 0


def test_two_workers_run_two_runs_at_once_and_never_the_same_datapoint_twice(qa, launcher_client, workers):
    workers()
    workers()
    for variant in ("left", "right"):
        launcher_client.post(reverse("run_create", args=["qa"]), {
            "variant": variant, "task": "sample-steady", "concurrency": "4", "pinned": "on"})
    runs = list(EvaluationRun.objects.order_by("id"))
    # Both run at the same time: one worker each (a worker takes one job at a time by default).
    wait_for(lambda: all(status(run) == "running" for run in runs))
    wait_for(lambda: all(status(run) == "completed" for run in runs))
    for run in runs:
        counts = Inference.objects.filter(run=run).values("datapoint").annotate(n=Count("id"))
        assert len(counts) == DATAPOINTS
        assert {row["n"] for row in counts} == {1}


def test_the_demo_runs_offline_with_the_model_and_judge_stand_ins(launcher_client, workers):
    from django.core.management import call_command

    from comparisons.models import Feedback

    call_command("load_demo", verbosity=0)
    workers()
    for evaluation in ("invoice_extraction", "support_answers"):
        launcher_client.post(reverse("run_create", args=[evaluation]), {
            "variant": f"offline-{evaluation}", "task": "demo-offline", "concurrency": "8", "max_datapoints": "20",
            "pinned": "on"})
    invoices, support = EvaluationRun.objects.filter(variant_name__startswith="offline-").order_by("id")
    wait_for(lambda: status(invoices) == "completed" and status(support) == "completed")
    for run in (invoices, support):
        assert run.inferences.count() == 20
        assert set(run.inferences.values_list("error", flat=True)) == {None}
        assert run.inferences.filter(input_tokens__gt=0, latency_ms__gt=0).count() == 20
    support.refresh_from_db()
    assert support.config["judge_standin"] == "comparisons.demo_tasks:offline_judge"
    verdicts = Feedback.objects.filter(inference__run=support, metric="resolves_question")
    assert verdicts.count() == 20
    reasons = verdicts.values_list("reason", flat=True)
    assert all(reason.startswith("offline stand-in judge: ROUGE-L") for reason in reasons)
    assert 0 < sum(verdicts.values_list("value", flat=True)) < 20  # the stand-in model makes seeded mistakes
    page = launcher_client.get(reverse("run_detail", args=[invoices.id])).content.decode()
    assert "field_accuracy" in page


def launch_long_run(client, variant):
    client.post(reverse("run_create", args=["qa"]), {
        "variant": variant, "task": "sample-steady", "concurrency": "1", "pinned": "on"})
    run = EvaluationRun.objects.get(variant_name=variant)
    wait_for(lambda: status(run) == "running" and Inference.objects.filter(run=run).count() >= 5)
    return run


def assert_complete_exactly_once(run):
    counts = Inference.objects.filter(run=run).values("datapoint").annotate(n=Count("id"))
    assert len(counts) == DATAPOINTS
    assert {row["n"] for row in counts} == {1}


def test_a_worker_shutting_down_cancels_its_run_which_another_worker_resumes(qa, launcher_client, workers):
    worker = workers("--shutdown-graceful-timeout", "1")
    run = launch_long_run(launcher_client, "shutdown")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert status(run) == "cancelled"
    kept = Inference.objects.filter(run=run).count()
    assert 5 <= kept < DATAPOINTS
    workers()
    assert launcher_client.post(reverse("run_resume", args=[run.id])).status_code == 302
    wait_for(lambda: status(run) == "completed")
    assert_complete_exactly_once(run)


def test_a_killed_workers_run_is_recovered_on_another_worker_exactly_once(qa, launcher_client, workers):
    worker = workers()
    run = launch_long_run(launcher_client, "recovered")
    worker.send_signal(signal.SIGKILL)
    worker.wait(60)
    job = ProcrastinateJob.objects.get(task_name=TASK_NAME, args__run_id=str(run.id))
    assert job.status == "doing"  # procrastinate cannot know yet: the worker said nothing
    # What the minutes after the kill bring, without waiting for them: the dead worker's heartbeat goes stale.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '5 minutes' WHERE id = %s",
                       [job.worker_id])
    assert async_to_sync(recover_stalled_runs)() == []  # the run's own heartbeat is still fresh: left alone
    assert status(run) == "running"
    # Its own heartbeat is no longer refreshed: once it is older than STALE_AFTER the run shows as interrupted.
    last_beat = EvaluationRun.objects.get(id=run.id).heartbeat_at
    stale = last_beat - EvaluationRun.STALE_AFTER - timedelta(seconds=1)
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=stale)
    page = launcher_client.get(reverse("run_detail", args=[run.id])).content.decode()
    assert "Interrupted" in page and ">Resume<" in page  # Resume by hand would do what the recovery does
    kept = Inference.objects.filter(run=run).count()
    assert 5 <= kept < DATAPOINTS

    workers()  # another worker: it runs the recovery (each minute; here at once) and then the resumed run
    try:
        recover_stalled_runs_every_minute.defer(timestamp=0)
    except AlreadyEnqueued:
        pass  # the new worker's periodic deferrer queued it already
    wait_for(lambda: status(run) == "completed")
    assert_complete_exactly_once(run)
    assert ProcrastinateJob.objects.get(id=job.id).status == "failed"  # the dead worker's job is closed
    assert ProcrastinateJob.objects.filter(task_name=RECOVER_TASK_NAME, status="succeeded").exists()


def test_the_recovery_runs_every_minute_on_the_runs_queue():
    from procrastinate.contrib.django import app

    periodic = [task for task in app.periodic_registry.periodic_tasks.values() if task.task.name == RECOVER_TASK_NAME]
    assert [(task.cron, task.task.queue) for task in periodic] == [("* * * * *", "runs")]
