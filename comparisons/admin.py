"""Django admin for every model: inspect everything; datapoint edits go through versioning."""

import json
import re
from datetime import timedelta
from functools import cached_property
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection, models
from django.db.models import Count, Q, TextField
from django.db.models.functions import Cast, Coalesce
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from comparisons.forms import StorableJSONField
from comparisons.ids import short_id, uuid7_min, uuid7_time
from comparisons.models import (
    Datapoint,
    DatapointStaledError,
    Dataset,
    Evaluation,
    EvaluationRun,
    Evaluator,
    Feedback,
    Function,
    Inference,
)

UUID_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,36}$")
ID_TAIL = re.compile(r"^[0-9a-fA-F]{4,12}$")  # within a UUID's last group, which has no dash


class EstimatedCountPaginator(Paginator):
    """Exact counts, except for a whole table of more than `threshold` rows: there PostgreSQL's own
    estimate (pg_class.reltuples, kept by ANALYZE) stands in, because counting millions of feedback
    rows for the page links takes seconds. Searches and filters are always counted exactly."""

    threshold = 100_000

    @cached_property
    def count(self):
        queryset = self.object_list
        if getattr(queryset, "query", None) is not None and not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                               [queryset.model._meta.db_table])
                row = cursor.fetchone()
            if row and row[0] > self.threshold:
                return row[0]
        return super().count


