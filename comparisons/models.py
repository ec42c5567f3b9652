"""The domain: functions, datasets of versioned datapoints, evaluations, runs, inferences, feedback.

Datapoints are never edited in place: `Datapoint.revise()` inserts a new version and stales the
old one, `Datapoint.retire()` only stales. Feedback only ever appends; for each (inference, metric)
the row with the greatest id wins. Every time-carrying id is a UUIDv7 (see `ids.py`).
"""

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from comparisons.ids import short_id, uuid7, uuid7_max, uuid7_time
from comparisons.validation import json_problem

# \A and \Z, not ^ and $: "$" also matches before a final line break, which let "name\n" through.
NAME_VALIDATOR = RegexValidator(
    r"\A(?!\.+\Z)[A-Za-z0-9_.:-]+\Z",
    "Use letters, digits and _ . : - only, and not only dots (the name appears in URLs and file names).",
)
# What a URL path segment cannot carry: a slash splits it, control characters are refused with a 400.
NOT_IN_URL_SEGMENT = re.compile(r"[/\x00-\x1f\x7f]")


def fits_in_url(name: str) -> bool:
    """Whether `name` can be one segment of a URL the portal answers. Names are validated when they are
    created, but rows written before (or by raw SQL) may hold anything."""
    return bool(name) and name not in (".", "..") and not NOT_IN_URL_SEGMENT.search(name)


class ValidatedNameModel(models.Model):
    """A model whose `name` appears in URLs: every save checks it against NAME_VALIDATOR, so
    `objects.create()`, `get_or_create()`, imports and scripts cannot write a name the admin would refuse."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "name" in update_fields:
            self.clean_fields(exclude=[f.name for f in self._meta.fields if f.name != "name"])
        super().save(*args, **kwargs)


class Function(ValidatedNameModel):
    """An LLM function under evaluation."""

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat"
        JSON = "json", "JSON"

    name = models.CharField(max_length=200, unique=True, validators=[NAME_VALIDATOR])
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHAT)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Dataset(ValidatedNameModel):
    """A named set of datapoints."""

    name = models.CharField(max_length=200, unique=True, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class DatapointQuerySet(models.QuerySet):
    def for_dataset(self, dataset, function):
        """Datapoints of one dataset and function (what an evaluation runs over)."""
        return self.filter(dataset=dataset, function=function)

    def current(self):
        """Datapoints that are neither edited nor deleted."""
        return self.filter(staled_at__isnull=True)

    def stale(self):
        """Datapoints superseded by an edit or deleted."""
        return self.filter(staled_at__isnull=False)

    def in_window(self, when: datetime):
        """Datapoints that were part of the dataset at `when` (the run-time window rule)."""
        return self.filter(window_q(when))

    def newest_first(self):
        """Newest version first (UUIDv7 order is creation order)."""
        return self.order_by("-id")


def window_bounds(when: datetime):
    """The run-time window of DESIGN.md, stated once: a datapoint is in the window of a run at `when`
    iff its id <= the first bound and its staled_at is null or > the second.

    time(id) <= when is compared at the millisecond (a UUIDv7 carries milliseconds), so the greatest
    UUIDv7 of `when`'s millisecond is an exact id bound, and one that the (dataset, function, id)
    index can use. `window_q` (ORM) and `in_window` (Python) are built from these bounds; the SQL
    function comparisons_in_window states the same rule, and tests/test_window_rule.py proves all agree.
    """
    return uuid7_max(when), when


def window_q(when: datetime, prefix: str = "") -> Q:
    """The run-time window as a Q on a datapoint (reached through `prefix`)."""
    last_id, staled_after = window_bounds(when)
    return Q(**{f"{prefix}id__lte": last_id}) & (
        Q(**{f"{prefix}staled_at__isnull": True}) | Q(**{f"{prefix}staled_at__gt": staled_after})
    )


def in_window(datapoint_id, staled_at: datetime | None, when: datetime) -> bool:
    """The run-time window for one datapoint, in Python."""
    last_id, staled_after = window_bounds(when)
    return datapoint_id <= last_id and (staled_at is None or staled_at > staled_after)


def lock_kept_tables(dataset_id: int) -> None:
    """Take the dataset's kept-table lock (comparisons_lock_dataset) for the rest of the transaction.

    The triggers take it too; a writer that row-locks datapoints first (an edit) takes it before,
    so that it never waits for the lock while holding a row another writer needs.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_lock_dataset(%s)", [dataset_id])


