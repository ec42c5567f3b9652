"""Runs launched from the portal: the New-run form, queueing a run for a worker, Stop and Resume.

A launched run is an EvaluationRun row created `queued` (its window is the dataset at that instant)
and a procrastinate job (comparisons.jobs.run_queued) that a worker picks; the worker runs it as the
runner's resume of a run with no inferences, with the run's own config. Stop sets the run's
`stop_requested_at`; the worker's runner polls it and cancels cooperatively. Resume puts a
cancelled, failed or interrupted run back in the queue.
"""

import math
import re

from django import forms
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from comparisons.models import NAME_VALIDATOR, EvaluationRun
from comparisons.runner.core import _resolve_precision

LAUNCH_PERMISSION = "comparisons.launch_run"
LAUNCHERS_GROUP = "Launchers"
MAX_CONCURRENCY = 64
MAX_DATAPOINTS = 1_000_000
MAX_TAGS = 50
MODEL_CHOICE = "openai-model"
# ASCII digits only: float() would also take "١" or "1_0" (as the runner's --cutoff parsing).
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
MODEL_NAME = re.compile(r"\A[A-Za-z0-9_.:/@+-]{1,200}\Z")


def can_launch(user) -> bool:
    """Whether `user` may launch, stop and resume runs."""
    return user.has_perm(LAUNCH_PERMISSION)


def launchers_group():
    """The Launchers group, holding the permission to launch, stop and resume runs (created when missing)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=LAUNCHERS_GROUP)
    app_label, codename = LAUNCH_PERMISSION.split(".")
    group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group


def task_choices() -> list[tuple[str, str]]:
    """The form's task choices: each registered Python task by name, then an OpenAI-compatible model."""
    choices = [(name, f"{name} (Python task)") for name in sorted(settings.EVALCOMPARE_TASKS)]
    return [*choices, (MODEL_CHOICE, "OpenAI-compatible model with the evaluation's prompt")]


def _pairs(text: str, what: str, example: str) -> list[tuple[str, str]]:
    """`key=value` lines (or comma-separated) as pairs; ValidationError naming the bad one."""
    pairs = []
    for part in re.split(r"[\n,]", text):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise forms.ValidationError(f"“{part[:60]}” is not {what}: use key=value, e.g. {example}.")
        pairs.append((key, value))
    return pairs


