"""Thin views: parse the query string, call `queries`, pick a template (or its htmx partial).

Errors of htmx requests are shown where the user acted: the error fragment comes with its status
(400/403/404), `HX-Retarget` naming the error slot next to the control that asked (each view says
which), `HX-Reswap: innerHTML` and `HX-Push-Url: false`, so a refused filter is never pushed into
the history. The htmx config swaps 4xx responses; errors.js shows what no view answered (5xx,
network failures) in the same slots.
"""

import re
from collections import defaultdict
from dataclasses import replace

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpResponse, HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, push_url, reswap, retarget

from comparisons import queries
from comparisons.charts import mean_ci_chart
from comparisons.diff import DiffBudget
from comparisons.export import attachment_disposition, export_columns, export_rows
from comparisons.export import render as render_export
from comparisons.forms import ComparisonForm, CorrectionForm, RevertForm
from comparisons.ids import parse_uuid
from comparisons.launch import (
    LAUNCH_PERMISSION,
    LAUNCHERS_GROUP,
    RunLaunchForm,
    RunStateError,
    can_launch,
    launch_run,
    resume_run,
    stop_run,
)
from comparisons.models import Evaluation, EvaluationRun, Feedback
from comparisons.queries import ComparisonError, RowFilter, RowSort
from comparisons.reviewers import REVIEWERS_GROUP, can_correct
from comparisons.rows_cache import cached_html, rendered_rows
from comparisons.rows_html import GRID, VIEW_CHOICES
from comparisons.templatetags.comparisons import as_text, badge


def _is_fragment_request(request) -> bool:
    """htmx asked for a fragment (a history restore needs the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


PAGE_ERROR_SLOT = "#page-error"  # base.html: for requests without a slot of their own


def _error(request, error: ComparisonError, *, slot: str = PAGE_ERROR_SLOT):
    """Render a ComparisonError with its status: the error page, or for htmx the message fragment
    swapped into `slot` (a CSS selector of an element on the page) without touching the history."""
    if not _is_fragment_request(request):
        return render(request, "comparisons/error.html", {"error": error}, status=error.status)
    response = render(request, "comparisons/error.html#error-message", {"error": error}, status=error.status)
    retarget(response, slot)
    reswap(response, "innerHTML")
    return push_url(response, False)


def _comparison_error_slot(request) -> str:
    """Where a comparison-page request's error goes: above the rows for the filters, at the end of
    the rows for the next page, under the run selector for chips and run options."""
    if request.htmx.trigger == "filters":
        return "#filter-error"
    if request.htmx.target == "load-more":
        return "#load-more-error"
    if request.htmx.target in ("comparison", "run-options"):
        return "#selector-error"
    return PAGE_ERROR_SLOT


@require_safe
@login_required
def evaluation_list(request):
    recent = EvaluationRun.objects.filter(evaluation=OuterRef("pk")).recent().values("id")
    evaluations = list(
        Evaluation.objects.select_related("function", "dataset")
        .annotate(run_count=Count("runs"), last_id=Subquery(recent[:1]), previous_id=Subquery(recent[1:2]))
        .order_by("name")
    )
    runs = EvaluationRun.objects.in_bulk([e.last_id for e in evaluations if e.last_id])
    rows = []
    for evaluation in evaluations:
        # The older of the two latest runs is the baseline.
        compare_ids = f"{evaluation.previous_id},{evaluation.last_id}" if evaluation.previous_id else ""
        last_run = runs.get(evaluation.last_id)
        progress = queries.run_progress(last_run) if last_run and not last_run.ended else None
        rows.append({"evaluation": evaluation, "last_run": last_run, "compare_ids": compare_ids, "progress": progress})
    return render(request, "comparisons/evaluation_list.html", {"rows": rows, "can_launch": can_launch(request.user)})


def _run_options(evaluation, q, run_ids, state):
    """Run-selector options, each with the page state that adds it to the comparison."""
    options, foreign = queries.search_runs(evaluation, q, selected=run_ids)
    ids = [str(i) for i in run_ids]
    for option in options:
        option.state = {**state, "run_ids": ",".join(ids if option.selected else [*ids, str(option.run.id)])}
    return options, foreign


def _comparison_context(request, name):
    """Everything comparison_detail renders, or raises ComparisonError. Also used for stats."""
    evaluation = queries.get_evaluation(name)
    form = ComparisonForm(request.GET)
    run_ids, row_query = form.parsed()
    latest_only = False
    if not run_ids:
        latest = EvaluationRun.objects.for_evaluation(evaluation).recent().values_list("id", flat=True).first()
        if latest is None:
            return {"evaluation": evaluation, "comparison": None, "state": {}}
        run_ids, latest_only = [latest], True
    comparison = queries.resolve_comparison(evaluation, run_ids)
    state = form.state()
    state["run_ids"] = comparison.run_ids_param
    return {"evaluation": evaluation, "comparison": comparison, "row_query": row_query, "state": state,
            "latest_only": latest_only, "pinned": queries.run_pinned_flags(run_ids),
            "view": form.layout(len(comparison.runs))}


def _badges(comparison, pinned) -> dict:
    """Each selected run's badge, rendered once per request rather than once per cell."""
    return {run.id: badge(run.run, run.colour, pinned.get(run.id, False)) for run in comparison.runs}


