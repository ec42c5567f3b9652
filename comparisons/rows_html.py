"""The comparison's result rows as HTML, built in Python.

A page is 100 datapoints × every selected run × every metric: thousands of small pieces. Through
the template engine that cost ~100 ms a page at 5 runs, ten times the page's queries, so the rows
are built here with plain string joins and `html.escape` instead; everything around them (the load
more row, the empty state) stays in `comparison_detail.html`. The markup is the template's: the
classes and ids the stylesheet, htmx and the browser tests rely on.
"""

from html import escape

from django.urls import reverse
from django.utils import dates
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import localtime

from comparisons.diff import DiffBudget
from comparisons.queries import Cell, Comparison, ComparisonPage
from comparisons.templatetags.comparisons import as_text, is_long, metric_value, pass_class, signed

GRID, STACKED = "grid", "stacked"  # the two views of the rows (`view=` in the URL)
VIEW_CHOICES = [(GRID, "Grid: a column per run"), (STACKED, "Stacked: runs under each datapoint")]
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"
NO_SCORE = '<td class="num"><span class="muted">–</span></td>'
NOTES = {Cell.OUT_OF_WINDOW: "not in dataset at run time", Cell.MISSING: "missing — no inference for this datapoint"}


def _date(value) -> str:
    """Like the template's `date:"M j, H:i"`, without its per-call format parsing."""
    value = localtime(value)
    return f"{dates.MONTHS_3[value.month].title()} {value.day}, {value:%H:%M}"


def _clip(text: str, extra_class: str = "", *, html: str | None = None, long: bool | None = None) -> str:
    """A text cell: clipped, with a 'show all' disclosure when it is long (`is_long`, unless `long` says).
    `html`: the text already escaped and marked up (a diff)."""
    shown = escape(text, False) if html is None else html
    if is_long(text) if long is None else long:
        return (f'<details class="expand"><summary><div class="clip{extra_class}">{shown}</div>'
                f'<span class="more">show all</span></summary></details>')
    return f'<div class="{"output" if extra_class else "clip"}">{shown}</div>'


def _datapoint_cell(row, rowspan: int, href: str) -> str:
    datapoint = row.datapoint
    meta = _date(datapoint.created_at)
    if datapoint.staled_at:
        meta += f" · edited or deleted {_date(datapoint.staled_at)}"
    if row.delta is not None:
        meta += f" · Δ {signed(row.delta)}"
    parts = [f'<td class="datapoint" rowspan="{rowspan}"><a class="dp-name" href="{href}">'
             f'{escape(datapoint.name or str(datapoint.id))}</a><div class="dp-meta">{meta}</div>'
             f'<div class="label">Input</div>{_clip(as_text(datapoint.input))}']
    reference = as_text(datapoint.reference_output)
    if reference:
        parts.append(f'<div class="label">Reference</div>{_clip(reference)}')
    parts.append("</td>")
    return "".join(parts)


def _score_value(evaluator, score) -> str:
    """A score: its value coloured by the cutoff, a ✎ when a human corrected it, ▲/▼ against the baseline."""
    if score is None:
        return '<span class="muted">–</span>'
    reason = escape(score.reason) if score.reason else ""  # mostly empty: skip the escaping
    html = (f'<span class="value {pass_class(score.passes)}" title="{reason}">'
            f'{metric_value(score.value, evaluator)}</span>')
    if score.human:
        suffix = f": {reason}" if reason else ""
        html += f'<span class="human" title="Corrected by a human{suffix}">✎</span>'
    if score.vs_baseline == 1:
        html += ' <span class="arrow up" title="better than the baseline">▲</span>'
    elif score.vs_baseline == -1:
        html += ' <span class="arrow down" title="worse than the baseline">▼</span>'
    return html


def _score(evaluator, score) -> str:
    return NO_SCORE if score is None else f'<td class="num">{_score_value(evaluator, score)}</td>'


def _usage(inference) -> str:
    """Tokens in → out and cost of one inference, as a short muted line ('' when none were recorded)."""
    parts = []
    if inference.input_tokens is not None or inference.output_tokens is not None:
        tokens_in = "?" if inference.input_tokens is None else f"{inference.input_tokens:,}"
        tokens_out = "?" if inference.output_tokens is None else f"{inference.output_tokens:,}"
        parts.append(f"{tokens_in} → {tokens_out} tok")
    if inference.cost is not None:
        cost = float(inference.cost)  # cents' fractions in plain decimals, never 8.8e-05
        parts.append(f"${cost:.4f}" if cost >= 0.0001 else "$" + (f"{cost:.10f}".rstrip("0").rstrip(".") or "0"))
    return f'<div class="usage">{" · ".join(parts)}</div>' if parts else ""


def _cell(cell, evaluators, span: int) -> str:
    if cell.state in NOTES:
        return f'<td colspan="{span}" class="cell-note">{NOTES[cell.state]}</td>'
    inference = cell.inference
    parts = ["<td>"]
    if cell.state == Cell.ERROR:
        parts.append(f'<div class="cell-error">{escape(inference.error)}</div>')
    text = as_text(inference.output)
    if text:
        parts.append(_clip(text, " output"))
    parts.append("</td>")
    for evaluator in evaluators:
        parts.append(_score(evaluator, cell.scores.get(evaluator.name)))
    # Rounded half up like the template's floatformat (latencies are never negative).
    latency = f"{int(inference.latency_ms + 0.5)} ms" if inference.latency_ms is not None else "–"
    parts.append(f'<td class="num">{latency}{_usage(inference)}</td>')
    return "".join(parts)


