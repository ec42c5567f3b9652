"""Thin views: parse the query string, call `queries`, pick a template (or its htmx partial)."""

from dataclasses import replace

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, OuterRef, Subquery
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe
from django.views.decorators.vary import vary_on_headers

from comparisons import queries
from comparisons.charts import mean_ci_chart
from comparisons.diff import word_diff
from comparisons.export import attachment_disposition, export_columns, export_rows
from comparisons.export import render as render_export
from comparisons.forms import ComparisonForm, CorrectionForm
from comparisons.ids import parse_uuid
from comparisons.models import Evaluation, EvaluationRun, Feedback
from comparisons.queries import ComparisonError, RowFilter, RowSort
from comparisons.rows_html import render_rows
from comparisons.templatetags.comparisons import as_text


def _is_fragment_request(request) -> bool:
    """htmx asked for a fragment (a history restore needs the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def _error(request, error: ComparisonError, evaluation=None, template="comparisons/error.html"):
    """Render a ComparisonError with its status; htmx requests get the message fragment."""
    context = {"error": error, "evaluation": evaluation}
    name = f"{template}#error-message" if _is_fragment_request(request) else template
    return render(request, name, context, status=error.status)


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
        rows.append({"evaluation": evaluation, "last_run": runs.get(evaluation.last_id), "compare_ids": compare_ids})
    return render(request, "comparisons/evaluation_list.html", {"rows": rows})


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
            "latest_only": latest_only, "pinned": queries.run_pinned_flags(run_ids)}


def _badges(comparison, pinned) -> dict:
    """Each selected run's badge, rendered once per request rather than once per cell."""
    return {run.id: render_to_string("comparisons/_badge.html",
                                     {"run": run.run, "colour": run.colour, "pinned": pinned.get(run.id, False)})
            for run in comparison.runs}


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
            page = queries.comparison_page(comparison, context["row_query"])
            badges = _badges(comparison, context["pinned"])
            context.update(page=page, rows_html=render_rows(comparison, page, badges),
                           chips=_chips(comparison, context["state"], context["pinned"]),
                           filter_choices=RowFilter.CHOICES, sort_choices=RowSort.CHOICES,
                           column_count=4 + len(comparison.evaluators))
            if context["latest_only"]:  # open the selector so the next run is one click away
                context["run_options"], _ = _run_options(context["evaluation"], "", [r.id for r in comparison.runs],
                                                         context["state"])
    except ComparisonError as error:
        return _error(request, error)
    template = "comparisons/comparison_detail.html"
    if _is_fragment_request(request):
        template += "#comparison" if request.htmx.target == "comparison" else "#results-rows"
    return render(request, template, context)


@require_safe
@login_required
@vary_on_headers("HX-Request")
def comparison_stats_detail(request, name):
    """Statistics of the comparison: loaded by the page as its own fragment (they scan whole windows)."""
    try:
        context = _comparison_context(request, name)
        if context["comparison"] is None:
            raise ComparisonError(f"'{name}' has no runs yet.", status=404)
        stats = queries.comparison_stats(context["comparison"])
    except ComparisonError as error:
        return _error(request, error)
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
        return _error(request, error)
    q = request.GET.get("q", "")[:200]
    state = form.state()
    options, foreign = _run_options(evaluation, q, run_ids, state)
    context = {"evaluation": evaluation, "options": options, "foreign": foreign, "q": q, "state": state,
               "full_selection": len(run_ids) >= queries.MAX_RUNS}
    template = "comparisons/run_search.html"
    if _is_fragment_request(request):
        template += "#run-options"
    return render(request, template, context)


def _datapoint_context(request, name, datapoint_id):
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
    reference = as_text(datapoint.reference_output)
    base_cell = cells[0] if cells and cells[0].inference is not None else None
    base_text = as_text(base_cell.inference.output) if base_cell else None
    views = []
    for cell in cells:
        text = as_text(cell.inference.output) if cell.inference else ""
        views.append({
            "cell": cell, "text": text,
            "diff_reference": word_diff(reference, text) if cell.inference and reference else None,
            "diff_baseline": word_diff(base_text, text) if base_text is not None and cell.inference
            and not cell.run.is_baseline else None,
        })
    return {"evaluation": evaluation, "datapoint": datapoint, "comparison": comparison, "cells": views,
            "state": {"run_ids": comparison.run_ids_param}, "pinned": queries.run_pinned_flags(run_ids)}


@require_safe
@login_required
@vary_on_headers("HX-Request")
def datapoint_detail(request, name, datapoint_id):
    """One datapoint across the selected runs: input, reference, outputs, diffs, metric corrections."""
    try:
        context = _datapoint_context(request, name, datapoint_id)
    except ComparisonError as error:
        return _error(request, error)
    return render(request, "comparisons/datapoint_detail.html", context)


@require_POST
@login_required
def feedback_create(request, name, datapoint_id):
    """Record a human correction of a metric; it wins over the evaluator's value everywhere."""
    form = CorrectionForm(request.POST)
    try:
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise ComparisonError(f"The correction was not saved ({problems}).")
        context = _datapoint_context(request, name, datapoint_id)
        cell = next((v["cell"] for v in context["cells"]
                     if v["cell"].inference and v["cell"].inference.id == form.cleaned_data["inference_id"]), None)
        if cell is None:
            raise ComparisonError("That inference is not one of this datapoint's outputs in the selected runs.")
        try:
            Feedback.objects.record(cell.inference, form.cleaned_data["metric"], form.cleaned_data["value"],
                                    source=Feedback.Source.HUMAN, reason=form.cleaned_data["reason"],
                                    created_by=request.user)
        except ValidationError as error:
            raise ComparisonError(" ".join(error.messages)) from error
    except ComparisonError as error:
        return _error(request, error)
    url = reverse("datapoint_detail", args=[name, datapoint_id]) + f"?run_ids={context['state']['run_ids']}"
    if not request.htmx:
        return redirect(url)
    context = _datapoint_context(request, name, datapoint_id)
    view = next(v for v in context["cells"] if v["cell"].inference
                and v["cell"].inference.id == form.cleaned_data["inference_id"])
    context.update(view=view, saved=form.cleaned_data["metric"])
    return render(request, "comparisons/datapoint_detail.html#run-scores", context)


@require_safe
@login_required
def run_detail(request, run_id):
    """One run: config, tags, statistics, latency percentiles, tokens, cost and errors."""
    run_uuid = parse_uuid(run_id)
    if run_uuid is None:
        return _error(request, ComparisonError(f"'{run_id[:60]}' is not a run id (a UUID is expected)."))
    run = EvaluationRun.objects.select_related("evaluation").filter(id=run_uuid).first()
    if run is None:
        return _error(request, ComparisonError(f"No run with id {run_uuid}.", status=404))
    comparison = queries.resolve_comparison(run.evaluation, [run.id])
    stats = queries.comparison_stats(comparison)
    summary = queries.run_summary(run)
    previous = (EvaluationRun.objects.for_evaluation(run.evaluation).filter(id__lt=run.id).recent()
                .values_list("id", flat=True).first())
    return render(request, "comparisons/run_detail.html", {
        "run": run, "stats": stats, "summary": summary, "coverage": stats.coverage[run.id],
        "compare_previous": f"{previous},{run.id}" if previous else None, "colour": comparison.runs[0].colour,
        "pinned": stats.coverage[run.id].pinned > 0,
    })