class DatapointStaledError(Exception):
    """The datapoint was already edited or deleted; only the current version can change."""


def _now_ms() -> datetime:
    now = timezone.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Datapoint(models.Model):
    """One version of an example in a dataset; its UUIDv7 id is its creation time."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="datapoints")
    function = models.ForeignKey(Function, on_delete=models.PROTECT, related_name="datapoints")
    name = models.CharField(max_length=200, blank=True)
    input = models.JSONField()
    reference_output = models.JSONField(null=True, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    staled_at = models.DateTimeField(null=True, blank=True)
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by",
        help_text="The earlier version this datapoint replaced, when it came from an edit.",
    )

    objects = DatapointQuerySet.as_manager()

    class Meta:
        indexes = [
            # Comparison rows: one dataset/function, newest first, window test without the heap.
            models.Index(
                fields=["dataset", "function", "-id"], include=["staled_at"], name="datapoint_rows_idx"
            ),
        ]

    def __str__(self):
        return self.name or str(self.id)

    @property
    def created_at(self) -> datetime:
        return uuid7_time(self.id)

    @property
    def is_current(self) -> bool:
        return self.staled_at is None

    def revise(self, *, when: datetime | None = None, **changes) -> "Datapoint":
        """Edit: insert a new version carrying `changes` and stale this one at the same instant.

        Only name, input, reference_output and tags can change. Raises DatapointStaledError if this
        version was already edited or deleted.
        """
        editable = {"name", "input", "reference_output", "tags"}
        unknown = set(changes) - editable
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a datapoint")
        with transaction.atomic():
            lock_kept_tables(self.dataset_id)
            current = Datapoint.objects.select_for_update().get(pk=self.pk)
            if current.staled_at is not None:
                raise DatapointStaledError(f"datapoint {self.pk} was already edited or deleted")
            new = Datapoint(
                id=uuid7(when or _now_ms()),
                dataset_id=current.dataset_id,
                function_id=current.function_id,
                supersedes=current,
                **{field: changes.get(field, getattr(current, field)) for field in editable},
            )
            new.save(force_insert=True)
            # The old version ends exactly when the new one begins: every run sees exactly one.
            self.staled_at = new.created_at
            Datapoint.objects.filter(pk=self.pk).update(staled_at=self.staled_at)
        return new

    def retire(self, *, when: datetime | None = None) -> None:
        """Delete: stale this version; it stays visible to runs made before `when` (default now)."""
        with transaction.atomic():
            lock_kept_tables(self.dataset_id)
            current = Datapoint.objects.select_for_update().get(pk=self.pk)
            if current.staled_at is not None:
                raise DatapointStaledError(f"datapoint {self.pk} was already edited or deleted")
            self.staled_at = when or _now_ms()
            Datapoint.objects.filter(pk=self.pk).update(staled_at=self.staled_at)


class Evaluation(ValidatedNameModel):
    """A function evaluated on a dataset by a set of evaluators."""

    name = models.CharField(max_length=200, unique=True, validators=[NAME_VALIDATOR])
    function = models.ForeignKey(Function, on_delete=models.PROTECT, related_name="evaluations")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="evaluations")
    description = models.TextField(blank=True)
    prompt_template = models.TextField(
        blank=True,
        help_text="Chat prompt for `run_evaluation --openai-model`; {input} is replaced by the datapoint input.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def datapoints(self):
        """All versions of the datapoints this evaluation runs over."""
        return Datapoint.objects.for_dataset(self.dataset_id, self.function_id)

    @property
    def comparison_url(self) -> str | None:
        """The comparison page, or None when the name (from before validation) cannot be in a URL."""
        if not fits_in_url(self.name):
            return None
        try:
            return reverse("comparison_detail", args=[self.name])
        except NoReverseMatch:
            return None


class Evaluator(ValidatedNameModel):
    """A metric of an evaluation: how an output is scored, and which way is better."""

    class Kind(models.TextChoices):
        EXACT_MATCH = "exact_match", "Exact match"
        CONTAINS = "contains", "Contains"
        REGEX = "regex", "Regex"
        JSON_VALID = "json_valid", "Valid JSON"
        JSON_MATCH = "json_match", "JSON fields match"
        LEVENSHTEIN = "levenshtein", "Levenshtein similarity"
        BLEU = "bleu", "BLEU"
        ROUGE_L = "rouge_l", "ROUGE-L"
        LLM_JUDGE = "llm_judge", "LLM judge"
        CUSTOM = "custom", "Custom"

    class ValueType(models.TextChoices):
        BOOLEAN = "boolean", "Boolean"
        FLOAT = "float", "Float"

    class Optimize(models.TextChoices):
        MAX = "max", "Higher is better"
        MIN = "min", "Lower is better"

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="evaluators")
    name = models.CharField(max_length=200, validators=[NAME_VALIDATOR])
    kind = models.CharField(max_length=20, choices=Kind.choices)
    value_type = models.CharField(max_length=10, choices=ValueType.choices)
    optimize = models.CharField(max_length=3, choices=Optimize.choices, default=Optimize.MAX)
    cutoff = models.FloatField(null=True, blank=True, help_text="The run fails CI when its mean misses this.")
    min_value = models.FloatField(
        null=True, blank=True, help_text="The smallest value a score may take (empty: no bound). Left empty for "
        "both bounds, scorers with a known range get it (0–1).")
    max_value = models.FloatField(null=True, blank=True, help_text="The largest value a score may take.")
    config = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["evaluation", "id"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation", "name"], name="evaluator_name_unique_per_evaluation"),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if self.min_value is None and self.max_value is None:
            self.min_value, self.max_value = default_range(self.kind, self.value_type)
        super().save(*args, **kwargs)

    def clean(self):
        for name in ("min_value", "max_value", "cutoff"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValidationError({name: "Enter a finite number."})
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValidationError({"max_value": "The largest value must not be below the smallest."})
        if self.kind == self.Kind.LLM_JUDGE and isinstance(self.config, dict):
            from comparisons.runner.scorers import judge_prompt_problem  # the runner applies the same rule

            problem = judge_prompt_problem(self.config.get("prompt"))
            if problem:
                raise ValidationError({"config": f"The judge's {problem}."})

    def value_problem(self, value) -> str | None:
        """Why `value` cannot be a score of this metric, or None when it can: the one rule that the
        correction form, the runner, the import and the admin apply (the database applies it too,
        in comparisons_feedback_check)."""
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"'{self.name}' takes a finite number, not {value!r}."
        if self.is_boolean and value not in (0, 1):
            return f"'{self.name}' is boolean: the value must be 0 or 1, not {value:g}."
        low, high = self.min_value, self.max_value
        if (low is not None and value < low) or (high is not None and value > high):
            shown_low = "−∞" if low is None else f"{low:g}"
            shown_high = "∞" if high is None else f"{high:g}"
            return f"'{self.name}' takes values from {shown_low} to {shown_high}; {value:g} is outside that range."
        return None

    @property
    def is_boolean(self) -> bool:
        # Plain strings: comparing with the enum member costs more, and a page asks ~10,000 times.
        return self.value_type == "boolean"

    def passes(self, value: float | None) -> bool | None:
        """Whether one value passes: booleans pass when true (or false when minimising), floats
        against `cutoff` (None without a cutoff)."""
        if value is None:
            return None
        maximise = self.optimize == "max"
        if self.cutoff is None:
            if self.value_type != "boolean":
                return None
            return value >= 0.5 if maximise else value < 0.5
        return value >= self.cutoff if maximise else value <= self.cutoff

    def cutoff_met(self, mean: float | None) -> bool | None:
        """Whether a run's mean meets this metric's `cutoff` (None without one; a run without scores
        misses it). The comparison is `passes`, the rule every cell is coloured by."""
        if self.cutoff is None:
            return None
        return mean is not None and self.passes(mean)

    def better(self, value: float, baseline: float) -> int:
        """1 when `value` improves on `baseline`, -1 when it regresses, 0 when equal."""
        if value == baseline:
            return 0
        improved = value > baseline if self.optimize == "max" else value < baseline
        return 1 if improved else -1


SNAPSHOT_FIELDS = ("kind", "value_type", "optimize", "cutoff", "min_value", "max_value", "config")


def _snapshot_value(value):
    """A field value as PostgreSQL's JSON can hold it: a float column may hold NaN or ±inf (written
    around the form's checks), which JSON cannot; such a value is kept as its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def evaluator_snapshot(evaluation) -> list[dict]:
    """Every evaluator of `evaluation` as it is now, in evaluator order: name and SNAPSHOT_FIELDS.

    Read from the database, whose JSON holds no NUL, NaN or infinity; only the float columns need
    `_snapshot_value`."""
    return [{"name": values["name"], **{field: _snapshot_value(values[field]) for field in SNAPSHOT_FIELDS}}
            for values in Evaluator.objects.filter(evaluation=evaluation).order_by("id")
            .values("name", *SNAPSHOT_FIELDS)]