def _chips(comparison, state, pinned):
    """One chip per selected run with the links that remove it or make it the baseline."""
    ids = [str(r.id) for r in comparison.runs]
    chips = []
    for run in comparison.runs:
        rest = [i for i in ids if i != str(run.id)]
        chips.append({
            "run": run, "pinned": pinned.get(run.id, False),
            "remove": {**state, "run_ids": ",".join(rest)} if rest else None,
            "baseline": {**state, "run_ids": ",".join([str(run.id), *rest])},
        })
    return chips


@require_safe
@login_required
@vary_on_headers("HX-Request", "HX-Target")
def comparison_detail(request, name):
    """The comparison page; htmx gets `comparison` (runs changed) or `results-rows` (next page)."""
    try:
        context = _comparison_context(request, name)
        comparison = context["comparison"]
        if comparison is not None:
            rows = rendered_rows(comparison, context["row_query"], _badges(comparison, context["pinned"]),
                                 context["view"])
            context.update(page=rows, rows_html=rows.html,
                           chips=_chips(comparison, context["state"], context["pinned"]),
                           filter_choices=RowFilter.CHOICES, sort_choices=RowSort.CHOICES, view_choices=VIEW_CHOICES,
                           column_count=1 + len(comparison.runs) if context["view"] == GRID
                           else 4 + len(comparison.evaluators))
            if context["latest_only"]:  # open the selector so the next run is one click away
                context["run_options"], _ = _run_options(context["evaluation"], "", [r.id for r in comparison.runs],
                                                         context["state"])
    except ComparisonError as error:
        return _error(request, error, slot=_comparison_error_slot(request))
    template = "comparisons/comparison_detail.html"
    fragment = _is_fragment_request(request)
    if fragment and request.htmx.target != "comparison":
        return render(request, template + "#results-rows", context)
    if context["comparison"] is not None:  # the Configuration panel: in the #comparison fragment only
        context["configuration"] = queries.run_configurations(context["comparison"])
    if _comparison_is_cacheable(context):
        # What the rows' key holds and the page state; a run not ended shows live, time-dependent status.
        context["comparison_html"] = cached_html(
            context["page"], repr(sorted(context["state"].items())),
            lambda: render_to_string(template + "#comparison", context, request))
        if fragment:
            return HttpResponse(context["comparison_html"])
    if fragment:
        return render(request, template + "#comparison", context)
    context["can_launch"] = can_launch(request.user)  # the header's New-run button
    return render(request, template, context)


def _comparison_is_cacheable(context) -> bool:
    comparison = context["comparison"]
    return comparison is not None and not context["latest_only"] and all(run.run.ended for run in comparison.runs)


def _compared_runs_context(request, name):
    """`_comparison_context` for the page's fragments about its runs: ComparisonError (404) without runs."""
    context = _comparison_context(request, name)
    if context["comparison"] is None:
        raise ComparisonError(f"'{name}' has no runs yet.", status=404)
    return context


@require_safe
@login_required
@vary_on_headers("HX-Request")
def comparison_failures_detail(request, name):
    """Failure analysis: each run's errors by class, each class a link to the rows that failed that way."""
    try:
        context = _compared_runs_context(request, name)
        classes = queries.failure_classes(context["comparison"])
    except ComparisonError as error:
        return _error(request, error, slot="#results-failures")
    runs = context["comparison"].runs
    context["failures"] = [{"error_class": error_class, "counts": [counts.get(run.id, 0) for run in runs],
                            "state": {**context["state"], "filter": RowFilter.ERROR_PREFIX + error_class}}
                           for error_class, counts in classes.items()]
    template = "comparisons/comparison_failures.html"
    return render(request, template + "#results-failures" if _is_fragment_request(request) else template, context)