def pretty_json(value) -> str:
    """A JSON value as an indented, escaped <pre> block."""
    return format_html('<pre class="json-pretty">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False))


class PortalModelAdmin(admin.ModelAdmin):
    """JSON is edited with StorableJSONField, so what PostgreSQL cannot store is a form error, not a 500.

    Keep no per-request state on `self`: one instance serves every request (use the request)."""

    formfield_overrides = {models.JSONField: {"form_class": StorableJSONField}}


class IdPrefixAndTagsSearchMixin:
    """Search also matches an id prefix, the short id shown in the lists (an id's tail) and text inside
    the `tags` JSON."""

    tag_search = True

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if not term:
            return queryset, may_have_duplicates
        extra = Q()
        if UUID_PREFIX.match(term):
            extra |= Q(id_text__startswith=term.lower())
        if ID_TAIL.match(term):  # the short id shown in the lists (ids.short_id)
            extra |= Q(id_text__endswith=term.lower())
        if self.tag_search:
            extra |= Q(tags_text__icontains=term)
        if extra:
            base = self.model.objects.annotate(id_text=Cast("id", TextField()))
            if self.tag_search:
                base = base.annotate(tags_text=Cast("tags", TextField()))
            queryset = queryset | self.get_queryset(request).filter(pk__in=base.filter(extra).values("pk"))
        return queryset, may_have_duplicates


class StaleFilter(admin.SimpleListFilter):
    title = "version"
    parameter_name = "version"

    def lookups(self, request, model_admin):
        return [("current", "Current"), ("stale", "Edited or deleted")]

    def queryset(self, request, queryset):
        if self.value() == "current":
            return queryset.current()
        if self.value() == "stale":
            return queryset.stale()
        return queryset


@admin.register(Function)
class FunctionAdmin(PortalModelAdmin):
    list_display = ["name", "kind", "datapoint_count"]
    list_filter = ["kind"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_datapoints=Count("datapoints"))

    @admin.display(description="datapoint versions", ordering="_datapoints")
    def datapoint_count(self, obj):
        return obj._datapoints


@admin.register(Dataset)
class DatasetAdmin(PortalModelAdmin):
    list_display = ["name", "current_count", "version_count"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _versions=Count("datapoints"),
            _current=Count("datapoints", filter=Q(datapoints__staled_at__isnull=True)),
        )

    @admin.display(description="current datapoints", ordering="_current")
    def current_count(self, obj):
        return obj._current

    @admin.display(description="all versions", ordering="_versions")
    def version_count(self, obj):
        return obj._versions


@admin.register(Datapoint)
class DatapointAdmin(IdPrefixAndTagsSearchMixin, PortalModelAdmin):
    list_display = ["short_id", "name", "dataset", "function", "created", "staled_at", "is_current"]
    list_filter = [StaleFilter, "dataset", "function"]
    search_fields = ["name"]
    list_select_related = ["dataset", "function"]
    fields = ["id", "created", "dataset", "function", "name", "input", "reference_output", "tags",
              "staled_at", "supersedes", "input_pretty", "reference_pretty"]
    readonly_fields = ["id", "created", "staled_at", "supersedes", "input_pretty", "reference_pretty"]
    actions = ["retire_selected"]
    ordering = ["-id"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.readonly_fields
        if obj.staled_at is not None:  # history is read-only
            return [f for f in self.fields]
        return [*self.readonly_fields, "dataset", "function"]

    def has_delete_permission(self, request, obj=None):
        return False  # deleting stales a datapoint: use the "Delete (stale)" action

    @admin.display(description="id", ordering="id")
    def short_id(self, obj):
        return short_id(obj.id)

    @admin.display(description="created", ordering="id")
    def created(self, obj):
        return obj.created_at

    @admin.display(boolean=True, description="current")
    def is_current(self, obj):
        return obj.staled_at is None

    @admin.display(description="input (formatted)")
    def input_pretty(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="reference output (formatted)")
    def reference_pretty(self, obj):
        return pretty_json(obj.reference_output)

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        changes = {f: form.cleaned_data[f] for f in ("name", "input", "reference_output", "tags")
                   if f in form.changed_data}
        if not changes:
            return
        original = Datapoint.objects.get(pk=obj.pk)
        # On the request, not on self: this admin instance serves every request, so a version kept
        # here would redirect the next edit of another datapoint to this one.
        request._datapoint_new_version = original.revise(**changes)
        messages.info(request, f"Saved as a new version {request._datapoint_new_version.pk}; the old version is kept.")

    def response_change(self, request, obj):
        new_version = getattr(request, "_datapoint_new_version", None)
        if new_version is not None and "_continue" in request.POST:
            return HttpResponseRedirect(reverse("admin:comparisons_datapoint_change", args=[new_version.pk]))
        return super().response_change(request, obj)

    @admin.action(description="Delete (stale) selected datapoints; runs made before keep them")
    def retire_selected(self, request, queryset):
        retired = 0
        for datapoint in queryset.current():
            try:
                datapoint.retire()
                retired += 1
            except DatapointStaledError:
                continue
        self.message_user(request, f"Staled {retired} datapoint(s).")


class EvaluatorInline(admin.TabularInline):
    model = Evaluator
    formfield_overrides = PortalModelAdmin.formfield_overrides
    extra = 0
    fields = ["name", "kind", "value_type", "optimize", "cutoff", "min_value", "max_value", "config"]


@admin.register(Evaluation)
class EvaluationAdmin(PortalModelAdmin):
    list_display = ["name", "function", "dataset", "run_count", "comparison_link"]
    list_filter = ["function", "dataset"]
    search_fields = ["name", "description"]
    inlines = [EvaluatorInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_runs=Count("runs"))

    @admin.display(description="runs", ordering="_runs")
    def run_count(self, obj):
        return obj._runs

    @admin.display(description="compare")
    def comparison_link(self, obj):
        url = obj.comparison_url
        if url is None:
            return "rename to compare (the name cannot be in a URL)"
        return format_html('<a href="{}">open comparison</a>', url)


@admin.register(Evaluator)
class EvaluatorAdmin(PortalModelAdmin):
    list_display = ["name", "evaluation", "kind", "value_type", "optimize", "cutoff", "min_value", "max_value"]
    list_filter = ["evaluation", "kind", "value_type"]
    search_fields = ["name", "evaluation__name"]


class RunDateFilter(admin.SimpleListFilter):
    """Run time lives in the UUIDv7 id, so date ranges become id ranges (index-friendly)."""

    title = "run date"
    parameter_name = "run_date"
    ranges = {"1": ("Past 24 hours", 1), "7": ("Past 7 days", 7), "30": ("Past 30 days", 30),
              "365": ("Past year", 365)}

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _days) in self.ranges.items()]

    def queryset(self, request, queryset):
        if self.value() in self.ranges:
            since = timezone.now() - timedelta(days=self.ranges[self.value()][1])
            return queryset.filter(id__gte=uuid7_min(since))
        return queryset


