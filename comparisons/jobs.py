"""The background job that runs a run launched from the portal, on a procrastinate worker.

`python manage.py procrastinate worker` runs a worker: it takes jobs from the queue kept in the
portal's PostgreSQL (procrastinate's tables, made by `migrate`), one at a time, and several workers
on several machines share the queue without ever taking the same job (its row is locked when taken).
"""

import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.jobs import Status

from comparisons.models import EvaluationRun, Evaluator
from comparisons.runner.core import FAILURE_TAG, evaluate
from comparisons.runner.model_task import OpenAIModelTask
from comparisons.runner.scorers import import_callable

QUEUE = "runs"
TASK_NAME = "comparisons.run_queued"
RECOVER_TASK_NAME = "comparisons.recover_stalled_runs"
# procrastinate's own threshold: a worker beats every 10 s, so 30 s without a beat means it is gone.
STALLED_WORKER_S = 30


@app.task(name=TASK_NAME, queue=QUEUE, pass_context=True)
def run_queued(context, run_id: str):
    """Run the queued run `run_id` (a new run, or one put back by Resume) to its end.

    The run is cancelled cooperatively (what finished is kept) when Stop is pressed, or when the worker
    shuts down and its --shutdown-graceful-timeout has passed (procrastinate then asks the job to abort):
    a cancelled run can be resumed."""
    try:
        _run(run_id, context.should_abort)
    finally:
        connections.close_all()  # this thread's connection: the worker runs each job in a fresh thread


def _run(run_id: str, should_abort):
    run = EvaluationRun.objects.select_related("evaluation__function", "evaluation__dataset").filter(id=run_id).first()
    if run is None or run.status != EvaluationRun.Status.QUEUED:
        return  # deleted, or no longer waiting (e.g. cancelled by Stop while queued)
    if run.stop_requested_at is not None:  # Stop came while the job was being taken
        _end(run, EvaluationRun.Status.CANCELLED)
        return
    try:
        task = task_for(run)
        scorers = judge_standins(run)
    except Exception as error:  # an unregistered task, a module that fails to import, …: said on the run
        _end(run, EvaluationRun.Status.FAILED, f"the run could not start: {type(error).__name__}: {error}")
        return
    config = run.config_object
    max_datapoints = config.get("max_datapoints")
    if max_datapoints is not None and "precision" not in config:
        # Newest first: what the run recorded before were the newest of its first N; the rest of them remain.
        max_datapoints -= run.inferences.count()
        if max_datapoints < 1:
            max_datapoints = None  # nothing left of the N: the runner completes the run at once
    try:
        evaluate(run.evaluation, None, task, resume=run, concurrency=config.get("concurrency", 8),
                 pinned=config.get("pinned", True), max_datapoints=max_datapoints, progress=False, scorers=scorers,
                 should_stop=lambda: should_abort() or stop_requested(run))
    except Exception as error:
        run.refresh_from_db(fields=["status", "tags"])
        if run.status == EvaluationRun.Status.QUEUED:  # refused before it started (e.g. a misconfigured judge)
            _end(run, EvaluationRun.Status.FAILED, f"the run could not start: {type(error).__name__}: {error}")
        if not isinstance(error, ValueError):
            raise  # the job fails too, with the traceback in the worker's log


def stop_requested(run: EvaluationRun) -> bool:
    """Whether Stop was pressed for the run (read from the database: the web process wrote it)."""
    return EvaluationRun.objects.filter(id=run.id, stop_requested_at__isnull=False).exists()


def _end(run: EvaluationRun, status: str, failure: str | None = None):
    run.status, run.finished_at = status, timezone.now()
    if failure:
        run.tags = {**run.tags, FAILURE_TAG: failure[:2000]}
    run.save(update_fields=["status", "finished_at", "tags"])


def task_problem(run: EvaluationRun) -> str | None:
    """Why a worker cannot run `run`'s task (None when it can): only registered tasks and models run."""
    path = run.config_object.get("task")
    if path is not None and path not in settings.EVALCOMPARE_TASKS.values():
        return (f"The run's task '{str(path)[:100]}' is not registered in EVALCOMPARE_TASKS: workers only run "
                "registered tasks (resume it with run_evaluation --resume instead).")
    if path is None and not run.config_object.get("model"):
        return "The run records no task or model in its config: resume it with run_evaluation --resume --task …"
    return None


def task_for(run: EvaluationRun):
    """The run's task from its config: a registered Python task, or the OpenAI-compatible model."""
    problem = task_problem(run)
    if problem:
        raise ValueError(problem)
    config = run.config_object
    if config.get("task"):
        return import_callable(config["task"])
    return OpenAIModelTask(model=config["model"], base_url=config.get("base_url") or settings.OPENAI_BASE_URL,
                           api_key=settings.OPENAI_API_KEY,
                           prompt_template=config.get("prompt", run.evaluation.prompt_template),
                           function_kind=run.evaluation.function.kind, temperature=config.get("temperature"))