@require_safe
@login_required
@vary_on_headers("HX-Request")
def comparison_stats_detail(request, name):
    """Statistics of the comparison: loaded by the page as its own fragment (they scan whole windows)."""
    try:
        context = _compared_runs_context(request, name)
        stats = queries.comparison_stats(context["comparison"])
    except ComparisonError as error:
        return _error(request, error, slot="#results-stats")  # in place of the spinner
    cards = []
    for summary in stats.metrics:
        points = [(s.run.colour, s.run.run.variant_name, s.mean, s.ci and s.ci.low, s.ci and s.ci.high)
                  for s in summary.per_run]
        cards.append({"summary": summary, "chart": mean_ci_chart(points, bounded=summary.evaluator.is_boolean)})
    context.update(stats=stats, cards=cards)
    template = "comparisons/comparison_stats.html"
    if _is_fragment_request(request):
        template += "#results-stats"
    return render(request, template, context)


@require_safe
@login_required
def comparison_export(request, name):
    """The comparison as a CSV or JSONL download, streamed: the page's rows with its filters and sort."""
    fmt = request.GET.get("format", "csv")
    try:
        if fmt not in ("csv", "jsonl"):
            raise ComparisonError(f"Unknown format '{fmt[:20]}'; use csv or jsonl.")
        context = _comparison_context(request, name)
        comparison = context["comparison"]
        if comparison is None:
            raise ComparisonError(f"'{name}' has no runs yet.", status=404)
        query = replace(context["row_query"], after=None)
        query.validate(comparison)
    except ComparisonError as error:
        return _error(request, error)
    chunks = render_export(export_columns(comparison), export_rows(comparison, query), fmt)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8"
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = attachment_disposition(f"{name}-comparison.{fmt}")
    return response


@require_safe
@login_required
@vary_on_headers("HX-Request")
def run_search(request, name):
    """Run-selector options: the 10 most recent runs, or those matching `q`."""
    try:
        evaluation = queries.get_evaluation(name)
        form = ComparisonForm(request.GET)
        run_ids, _ = form.parsed()
    except ComparisonError as error:
        return _error(request, error, slot=_comparison_error_slot(request))
    q = request.GET.get("q", "")[:200]
    state = form.state()
    options, foreign = _run_options(evaluation, q, run_ids, state)
    context = {"evaluation": evaluation, "options": options, "foreign": foreign, "q": q, "state": state,
               "full_selection": len(run_ids) >= queries.MAX_RUNS}
    template = "comparisons/run_search.html"
    if _is_fragment_request(request):
        template += "#run-options"
    return render(request, template, context)


def _datapoint_context(request, name, datapoint_id, *, diffs=True):
    """Everything datapoint_detail renders (diffs only when asked: corrections need none), or raises
    ComparisonError."""
    evaluation = queries.get_evaluation(name)
    datapoint_uuid = parse_uuid(datapoint_id)
    if datapoint_uuid is None:
        raise ComparisonError(f"'{datapoint_id[:60]}' is not a datapoint id (a UUID is expected).")
    datapoint = evaluation.datapoints().filter(id=datapoint_uuid).first()
    if datapoint is None:
        raise ComparisonError(f"'{name}' has no datapoint {datapoint_uuid}.", status=404)
    form = ComparisonForm(request.GET)
    run_ids, _ = form.parsed()
    if not run_ids:
        run_ids = list(EvaluationRun.objects.for_evaluation(evaluation).recent()
                       .filter(inferences__datapoint=datapoint).values_list("id", flat=True)[: queries.MAX_RUNS])
    if not run_ids:
        return {"evaluation": evaluation, "datapoint": datapoint, "cells": [], "state": {}}
    comparison = queries.resolve_comparison(evaluation, run_ids)
    cells = queries.datapoint_cells(comparison, datapoint)
    history = defaultdict(dict)  # inference id -> metric -> its values, newest (the one that counts) first
    for feedback in Feedback.objects.history(cell.inference.id for cell in cells if cell.inference):
        history[feedback.inference_id].setdefault(feedback.metric, []).append(feedback)
    reference = as_text(datapoint.reference_output)
    base_cell = cells[0] if cells and cells[0].inference is not None else None
    base_text = as_text(base_cell.inference.output) if base_cell else None
    views = []
    budget = DiffBudget()  # long outputs must not make the page slow: diffs share a time limit
    for cell in cells:
        text = as_text(cell.inference.output) if cell.inference else ""
        view = {"cell": cell, "text": text, "history": history.get(cell.inference.id, {}) if cell.inference else {}}
        if diffs:
            view["diff_reference"] = budget.word_diff(reference, text) if cell.inference and reference else None
            view["diff_baseline"] = (budget.word_diff(base_text, text) if base_text is not None and cell.inference
                                     and not cell.run.is_baseline else None)
        views.append(view)
    return {"evaluation": evaluation, "datapoint": datapoint, "comparison": comparison, "cells": views,
            "state": {"run_ids": comparison.run_ids_param}, "pinned": queries.run_pinned_flags(run_ids),
            "can_correct": can_correct(request.user)}