def render_rows(comparison: Comparison, page: ComparisonPage, badges: dict) -> SafeString:
    """Every row of `page` as `<tbody class="group">` elements; `badges` maps run id -> badge HTML."""
    evaluators = comparison.evaluators
    span = len(evaluators) + 2
    link = reverse("datapoint_detail", args=[comparison.evaluation.name, PLACEHOLDER_ID]) + \
        f"?run_ids={escape(comparison.run_ids_param)}"
    out = []
    for row in page.rows:
        datapoint_id = str(row.datapoint.id)
        out.append(f'<tbody class="group" id="row-{datapoint_id}" data-datapoint-id="{datapoint_id}">')
        for index, cell in enumerate(row.cells):
            out.append(f'<tr class="cell-{cell.state}">')
            if index == 0:
                out.append(_datapoint_cell(row, len(row.cells), link.replace(PLACEHOLDER_ID, datapoint_id)))
            out.append(f'<td class="nowrap">{badges[cell.run.id]}</td>')
            out.append(_cell(cell, evaluators, span))
            out.append("</tr>")
        out.append("</tbody>")
    return mark_safe("".join(out))  # noqa: S308 -- every value above is escaped


# ---------------------------------------------------------------------------------------------
# The grid view: one row per datapoint, one column per run, each output diffed against the baseline's.

GRID_DIFF_BUDGET_S = 0.25  # all the word diffs of one page together (DiffBudget); later ones come coarser
GRID_LONG_CHARS, GRID_LONG_LINES = 1200, 24  # a column per run has room: a JSON object's fields all show


def _grid_long(text: str) -> bool:
    return len(text) > GRID_LONG_CHARS or text.count("\n") > GRID_LONG_LINES


def _grid_scores(cell, evaluators) -> str:
    parts = []
    for evaluator in evaluators:
        value = _score_value(evaluator, cell.scores.get(evaluator.name))
        parts.append(f'<span class="gscore"><span class="gmetric">{escape(evaluator.name)}</span> {value}</span>')
    return f'<div class="gscores">{"".join(parts)}</div>'


def _grid_output(text: str, base_text: str | None, budget: DiffBudget) -> str:
    """This run's output; in a compared run's column, marked where it differs from the baseline's."""
    long = _grid_long(text)
    if base_text is None:  # the baseline's own column, or no baseline output to compare with
        return _clip(text, " output", long=long) if text else ""
    if text == base_text:
        return '<div class="same">identical to baseline</div>'
    diff = budget.word_diff(base_text, text)
    if diff.too_large:
        return ('<div class="same">differs from the baseline (too long to mark)</div>'
                + _clip(text, " output", long=long))
    return _clip(text, " output", html=diff.html, long=long)


def _grid_cell(cell, evaluators, base_text: str | None, budget: DiffBudget) -> str:
    if cell.state in NOTES:
        return f'<td class="gcell cell-note cell-{cell.state}">{NOTES[cell.state]}</td>'
    inference = cell.inference
    parts = [f'<td class="gcell cell-{cell.state}">', _grid_scores(cell, evaluators)]
    if cell.state == Cell.ERROR:
        parts.append(f'<div class="cell-error">{escape(inference.error)}</div>')
    text = as_text(inference.output)
    if text:
        parts.append(_grid_output(text, base_text, budget))
    usage = _usage(inference)
    if inference.latency_ms is not None or usage:
        latency = f"{int(inference.latency_ms + 0.5)} ms" if inference.latency_ms is not None else ""
        parts.append(f'<div class="gmeta">{latency}{usage}</div>')
    parts.append("</td>")
    return "".join(parts)


def render_grid_rows(comparison: Comparison, page: ComparisonPage) -> SafeString:
    """Every row of `page` as one `<tbody class="group">` of one row: the datapoint, then a cell per run."""
    evaluators = comparison.evaluators
    link = reverse("datapoint_detail", args=[comparison.evaluation.name, PLACEHOLDER_ID]) + \
        f"?run_ids={escape(comparison.run_ids_param)}"
    budget = DiffBudget(GRID_DIFF_BUDGET_S)
    out = []
    for row in page.rows:
        datapoint_id = str(row.datapoint.id)
        base = row.cells[0]
        base_text = as_text(base.inference.output) if base.state in (Cell.OK, Cell.ERROR) else None
        out.append(f'<tbody class="group" id="row-{datapoint_id}" data-datapoint-id="{datapoint_id}"><tr>')
        out.append(_datapoint_cell(row, 1, link.replace(PLACEHOLDER_ID, datapoint_id)))
        for index, cell in enumerate(row.cells):
            out.append(_grid_cell(cell, evaluators, None if index == 0 else base_text or None, budget))
        out.append("</tr></tbody>")
    return mark_safe("".join(out))  # noqa: S308 -- every value above is escaped (the diff escapes its pieces)