@admin.register(EvaluationRun)
class EvaluationRunAdmin(IdPrefixAndTagsSearchMixin, PortalModelAdmin):
    list_display = ["short_id", "evaluation", "variant_name", "shown_status", "run_time", "finished_at",
                    "inference_count", "error_count"]
    list_filter = ["evaluation", "status", "variant_name", RunDateFilter]
    search_fields = ["variant_name"]
    list_select_related = ["evaluation"]
    readonly_fields = ["id", "run_time", "running_since", "heartbeat_at", "config_pretty", "tags_pretty",
                       "evaluators_pretty", "inference_count", "error_count"]
    fields = ["id", "run_time", "evaluation", "variant_name", "status", "running_since", "finished_at", "heartbeat_at",
              "config_pretty", "tags_pretty", "evaluators_pretty", "inference_count", "error_count"]
    actions = ["compare_selected"]

    def get_queryset(self, request):
        # RunCoverage is kept by triggers: counting a million inferences per page of runs is not needed.
        return super().get_queryset(request).annotate(
            _inferences=Coalesce("coverage__inferences", 0), _errors=Coalesce("coverage__errors", 0))

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return [*self.readonly_fields, "evaluation", "variant_name"]
        return self.readonly_fields

    @admin.display(description="id", ordering="id")
    def short_id(self, obj):
        return short_id(obj.id)

    @admin.display(description="status", ordering="status")
    def shown_status(self, obj):
        return obj.shown_status_display  # "Interrupted" for a `running` run whose heartbeat went stale

    @admin.display(description="run time", ordering="id")
    def run_time(self, obj):
        return uuid7_time(obj.id)

    @admin.display(description="inferences in window", ordering="_inferences")
    def inference_count(self, obj):
        return obj._inferences

    @admin.display(description="errors in window", ordering="_errors")
    def error_count(self, obj):
        return obj._errors

    @admin.display(description="config")
    def config_pretty(self, obj):
        return pretty_json(obj.config)

    @admin.display(description="tags")
    def tags_pretty(self, obj):
        return pretty_json(obj.tags)

    @admin.display(description="evaluators at run time")
    def evaluators_pretty(self, obj):
        if obj.evaluator_snapshot is None:
            return "not recorded (the run was recorded before evaluator snapshots, or imported)"
        return pretty_json(obj.evaluator_snapshot)

    @admin.action(description="Compare selected runs")
    def compare_selected(self, request, queryset):
        runs = list(queryset.select_related("evaluation").order_by("id"))
        evaluations = {run.evaluation.name for run in runs}
        if len(evaluations) > 1:
            self.message_user(
                request,
                f"Runs of different evaluations cannot be compared ({', '.join(sorted(evaluations))}); "
                "select runs of one evaluation.",
                level=messages.ERROR,
            )
            return None
        url = runs[0].evaluation.comparison_url
        if url is None:
            self.message_user(request, f"'{runs[0].evaluation.name}' cannot be in a URL; rename the evaluation "
                              "to compare its runs.", level=messages.ERROR)
            return None
        return HttpResponseRedirect(f"{url}?{urlencode({'run_ids': ','.join(str(r.id) for r in runs)})}")


class ValuesFromFilter(admin.SimpleListFilter):
    """Choices from a small table instead of SELECT DISTINCT over millions of rows (Django's default
    for a text field): variants from runs, metrics from evaluators."""

    source = None  # (model, field) the choices come from

    def lookups(self, request, model_admin):
        model, field = self.source
        values = model.objects.order_by(field).values_list(field, flat=True).distinct()
        return [(value, value) for value in values]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class VariantFilter(ValuesFromFilter):
    title = "variant"
    parameter_name = "variant_name"
    source = (EvaluationRun, "variant_name")


class MetricFilter(ValuesFromFilter):
    title = "metric"
    parameter_name = "metric"
    source = (Evaluator, "name")


@admin.register(Inference)
class InferenceAdmin(IdPrefixAndTagsSearchMixin, PortalModelAdmin):
    list_display = ["short_id", "run", "variant_name", "variant_pinned", "datapoint_short", "latency_ms",
                    "has_error"]
    list_filter = ["run__evaluation", VariantFilter, "variant_pinned", ("error", admin.EmptyFieldListFilter)]
    search_fields = ["variant_name", "error"]
    list_select_related = ["run", "run__evaluation"]
    raw_id_fields = ["run", "datapoint"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # "n of N" would count the whole table on every filtered page
    readonly_fields = ["id", "input_pretty", "output_pretty", "tags_pretty"]
    fields = ["id", "run", "datapoint", "variant_name", "variant_pinned", "latency_ms", "input_tokens",
              "output_tokens", "cost", "error", "input_pretty", "output_pretty", "tags_pretty"]

    @admin.display(description="id", ordering="id")
    def short_id(self, obj):
        return short_id(obj.id)

    @admin.display(description="datapoint")
    def datapoint_short(self, obj):
        return short_id(obj.datapoint_id)

    @admin.display(boolean=True, description="error")
    def has_error(self, obj):
        return obj.error is not None

    @admin.display(description="input")
    def input_pretty(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="output")
    def output_pretty(self, obj):
        return pretty_json(obj.output)

    @admin.display(description="tags")
    def tags_pretty(self, obj):
        return pretty_json(obj.tags)


@admin.register(Feedback)
class FeedbackAdmin(IdPrefixAndTagsSearchMixin, PortalModelAdmin):
    list_display = ["short_id", "metric", "value", "source", "created", "inference_short", "created_by"]
    list_filter = ["source", MetricFilter, "inference__run__evaluation"]
    search_fields = ["metric", "reason"]
    raw_id_fields = ["inference", "created_by"]
    readonly_fields = ["id", "created"]
    list_select_related = ["created_by"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)  # feedback only appends

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="id", ordering="id")
    def short_id(self, obj):
        return short_id(obj.id)

    @admin.display(description="created", ordering="id")
    def created(self, obj):
        return obj.created_at

    @admin.display(description="inference")
    def inference_short(self, obj):
        return short_id(obj.inference_id)