@require_safe
@login_required
@vary_on_headers("HX-Request")
def datapoint_detail(request, name, datapoint_id):
    """One datapoint across the selected runs: input, reference, outputs, diffs, metric history and corrections."""
    try:
        context = _datapoint_context(request, name, datapoint_id)
    except ComparisonError as error:
        return _error(request, error)
    return render(request, "comparisons/datapoint_detail.html", context)


# The forms of one metric row are `metric-<inference id>-<row>-correct` and `…-revert`; their errors
# go to that row's `metric-<inference id>-<row>-error`.
_METRIC_FORM = re.compile(r"^(metric-[0-9a-f-]{36}-[0-9]{1,3})-(?:correct|revert)$")


def _metric_error_slot(request) -> str:
    match = _METRIC_FORM.match(request.htmx.trigger or "") if request.htmx else None
    return f"#{match.group(1)}-error" if match else PAGE_ERROR_SLOT


def _write_feedback(request, name, datapoint_id, form, write, *, what: str, done: str):
    """A correction or a revert (`what`): check the permission and the form, find the inference among the
    datapoint's outputs, call `write(inference, cleaned_data)`, answer with the refreshed scores."""
    try:
        if not can_correct(request.user):
            raise ComparisonError(f"Only reviewers can correct values: ask an administrator to add you to the "
                                  f"“{REVIEWERS_GROUP}” group.", status=403)
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise ComparisonError(f"The {what} was not saved ({problems}).")
        context = _datapoint_context(request, name, datapoint_id, diffs=False)
        inference_id = form.cleaned_data["inference_id"]
        cell = next((v["cell"] for v in context["cells"]
                     if v["cell"].inference and v["cell"].inference.id == inference_id), None)
        if cell is None:
            raise ComparisonError("That inference is not one of this datapoint's outputs in the selected runs.")
        try:
            write(cell.inference, form.cleaned_data)
        except ValidationError as error:
            raise ComparisonError(" ".join(error.messages)) from error
    except ComparisonError as error:
        return _error(request, error, slot=_metric_error_slot(request))
    url = reverse("datapoint_detail", args=[name, datapoint_id]) + f"?run_ids={context['state']['run_ids']}"
    if not request.htmx:
        return redirect(url)
    context = _datapoint_context(request, name, datapoint_id, diffs=False)
    view = next(v for v in context["cells"] if v["cell"].inference and v["cell"].inference.id == inference_id)
    context.update(view=view, done_metric=form.cleaned_data["metric"], done=done)
    return render(request, "comparisons/datapoint_detail.html#run-scores", context)


@require_POST
@login_required
def feedback_create(request, name, datapoint_id):
    """Record a human correction of a metric; it wins over the evaluator's value everywhere."""
    def write(inference, data):
        Feedback.objects.record(inference, data["metric"], data["value"], source=Feedback.Source.HUMAN,
                                reason=data["reason"], created_by=request.user)

    return _write_feedback(request, name, datapoint_id, CorrectionForm(request.POST), write,
                           what="correction", done="saved")


@require_POST
@login_required
def feedback_revert(request, name, datapoint_id):
    """Revert a human correction: the evaluator's value wins again; the correction stays in the history."""
    def write(inference, data):
        Feedback.objects.revert(inference, data["metric"], created_by=request.user)

    return _write_feedback(request, name, datapoint_id, RevertForm(request.POST), write,
                           what="revert", done="reverted")