BOUNDED_KINDS = {"exact_match", "contains", "regex", "json_valid", "json_match", "levenshtein", "bleu", "rouge_l"}


def default_range(kind: str, value_type: str) -> tuple[float | None, float | None]:
    """The value range an evaluator gets when it declares none: 0–1 for booleans and for the built-in
    scorers whose scores are fractions; none for LLM judges and custom scorers."""
    if value_type == "boolean" or kind in BOUNDED_KINDS:
        return 0.0, 1.0
    return None, None


class EvaluationRunQuerySet(models.QuerySet):
    def for_evaluation(self, evaluation):
        """Runs of one evaluation."""
        return self.filter(evaluation=evaluation)

    def recent(self):
        """Newest run first (UUIDv7 order is run time)."""
        return self.order_by("-id")


class EvaluationRun(models.Model):
    """One run of an evaluation: a variant's outputs over the dataset as it was at run time."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    evaluation = models.ForeignKey(Evaluation, on_delete=models.PROTECT, related_name="runs")
    variant_name = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    config = models.JSONField(default=dict, blank=True, help_text="Snapshot: model, prompt, parameters.")
    tags = models.JSONField(default=dict, blank=True)
    evaluator_snapshot = models.JSONField(
        null=True, blank=True, editable=False,
        help_text="Every evaluator of the evaluation as it was when the run was created (`evaluator_snapshot()`); "
                  "null for runs recorded before snapshots existed.")
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Refreshed while the run runs; a stale one means its process was killed.")
    stop_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="Set by Stop in the portal: the run's worker cancels it cooperatively.")
    running_since = models.DateTimeField(
        null=True, blank=True, help_text="When a process (a worker, run_evaluation) last took the run and set it "
        "running: a launched run waits in the queue before, and a resumed one starts again here.")

    objects = EvaluationRunQuerySet.as_manager()

    # The runner refreshes heartbeat_at every 10 s (runner.core.HEARTBEAT_S): six missed beats.
    STALE_AFTER = timedelta(seconds=60)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # Run selector and "latest runs": one evaluation's runs, newest first.
            models.Index(fields=["evaluation", "-id"], name="run_recent_idx"),
        ]
        permissions = [("launch_run", "Can launch, stop and resume runs from the portal")]

    def __str__(self):
        return f"{self.variant_name} · {self.started_at:%Y-%m-%d %H:%M} · {self.short_id}"

    @classmethod
    def new(cls, evaluation, variant_name: str, *, config=None, tags=None, status=Status.RUNNING) -> "EvaluationRun":
        """A new run, not yet saved: the one constructor of the runner and of portal launches.

        Its id (run time) is taken now, and with it a snapshot of every evaluator of `evaluation`
        (`evaluator_snapshot`), so that the comparison can tell when runs were scored differently.
        ValueError when `config` or `tags` hold what PostgreSQL cannot store (NUL, NaN, …)."""
        config = {} if config is None else config
        tags = {} if tags is None else tags
        for what, value in (("config", config), ("tags", tags)):
            if problem := json_problem(value):
                raise ValueError(f"the run's {what} {problem}")
        return cls(id=uuid7(), evaluation=evaluation, variant_name=variant_name, config=config, tags=tags,
                   status=status, evaluator_snapshot=evaluator_snapshot(evaluation))

    @property
    def started_at(self) -> datetime:
        """The run time: the instant the run's dataset window is taken at."""
        return uuid7_time(self.id)

    @property
    def short_id(self) -> str:
        """The id as shown: its random tail (`ids.short_id`), unique among the runs on a page."""
        return short_id(self.id)

    @property
    def interrupted(self) -> bool:
        """Left `running` by a process that died without saying so (SIGKILL, a power cut): its
        heartbeat is older than STALE_AFTER."""
        beat = self.heartbeat_at or self.started_at
        return self.status == self.Status.RUNNING and timezone.now() - beat > self.STALE_AFTER

    @property
    def shown_status(self) -> str:
        """The status to show: `interrupted` for an interrupted run, else the recorded status."""
        return "interrupted" if self.interrupted else self.status

    @property
    def shown_status_display(self) -> str:
        return "Interrupted" if self.interrupted else self.get_status_display()

    @property
    def config_object(self) -> dict:
        """The config when it is a JSON object (the admin can store any JSON there), else {}."""
        return self.config if isinstance(self.config, dict) else {}

    @property
    def ended(self) -> bool:
        """Whether the run has stopped for good (until resumed): nothing more will change by itself."""
        return self.status not in (self.Status.QUEUED, self.Status.RUNNING) or self.interrupted

    @property
    def resumable(self) -> bool:
        """Whether Resume applies: a cancelled, failed or interrupted run."""
        return self.status in (self.Status.CANCELLED, self.Status.FAILED) or self.interrupted

    def previous(self) -> "EvaluationRun | None":
        """The run of the same evaluation made just before this one (None for the first)."""
        return EvaluationRun.objects.for_evaluation(self.evaluation_id).filter(id__lt=self.id).recent().first()

    def window_datapoints(self):
        """The datapoints this run saw: its evaluation's dataset at run time."""
        return self.evaluation.datapoints().in_window(self.started_at)


