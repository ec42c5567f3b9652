"""Launching, stopping and resuming runs from the portal: the form, permissions, the queue, the views."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from comparisons.jobs import TASK_NAME, queue_position
from comparisons.launch import RunLaunchForm
from comparisons.models import EvaluationRun
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, RunFactory, UserFactory, at

VALID = {"variant": "portal-v1", "task": "demo-offline", "concurrency": "4", "max_datapoints": "",
         "precision": "", "tags": "", "pinned": "on"}


@pytest.fixture
def qa(db):
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float", kind="levenshtein")
    for i in range(5):
        DatapointFactory(evaluation=evaluation, created=at(i), input={"question": f"question {i}"},
                         reference_output=f"answer {i}")
    return evaluation


@pytest.fixture
def launcher(db):
    user = UserFactory(username="launcher")
    user.user_permissions.add(Permission.objects.get(codename="launch_run", content_type__app_label="comparisons"))
    return user


@pytest.fixture
def client_launcher(client, launcher):
    client.force_login(launcher)
    return client


def form(qa, **changes):
    return RunLaunchForm(qa, {**VALID, **changes})


def test_a_valid_form_makes_the_run_config(qa):
    f = form(qa, max_datapoints="3", precision="correct=0.1\nsimilarity=0.05", tags="team=search, prompt = v2")
    assert f.is_valid(), f.errors
    assert f.cleaned_data["tags"] == {"team": "search", "prompt": "v2"}
    assert f.config() == {"task": "comparisons.demo_tasks:offline_model", "task_name": "demo-offline",
                          "concurrency": 4, "max_datapoints": 3, "precision": {"correct": 0.1, "similarity": 0.05},
                          "pinned": True, "launched_from": "portal"}


def test_the_model_task_records_model_base_url_prompt_and_temperature(qa, settings):
    settings.OPENAI_BASE_URL = "http://llm.internal/v1"
    f = form(qa, task="openai-model", model="gpt-4o-mini", temperature="0.3")
    assert f.is_valid(), f.errors
    assert f.config()["model"] == "gpt-4o-mini"
    assert f.config()["base_url"] == "http://llm.internal/v1"
    assert f.config()["temperature"] == 0.3
    assert form(qa, task="openai-model").errors["model"] == ["Name the model to call (e.g. gpt-4o-mini)."]


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"variant": ""}, "variant", "This field is required."),
    ({"variant": "has space"}, "variant", "Use letters, digits"),
    ({"variant": "..."}, "variant", "Use letters, digits"),
    ({"variant": "x" * 201}, "variant", "at most 200 characters"),
    ({"variant": "naïve"}, "variant", "Use letters, digits"),
    ({"task": "os:system"}, "task", "Select a valid choice"),
    ({"concurrency": "0"}, "concurrency", "greater than or equal to 1"),
    ({"concurrency": "65"}, "concurrency", "less than or equal to 64"),
    ({"concurrency": "NaN"}, "concurrency", "Enter a whole number"),
    ({"concurrency": "٣"}, "concurrency", None),  # Arabic-Indic digit: Django reads it as 3, which is fine
    ({"max_datapoints": "0"}, "max_datapoints", "greater than or equal to 1"),
    ({"max_datapoints": "9" * 400}, "max_datapoints", "less than or equal to"),
    ({"precision": "correct=nan"}, "precision", "finite decimal number"),
    ({"precision": "correct=inf"}, "precision", "finite decimal number"),
    ({"precision": "correct=١"}, "precision", "finite decimal number"),
    ({"precision": "correct=0.6"}, "precision", "must be below 0.5"),
    ({"precision": "correct=-1"}, "precision", "positive finite half-width"),
    ({"precision": "nope=0.1"}, "precision", "unknown metric 'nope'"),
    ({"precision": "correct"}, "precision", "use key=value"),
    ({"precision": "correct=0.1\ncorrect=0.2"}, "precision", "given twice"),
    ({"precision": "x" * 2001}, "precision", "at most 2000 characters"),
    ({"tags": "=v"}, "tags", "use key=value"),
    ({"tags": "a=1\na=2"}, "tags", "given twice"),
    ({"tags": "evalcompare::failure=x"}, "tags", "are set by evalcompare"),
    ({"tags": "\n".join(f"k{i}=v" for i in range(51))}, "tags", "At most 50 tags"),
    ({"tags": "k=" + "v" * 1001}, "tags", "too long"),
    ({"temperature": "NaN", "task": "openai-model", "model": "m"}, "temperature", "Enter a number"),
    ({"temperature": "3", "task": "openai-model", "model": "m"}, "temperature", "less than or equal to 2"),
    ({"model": "gpt 4", "task": "openai-model"}, "model", "A model name holds"),
    ({"model": "gpt-4o"}, "model", "apply only to the OpenAI-compatible model task"),
])
def test_bad_input_is_refused_with_a_clear_message(qa, changes, field, message):
    f = form(qa, **changes)
    if message is None:
        assert f.is_valid(), f.errors
        return
    assert not f.is_valid()
    assert message in " ".join(f.errors[field]), f.errors


def test_without_the_permission_there_is_no_new_run_and_the_views_answer_403(client, qa, db):
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.RUNNING)
    client.force_login(UserFactory(username="viewer"))
    assert "New run" not in client.get(reverse("comparison_detail", args=["qa"])).content.decode()
    assert "New run" not in client.get(reverse("evaluation_list")).content.decode()
    page = client.get(reverse("run_detail", args=[run.id])).content.decode()
    assert ">Stop<" not in page
    response = client.get(reverse("run_create", args=["qa"]))
    assert response.status_code == 403
    assert "comparisons.launch_run" in response.content.decode()
    response = client.post(reverse("run_create", args=["qa"]), VALID, headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert response["HX-Retarget"] == "#page-error"
    assert 'role="alert"' in response.content.decode()
    assert not EvaluationRun.objects.filter(variant_name="portal-v1").exists()
    for action in ("run_stop", "run_resume"):
        response = client.post(reverse(action, args=[run.id]), headers={"HX-Request": "true"})
        assert response.status_code == 403
    assert not ProcrastinateJob.objects.exists()
    run.refresh_from_db()
    assert run.stop_requested_at is None


def test_launching_queues_the_run_and_its_job(client_launcher, qa):
    page = client_launcher.get(reverse("comparison_detail", args=["qa"])).content.decode()
    assert reverse("run_create", args=["qa"]) in page
    response = client_launcher.post(reverse("run_create", args=["qa"]), {**VALID, "tags": "team=search"})
    run = EvaluationRun.objects.get(variant_name="portal-v1")
    assert response.status_code == 302
    assert response["Location"] == reverse("run_detail", args=[run.id])
    assert run.status == EvaluationRun.Status.QUEUED
    assert run.tags == {"team": "search", "evalcompare::launched_by": "launcher"}
    job = ProcrastinateJob.objects.get()
    assert (job.task_name, job.args, job.status, job.queue_name) == (TASK_NAME, {"run_id": str(run.id)}, "todo", "runs")
    assert queue_position(run) == 1
    page = client_launcher.get(reverse("run_detail", args=[run.id])).content.decode()
    assert "number 1 in the queue" in page
    assert 'hx-trigger="every 1s"' in page
    assert ">Stop<" in page


def test_an_htmx_launch_redirects_the_browser_and_a_bad_form_comes_back_with_its_messages(client_launcher, qa):
    response = client_launcher.post(reverse("run_create", args=["qa"]), {**VALID, "variant": "bad name\u0301",
                                                                       "concurrency": "1000"},
                                    headers={"HX-Request": "true"})
    assert response.status_code == 400
    body = response.content.decode()
    assert body.lstrip().startswith('<form id="run-form"')
    assert "Use letters, digits" in body
    assert "less than or equal to 64" in body
    assert "bad name" in body  # the value typed stays in the field
    assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#run-form", "outerHTML")
    assert not EvaluationRun.objects.exists()
    response = client_launcher.post(reverse("run_create", args=["qa"]), VALID, headers={"HX-Request": "true"})
    run = EvaluationRun.objects.get()
    assert response["HX-Redirect"] == reverse("run_detail", args=[run.id])


def test_a_nul_in_the_form_is_refused_before_the_view(client_launcher, qa):
    response = client_launcher.post(reverse("run_create", args=["qa"]), {**VALID, "variant": "a\x00b"})
    assert response.status_code == 400
    assert not EvaluationRun.objects.exists()


def test_queue_positions_follow_the_order_of_launch(client_launcher, qa):
    for n in range(3):
        client_launcher.post(reverse("run_create", args=["qa"]), {**VALID, "variant": f"v{n}"})
    runs = list(EvaluationRun.objects.order_by("id"))
    assert [queue_position(run) for run in runs] == [1, 2, 3]
    chip = client_launcher.get(reverse("run_progress", args=[runs[2].id]) + "?view=chip").content.decode()
    assert "#3 in queue" in chip
    listing = client_launcher.get(reverse("evaluation_list")).content.decode()
    assert "#3 in queue" in listing  # the latest run's chip on the evaluation list


def test_stopping_a_queued_run_cancels_its_job_and_the_run_at_once(client_launcher, qa):
    client_launcher.post(reverse("run_create", args=["qa"]), VALID)
    run = EvaluationRun.objects.get()
    response = client_launcher.post(reverse("run_stop", args=[run.id]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.CANCELLED
    assert run.stop_requested_at is not None
    assert ProcrastinateJob.objects.get().status == "cancelled"
    body = response.content.decode()
    assert "hx-trigger" not in body  # an ended run's fragment stops the polling
    assert ">Resume<" in body
    # Stopping again is refused where the user acted, with the reason.
    response = client_launcher.post(reverse("run_stop", args=[run.id]), headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#run-action-error"
    assert "only a queued or running run can be stopped" in response.content.decode()


def test_stopping_a_running_run_records_the_request_for_its_worker(client_launcher, qa):
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.RUNNING, config={"task_name": "demo-offline"})
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=run.started_at + timedelta(days=3650))
    response = client_launcher.post(reverse("run_stop", args=[run.id]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.RUNNING
    assert run.stop_requested_at is not None
    assert "stopping…" in client_launcher.get(reverse("run_detail", args=[run.id])).content.decode()


def test_resume_queues_a_cancelled_run_again_and_refuses_unregistered_tasks(client_launcher, qa):
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.CANCELLED,
                     config={"task": "comparisons.demo_tasks:offline_model"})
    response = client_launcher.post(reverse("run_resume", args=[run.id]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.QUEUED
    assert ProcrastinateJob.objects.get().args == {"run_id": str(run.id)}
    response = client_launcher.post(reverse("run_resume", args=[run.id]), headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert "only a cancelled, failed or interrupted run can be resumed" in response.content.decode()

    foreign = RunFactory(evaluation=qa, status=EvaluationRun.Status.FAILED, config={"task": "mymodule:task"})
    response = client_launcher.post(reverse("run_resume", args=[foreign.id]), headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert "not registered in EVALCOMPARE_TASKS" in response.content.decode()
    foreign.refresh_from_db()
    assert foreign.status == EvaluationRun.Status.FAILED


def test_an_interrupted_run_can_be_resumed_and_a_live_one_cannot(client_launcher, qa):
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.RUNNING,
                     config={"task": "comparisons.demo_tasks:offline_model"})
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=timezone.now())
    response = client_launcher.post(reverse("run_resume", args=[run.id]), headers={"HX-Request": "true"})
    assert response.status_code == 409  # its process is alive: it is running, not interrupted
    stale = timezone.now() - EvaluationRun.STALE_AFTER - timedelta(seconds=1)
    EvaluationRun.objects.filter(id=run.id).update(heartbeat_at=stale)
    response = client_launcher.post(reverse("run_resume", args=[run.id]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.QUEUED
    assert ProcrastinateJob.objects.get().args == {"run_id": str(run.id)}


def test_run_actions_need_post_and_a_valid_run(client_launcher, qa):
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.CANCELLED)
    assert client_launcher.get(reverse("run_stop", args=[run.id])).status_code == 405
    assert client_launcher.post(reverse("run_resume", args=["not-a-uuid"])).status_code == 400
    assert client_launcher.post(reverse("run_stop", args=["0190f4c2-0000-7000-8000-000000000000"])).status_code == 404
    assert client_launcher.put(reverse("run_create", args=["qa"])).status_code == 405
    assert client_launcher.get(reverse("run_create", args=["nope"])).status_code == 404


def test_csrf_is_required_for_every_post(qa, launcher):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(launcher)
    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.CANCELLED, config={"task": "x:y"})
    for url in (reverse("run_create", args=["qa"]), reverse("run_stop", args=[run.id]),
                reverse("run_resume", args=[run.id])):
        assert client.post(url, VALID).status_code == 403
    assert not ProcrastinateJob.objects.exists()


def test_the_launchers_group_grants_the_permission(client, qa):
    from comparisons.launch import LAUNCHERS_GROUP, launchers_group

    user = UserFactory(username="member")
    user.groups.add(launchers_group())
    client.force_login(user)
    assert client.get(reverse("run_create", args=["qa"])).status_code == 200
    assert launchers_group().name == LAUNCHERS_GROUP


def test_a_queued_or_running_run_has_a_live_status_chip_in_the_comparison(client_launcher, qa):
    done = RunFactory(evaluation=qa, status=EvaluationRun.Status.COMPLETED)
    client_launcher.post(reverse("run_create", args=["qa"]), VALID)
    queued = EvaluationRun.objects.get(variant_name="portal-v1")
    page = client_launcher.get(reverse("comparison_detail", args=["qa"]) + f"?run_ids={done.id},{queued.id}")
    body = page.content.decode()
    assert reverse("run_progress", args=[queued.id]) + "?view=chip" in body
    assert reverse("run_progress", args=[done.id]) not in body
    chip = client_launcher.get(reverse("run_progress", args=[queued.id]) + "?view=chip").content.decode()
    assert "Queued" in chip and "#1 in queue" in chip and 'hx-trigger="every 1s"' in chip


def test_a_run_that_cannot_start_fails_with_the_reason_instead_of_staying_queued(qa):
    from comparisons import jobs
    from comparisons.runner.core import FAILURE_TAG

    unregistered = RunFactory(evaluation=qa, status=EvaluationRun.Status.QUEUED, config={"task": "os:getcwd"})
    jobs._run(str(unregistered.id), lambda: False)
    unregistered.refresh_from_db()
    assert unregistered.status == EvaluationRun.Status.FAILED
    assert "not registered in EVALCOMPARE_TASKS" in unregistered.tags[FAILURE_TAG]

    EvaluatorFactory(evaluation=qa, name="judge", kind="llm_judge", config={})  # no model: refused at run start
    misconfigured = RunFactory(evaluation=qa, status=EvaluationRun.Status.QUEUED,
                               config={"task": "comparisons.demo_tasks:offline_model"})
    with pytest.raises(Exception, match="needs config.model"):
        jobs._run(str(misconfigured.id), lambda: False)
    misconfigured.refresh_from_db()
    assert misconfigured.status == EvaluationRun.Status.FAILED
    assert "needs config.model" in misconfigured.tags[FAILURE_TAG]
    assert not misconfigured.inferences.exists()


def test_a_queued_run_stopped_before_its_worker_starts_it_is_cancelled_without_running(qa):
    from comparisons import jobs

    run = RunFactory(evaluation=qa, status=EvaluationRun.Status.QUEUED,
                     config={"task": "comparisons.demo_tasks:offline_model"})
    EvaluationRun.objects.filter(id=run.id).update(stop_requested_at=run.started_at)
    jobs._run(str(run.id), lambda: False)
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.CANCELLED
    assert not run.inferences.exists()