@require_safe
@login_required
def run_detail(request, run_id):
    """One run: live progress, its summary (cutoffs, Δ vs the previous run), config, operations and errors."""
    run, response = _run_or_error(request, run_id)
    if response is not None:
        return response
    return render(request, "comparisons/run_detail.html", _run_page_context(request, run))


def _forbidden_to_launch(request):
    return _error(request, ComparisonError(
        f"Only users with the permission “{LAUNCH_PERMISSION}” can launch, stop or resume runs: ask an "
        f"administrator to add you to the “{LAUNCHERS_GROUP}” group.", status=403))


@login_required
@vary_on_headers("HX-Request")
def run_create(request, name):
    """The New-run form; a valid POST queues the run for a worker and opens its page."""
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponseNotAllowed(["GET", "HEAD", "POST"])
    try:
        evaluation = queries.get_evaluation(name)
    except ComparisonError as error:
        return _error(request, error)
    if not can_launch(request.user):
        return _forbidden_to_launch(request)
    form = RunLaunchForm(evaluation, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        run = launch_run(evaluation, form, request.user)
        url = reverse("run_detail", args=[run.id])
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    template = "comparisons/run_new.html"
    if not _is_fragment_request(request):
        return render(request, template, {"evaluation": evaluation, "form": form}, status=400 if form.is_bound else 200)
    response = render(request, template + "#run-form", {"evaluation": evaluation, "form": form},
                      status=400 if form.is_bound else 200)
    retarget(response, "#run-form")  # the refused form, with its messages, in place (errors.js leaves it)
    reswap(response, "outerHTML")
    return push_url(response, False)


def _run_or_error(request, run_id):
    """(run, None) or (None, the error response)."""
    run_uuid = parse_uuid(run_id)
    if run_uuid is None:
        return None, _error(request, ComparisonError(f"'{run_id[:60]}' is not a run id (a UUID is expected)."))
    run = EvaluationRun.objects.select_related("evaluation").filter(id=run_uuid).first()
    if run is None:
        return None, _error(request, ComparisonError(f"No run with id {run_uuid}.", status=404))
    return run, None


def _run_page_context(request, run) -> dict:
    """What the run page shows of `run` now: its progress card and its body (summary, config, operations,
    errors); the progress poll sends both, so nothing on the page is older than a second while it runs."""
    outcome = queries.run_outcome(run)
    return {"run": run, "progress": queries.run_progress(run), "outcome": outcome, "summary": queries.run_summary(run),
            "colour": outcome.run.colour, "pinned": outcome.coverage.pinned > 0,
            "compare_previous": outcome.compare_ids, "can_launch": can_launch(request.user)}


def _run_update(request, run, context: dict, partial: str):
    """A polled fragment of `run` (`run-progress-update` or `run-chip-update`); when it shows the run ended,
    it carries the toast saying so, with the run's outcome (htmx only: a page loaded after the end has no poll)."""
    if run.ended and request.htmx:
        context.setdefault("outcome", queries.run_outcome(run))
        context["toast"] = True
    return render(request, f"comparisons/run_detail.html#{partial}", context)


@require_safe
@login_required
@vary_on_headers("HX-Request")
def run_progress(request, run_id):
    """The run's live progress with the page's refreshed body (polled every second while it runs), or its
    status chip (`view=chip`, on the evaluation list and the comparison page)."""
    run, response = _run_or_error(request, run_id)
    if response is not None:
        return response
    if request.GET.get("view") == "chip":
        return _run_update(request, run, {"run": run, "progress": queries.run_progress(run), "chip": True},
                           "run-chip-update")
    return _run_update(request, run, _run_page_context(request, run), "run-progress-update")


def _run_action(request, run_id, action):
    run, response = _run_or_error(request, run_id)
    if response is not None:
        return response
    if not can_launch(request.user):
        return _forbidden_to_launch(request)
    try:
        run = action(run)
    except RunStateError as error:
        return _error(request, ComparisonError(str(error), status=409), slot="#run-action-error")
    if not request.htmx:
        return redirect("run_detail", run.id)
    return _run_update(request, run, _run_page_context(request, run), "run-progress-update")


@require_POST
@login_required
def run_stop(request, run_id):
    """Stop a queued or running run (cooperatively: what finished is kept)."""
    return _run_action(request, run_id, stop_run)


@require_POST
@login_required
def run_resume(request, run_id):
    """Queue a cancelled, failed or interrupted run again; it runs what it has not recorded."""
    return _run_action(request, run_id, resume_run)