class Inference(models.Model):
    """One output of a run for one datapoint."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No index of its own: the unique (run, datapoint) index below leads with the run.
    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="inferences", db_index=False)
    # Indexed by inference_datapoint_idx below.
    datapoint = models.ForeignKey(Datapoint, on_delete=models.PROTECT, related_name="inferences", db_index=False)
    input = models.JSONField(null=True, blank=True, help_text="The input as sent to the function.")
    output = models.JSONField(null=True, blank=True)
    variant_name = models.CharField(max_length=200)
    variant_pinned = models.BooleanField(
        default=False, help_text="The caller chose the variant instead of letting it be sampled."
    )
    latency_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.IntegerField(null=True, blank=True)
    output_tokens = models.IntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    error = models.TextField(null=True, blank=True)  # noqa: DJ001 -- null means success (DESIGN.md)
    tags = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # One output per (run, datapoint); its index also serves the comparison's cell lookup.
            models.UniqueConstraint(fields=["run", "datapoint"], name="inference_one_per_run_datapoint"),
            models.CheckConstraint(condition=Q(latency_ms__gte=0) | Q(latency_ms__isnull=True),
                                   name="inference_latency_not_negative"),
        ]
        indexes = [
            # The datapoint page and TensorZero lookups: all runs' outputs for one datapoint.
            models.Index(fields=["datapoint"], name="inference_datapoint_idx"),
            # The failure analysis: a run's failed inferences (about 1 in 100) without reading the others.
            models.Index(fields=["run", "datapoint"], condition=Q(error__isnull=False), name="inference_failed_idx"),
        ]

    def __str__(self):
        return f"{self.variant_name} on {self.datapoint_id}"

    def clean(self):
        if self.run_id is None or self.datapoint_id is None:
            return  # the missing field reports itself as required
        run, datapoint = self.run, self.datapoint
        evaluation = run.evaluation
        if (datapoint.dataset_id, datapoint.function_id) != (evaluation.dataset_id, evaluation.function_id):
            raise ValidationError(
                {"datapoint": f"Datapoint {datapoint.pk} is not in dataset '{evaluation.dataset}' "
                 f"of function '{evaluation.function}' that evaluation '{evaluation}' runs over."}
            )


class FeedbackQuerySet(models.QuerySet):
    def winning(self):
        """Only the feedback that counts: the greatest id per (inference, metric)."""
        newer = Feedback.objects.filter(
            inference_id=OuterRef("inference_id"), metric=OuterRef("metric"), id__gt=OuterRef("id")
        )
        return self.filter(~Exists(newer))

    def record(self, inference, metric: str, value, *, source="human", reason="", created_by=None):
        """Append feedback after validating it; the newest feedback for a metric wins, history stays."""
        feedback = Feedback(
            inference=inference, metric=metric, value=value, source=source,
            reason=reason or "", created_by=created_by,
        )
        feedback.full_clean()
        feedback.save(force_insert=True)
        return feedback

    # -- Corrections: history and revert (the datapoint page) --------------------------------------

    def history(self, inference_ids):
        """Every value of these inferences with who recorded it, newest first per (inference, metric)."""
        return (self.filter(inference_id__in=list(inference_ids)).select_related("created_by")
                .order_by("inference_id", "metric", "-id"))

    def revert(self, inference, metric: str, *, created_by=None):
        """Undo a human correction: append a copy of the newest evaluator value, tagged with the
        correction it reverts, so the evaluator's value wins again and the history stays.

        ValidationError when the value that counts is not a human correction, or when there is no
        evaluator value to go back to.
        """
        values = Feedback.objects.filter(inference=inference, metric=metric).order_by("-id")
        latest = values.first()
        if latest is None or latest.source != Feedback.Source.HUMAN:
            raise ValidationError(f"Nothing to revert: the value of '{metric}' that counts is not a human correction.")
        original = values.filter(source=Feedback.Source.EVALUATOR).first()
        if original is None:
            raise ValidationError(f"'{metric}' has no evaluator value to go back to: correct it to the value you want.")
        feedback = Feedback(inference=inference, metric=metric, value=original.value,
                            source=Feedback.Source.EVALUATOR, reason=original.reason, created_by=created_by,
                            tags={"reverts": str(latest.id)})
        feedback.full_clean()
        feedback.save(force_insert=True)
        return feedback

    # -- end of corrections ------------------------------------------------------------------------


class Feedback(models.Model):
    """A metric value for an inference, from an evaluator or a human; the newest per metric wins."""

    class Source(models.TextChoices):
        EVALUATOR = "evaluator", "Evaluator"
        HUMAN = "human", "Human"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No index of its own: feedback_latest_idx below leads with the inference.
    inference = models.ForeignKey(Inference, on_delete=models.CASCADE, related_name="feedback", db_index=False)
    metric = models.CharField(max_length=200)
    value = models.FloatField()
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.EVALUATOR)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tags = models.JSONField(default=dict, blank=True)

    objects = FeedbackQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "feedback"
        constraints = [
            # NaN or ±inf would poison every sum; comparisons_feedback_check says why when it refuses.
            models.CheckConstraint(condition=Q(value__gt=float("-inf")) & Q(value__lt=float("inf")),
                                   name="feedback_value_finite"),
        ]
        indexes = [
            # Latest feedback per (inference, metric): an index-only descent to the greatest id.
            models.Index(fields=["inference", "metric", "-id"], include=["value", "source"],
                         name="feedback_latest_idx"),
        ]

    def __str__(self):
        return f"{self.metric}={self.value:g} ({self.source})"

    @property
    def created_at(self) -> datetime:
        return uuid7_time(self.id)

    def clean(self):
        if self.inference_id is None:
            return
        evaluator = Evaluator.objects.filter(
            evaluation_id=self.inference.run.evaluation_id, name=self.metric
        ).first()
        if evaluator is None:
            names = ", ".join(
                Evaluator.objects.filter(evaluation_id=self.inference.run.evaluation_id)
                .values_list("name", flat=True)
            )
            raise ValidationError(
                {"metric": f"'{self.metric}' is not an evaluator of this run's evaluation (it has: {names})."}
            )
        problem = evaluator.value_problem(self.value)
        if problem:
            raise ValidationError({"value": problem})


class ExactSum(models.Field):
    """A PostgreSQL `numeric` with no precision limit, read as Decimal: a sum of floats that adding and
    taking away values never rounds, so a running sum equals a fresh one whatever the order."""

    description = "Exact sum (numeric)"

    def db_type(self, connection):
        return "numeric"

    def from_db_value(self, value, expression, connection):
        return value

    def to_python(self, value):
        return value if value is None or isinstance(value, Decimal) else Decimal(str(value))


class RunningSums(models.Model):
    """n, Σ value and Σ value² (exact): enough for a mean and a sample standard deviation, and cheap
    to adjust when one value comes, changes or goes. Only the database's triggers write them."""

    n = models.IntegerField(default=0)
    total = ExactSum(default=Decimal(0))
    total_sq = ExactSum(default=Decimal(0))

    class Meta:
        abstract = True

    @property
    def mean(self) -> float | None:
        if not self.n:
            return None
        with localcontext(prec=40):
            return float(Decimal(self.total) / self.n)

    @property
    def stddev(self) -> float | None:
        """Sample standard deviation, computed exactly from the sums and rounded once at the end."""
        if self.n < 2:
            return None
        total, total_sq = Fraction(self.total), Fraction(self.total_sq)
        variance = (self.n * total_sq - total * total) / (self.n * (self.n - 1))
        with localcontext(prec=40):
            return float((Decimal(variance.numerator) / Decimal(variance.denominator)).sqrt())