class RunLaunchForm(forms.Form):
    """What a run launched from the portal needs; every field checked here, on the server."""

    variant = forms.CharField(max_length=200, validators=[NAME_VALIDATOR],
                              help_text="Letters, digits and _ . : - (it appears in URLs).")
    task = forms.ChoiceField(choices=())
    model = forms.CharField(required=False, max_length=200,
                            help_text="For an OpenAI-compatible model, e.g. gpt-4o-mini.")
    temperature = forms.FloatField(required=False, min_value=0, max_value=2)
    concurrency = forms.IntegerField(min_value=1, max_value=MAX_CONCURRENCY, initial=8)
    max_datapoints = forms.IntegerField(required=False, min_value=1, max_value=MAX_DATAPOINTS,
                                        help_text="Only the newest N datapoints (empty: all).")
    precision = forms.CharField(required=False, max_length=2000,
                                help_text="Stop early once each metric's 95% CI half-width is this narrow: "
                                          "metric=0.05, one per line.",
                                widget=forms.Textarea(attrs={"rows": 2}))
    tags = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2}),
                           help_text="key=value, one per line.")
    pinned = forms.BooleanField(required=False, initial=True,
                                help_text="Record the variant as chosen by the caller (not sampled).")

    def __init__(self, evaluation, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluation = evaluation
        self.fields["task"].choices = task_choices()

    def clean_model(self):
        model = self.cleaned_data["model"].strip()
        if model and not MODEL_NAME.match(model):
            raise forms.ValidationError("A model name holds letters, digits and _ . : / @ + - only.")
        return model

    def clean_temperature(self):
        value = self.cleaned_data["temperature"]
        if value is not None and not math.isfinite(value):
            raise forms.ValidationError("Enter a finite number from 0 to 2.")
        return value

    def clean_precision(self):
        targets = {}
        for metric, value in _pairs(self.cleaned_data["precision"], "a precision target", "resolves_question=0.05"):
            if metric in targets:
                raise forms.ValidationError(f"The precision of '{metric[:60]}' is given twice.")
            if not NUMBER.fullmatch(value) or not math.isfinite(float(value)):
                raise forms.ValidationError(f"The precision of '{metric[:60]}' must be a finite decimal number "
                                            f"(ASCII digits, e.g. 0.05), not “{value[:40]}”.")
            targets[metric] = float(value)
        if not targets:
            return None
        try:
            return _resolve_precision(list(self.evaluation.evaluators.order_by("id")), targets)
        except ValueError as error:
            raise forms.ValidationError(str(error)[:300]) from None

    def clean_tags(self):
        tags = {}
        for key, value in _pairs(self.cleaned_data["tags"], "a tag", "team=search"):
            if len(key) > 100 or len(value) > 1000:
                raise forms.ValidationError(f"The tag '{key[:60]}' is too long (keys ≤ 100, values ≤ 1000 characters).")
            if key in tags:
                raise forms.ValidationError(f"The tag '{key[:60]}' is given twice.")
            if key.startswith(("evalcompare::", "tensorzero::")):
                raise forms.ValidationError(f"Tags starting with '{key.split('::')[0]}::' are set by evalcompare.")
            tags[key] = value
        if len(tags) > MAX_TAGS:
            raise forms.ValidationError(f"At most {MAX_TAGS} tags.")
        return tags

    def clean(self):
        data = super().clean()
        if data.get("task") == MODEL_CHOICE and not data.get("model"):
            self.add_error("model", "Name the model to call (e.g. gpt-4o-mini).")
        if data.get("task") not in (None, MODEL_CHOICE) and (data.get("model") or data.get("temperature") is not None):
            self.add_error("model", "A model and a temperature apply only to the OpenAI-compatible model task.")
        return data

    def config(self) -> dict:
        """The run's config snapshot: what it runs and how (read again by the worker and by a resume)."""
        data = self.cleaned_data
        if data["task"] == MODEL_CHOICE:
            config = {"model": data["model"], "base_url": settings.OPENAI_BASE_URL,
                      "prompt": self.evaluation.prompt_template}
            if data["temperature"] is not None:
                config["temperature"] = data["temperature"]
        else:
            config = {"task": settings.EVALCOMPARE_TASKS[data["task"]], "task_name": data["task"]}
        config["concurrency"] = data["concurrency"]
        if data["max_datapoints"] is not None:
            config["max_datapoints"] = data["max_datapoints"]
        if data["precision"]:
            config["precision"] = data["precision"]
        config["pinned"] = data["pinned"]
        config["launched_from"] = "portal"
        return config


def launch_run(evaluation, form: RunLaunchForm, user) -> EvaluationRun:
    """Create the run `queued` and its job, in one transaction (no run without a job, nor the reverse)."""
    from comparisons.jobs import enqueue
    config = form.config()
    if "precision" in config:  # the seeded order is drawn now, so the run's config can reproduce it
        import random
        config["seed"] = random.SystemRandom().randrange(2**63)
    tags = {**form.cleaned_data["tags"], "evalcompare::launched_by": user.get_username()}
    with transaction.atomic():
        run = EvaluationRun.new(evaluation, form.cleaned_data["variant"], config=config, tags=tags,
                                status=EvaluationRun.Status.QUEUED)
        run.save(force_insert=True)
        enqueue(run)
    return run


class RunStateError(Exception):
    """Stop or Resume does not apply to the run as it is now."""


def stop_run(run: EvaluationRun) -> EvaluationRun:
    """Ask the run to stop. A queued run whose job no worker has taken is cancelled at once; a running
    one is cancelled by its worker within a second or two (what finished is kept)."""
    from comparisons.jobs import cancel_queued_job
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().get(id=run.id)
        if run.status not in (EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING) or run.interrupted:
            raise RunStateError(f"This run is {run.shown_status_display.lower()}: only a queued or running run "
                                "can be stopped.")
        run.stop_requested_at = timezone.now()
        fields = ["stop_requested_at"]
        if run.status == EvaluationRun.Status.QUEUED and cancel_queued_job(run):
            run.status, run.finished_at = EvaluationRun.Status.CANCELLED, timezone.now()
            fields += ["status", "finished_at"]
        run.save(update_fields=fields)
    return run


def resume_run(run: EvaluationRun) -> EvaluationRun:
    """Put a cancelled, failed or interrupted run back in the queue; its worker runs what it has not
    recorded (the runner's resume)."""
    from comparisons.jobs import enqueue, task_problem
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().get(id=run.id)
        if not run.resumable:
            raise RunStateError(f"This run is {run.shown_status_display.lower()}: only a cancelled, failed or "
                                "interrupted run can be resumed.")
        problem = task_problem(run)
        if problem:
            raise RunStateError(problem)
        run.status, run.stop_requested_at, run.finished_at = EvaluationRun.Status.QUEUED, None, None
        run.save(update_fields=["status", "stop_requested_at", "finished_at"])
        enqueue(run)
    return run