def judge_standins(run: EvaluationRun) -> dict | None:
    """With EVALCOMPARE_JUDGE_STANDIN set, that scorer for every llm_judge evaluator (the demo's offline
    judge); the run's config records it, so its numbers are never mistaken for a real judge's."""
    path = settings.EVALCOMPARE_JUDGE_STANDIN
    judges = list(run.evaluation.evaluators.filter(kind=Evaluator.Kind.LLM_JUDGE).values_list("name", flat=True))
    if not path or not judges:
        return None
    scorer = import_callable(path)
    if run.config_object.get("judge_standin") != path:
        run.config = {**run.config_object, "judge_standin": path}
        run.save(update_fields=["config"])
    return {name: scorer for name in judges}


def enqueue(run: EvaluationRun):
    """Queue the job for `run` (in the caller's transaction); one waiting job per run at most."""
    run_queued.configure(queueing_lock=str(run.id)).defer(run_id=str(run.id))


def _waiting_job(run: EvaluationRun):
    return (ProcrastinateJob.objects.filter(task_name=TASK_NAME, status="todo", args__run_id=str(run.id))
            .values_list("id", flat=True).first())


def queue_position(run: EvaluationRun) -> int | None:
    """1 for the next run a free worker takes, 2 for the one after, …; None when no job waits for it."""
    job_id = _waiting_job(run)
    if job_id is None:
        return None
    return ProcrastinateJob.objects.filter(task_name=TASK_NAME, status="todo", id__lt=job_id).count() + 1


def cancel_queued_job(run: EvaluationRun) -> bool:
    """Cancel the run's job if no worker has taken it yet (then it never runs); whether it did."""
    job_id = _waiting_job(run)
    if job_id is None:
        return False
    with transaction.atomic():
        return app.job_manager.cancel_job_by_id(job_id)


# -- A worker killed outright (SIGKILL, OOM, a lost machine) ---------------------------------------------------------


@app.periodic(cron="* * * * *")
@app.task(name=RECOVER_TASK_NAME, queue=QUEUE, queueing_lock=RECOVER_TASK_NAME)
async def recover_stalled_runs_every_minute(timestamp: int):
    """Every minute, on whichever worker is free: resume the runs of workers that died (`recover_stalled_runs`)."""
    await recover_stalled_runs()


async def recover_stalled_runs() -> list[str]:
    """Resume the runs whose worker died without saying so, and close their jobs; the ids of the runs resumed.

    A run job is stalled when its worker has not beaten for STALLED_WORKER_S (procrastinate's worker heartbeats,
    `get_stalled_jobs`). Its run is resumed as the Resume button does (`launch.resume_run`: queued again with a
    new job; the runner then runs only what the run has not recorded, under the run's row lock) once the run
    itself shows as interrupted (its own heartbeat, EvaluationRun.STALE_AFTER); until then it is left alone.
    """
    resumed = []
    for job in await app.job_manager.get_stalled_jobs(queue=QUEUE, task_name=TASK_NAME,
                                                      seconds_since_heartbeat=STALLED_WORKER_S):
        run_id = _run_id_of(job)
        outcome = await sync_to_async(_recover_run, thread_sensitive=False)(run_id)
        if outcome == "wait":
            continue
        await app.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)  # its worker is gone
        if outcome == "resumed":
            resumed.append(run_id)
    return resumed


def _run_id_of(job) -> str | None:
    """The run a job runs. Its arguments arrive as JSON text through Django's connection (procrastinate's
    DjangoConnector), as an object through procrastinate's own connectors."""
    args = json.loads(job.task_kwargs) if isinstance(job.task_kwargs, str) else job.task_kwargs
    return args.get("run_id") if isinstance(args, dict) else None


def _recover_run(run_id) -> str:
    """"resumed" (the run is queued again), "wait" (not interrupted yet) or "done" (nothing to do for the run).
    Runs in a thread of its own, whose database connection it closes."""
    from comparisons.launch import RunStateError, resume_run  # launch imports this module in its functions

    try:
        run = EvaluationRun.objects.select_related("evaluation").filter(id=run_id).first()
        if run is None or run.status != EvaluationRun.Status.RUNNING:
            return "done"  # deleted, already resumed by hand, or it ended before its worker died
        if not run.interrupted:
            return "wait"
        try:
            resume_run(run)
        except RunStateError:  # resumed meanwhile, or a task the workers cannot run: Resume says why on the page
            return "done"
        return "resumed"
    finally:
        connections.close_all()