class RunMetricSummary(RunningSums):
    """Running totals of each run's winning scores per metric, inside the run's window.

    Maintained by database triggers (comparisons/sql/) as feedback arrives, so statistics and
    run headlines read one row instead of scanning every score.
    """

    # DO_NOTHING here, ON DELETE CASCADE in the database (migration 0009), for every kept table: Django
    # deletes feedback and inferences first, whose triggers take their scores out, then the run.
    run = models.ForeignKey(EvaluationRun, on_delete=models.DO_NOTHING, related_name="metric_summaries")
    metric = models.CharField(max_length=200)
    overrides = models.IntegerField(default=0, db_default=0, help_text="Winning scores that are human corrections.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "metric"], name="run_metric_summary_unique")]

    def __str__(self):
        return f"{self.metric} of {self.run_id}: n={self.n}"


class WindowScore(models.Model):
    """The winning score of each (run, metric, datapoint) that counts: inside the run's window.

    A copy of what `Feedback.objects.winning()` gives, kept by database triggers
    (comparisons/sql/comparisons_rescore.sql) as feedback arrives, windows change or inferences go,
    so statistics pair runs with index-ordered joins and Δ sorting joins instead of searching
    feedback per row. Never written by Python.
    """

    pk = models.CompositePrimaryKey("run", "metric", "datapoint")
    run = models.ForeignKey(EvaluationRun, on_delete=models.DO_NOTHING, related_name="+", db_index=False)
    metric = models.CharField(max_length=200)
    # No index of its own: datapoints with scores have inferences, which PROTECT them from deletion.
    datapoint = models.ForeignKey(Datapoint, on_delete=models.DO_NOTHING, related_name="window_scores",
                                  db_index=False)
    value = models.FloatField()
    human = models.BooleanField(default=False, db_default=False, help_text="The winning score is a human's.")

    def __str__(self):
        return f"{self.metric}={self.value:g} of {self.run_id} on {self.datapoint_id}"


class PairedSummary(RunningSums):
    """Running sums of (run value − baseline value) per (baseline, run, metric) over datapoints
    both scored inside their windows: the comparison's paired Δ without re-pairing whole windows.

    Filled the first time a comparison asks for a pair (`queries.paired_summaries`), then kept exact
    by the same triggers as WindowScore; the dataset's kept-table lock orders the fill against writers.
    """

    baseline = models.ForeignKey(EvaluationRun, on_delete=models.DO_NOTHING, related_name="+")
    run = models.ForeignKey(EvaluationRun, on_delete=models.DO_NOTHING, related_name="+")
    metric = models.CharField(max_length=200)
    higher = models.IntegerField(default=0)  # datapoints where the run's value is above the baseline's
    lower = models.IntegerField(default=0)
    same = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["baseline", "run", "metric"], name="paired_summary_unique")]

    def __str__(self):
        return f"{self.metric} of {self.run_id} vs {self.baseline_id}: n={self.n}"


class RunCoverage(models.Model):
    """How many of a run's inferences are inside its window, failed, or had the variant pinned.

    Kept by statement-level triggers on inferences and by the datapoint restale trigger
    (comparisons/sql/), so statistics and every page's pinned markers read a row instead of counting inferences.
    """

    run = models.OneToOneField(EvaluationRun, on_delete=models.DO_NOTHING, primary_key=True, related_name="coverage")
    inferences = models.IntegerField(default=0)
    errors = models.IntegerField(default=0)
    pinned = models.IntegerField(default=0)

    def __str__(self):
        return f"{self.run_id}: {self.inferences} inferences, {self.errors} errors, {self.pinned} pinned"


class DatasetVersion(models.Model):
    """A counter per dataset that the database bumps in every transaction writing the dataset's
    datapoints, inferences or feedback (comparisons_data_changed): part of the cached rows' key.

    No foreign key: a dataset's delete also deletes its datapoints, whose trigger writes here."""

    dataset_id = models.BigIntegerField(primary_key=True)
    version = models.BigIntegerField()

    class Meta:
        verbose_name = "dataset version"

    def __str__(self):
        return f"dataset {self.dataset_id} at version {self.version}"
