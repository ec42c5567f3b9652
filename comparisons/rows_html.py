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

from comparisons.queries import Cell, Comparison, ComparisonPage
from comparisons.templatetags.comparisons import as_text, is_long, metric_value, pass_class, signed

PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"
NO_SCORE = '<td class="num"><span class="muted">–</span></td>'
NOTES = {Cell.OUT_OF_WINDOW: "not in dataset at run time", Cell.MISSING: "missing — no inference for this datapoint"}


def _date(value) -> str:
    """Like the template's `date:"M j, H:i"`, without its per-call format parsing."""
    value = localtime(value)
    return f"{dates.MONTHS_3[value.month].title()} {value.day}, {value:%H:%M}"


def _clip(text: str, extra_class: str = "") -> str:
    """A text cell: clipped, with a 'show all' disclosure when it is long."""
    if is_long(text):
        return (f'<details class="expand"><summary><div class="clip{extra_class}">{escape(text, False)}</div>'
                f'<span class="more">show all</span></summary></details>')
    return f'<div class="{"output" if extra_class else "clip"}">{escape(text, False)}</div>'


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


def _score(evaluator, score) -> str:
    if score is None:
        return NO_SCORE
    reason = escape(score.reason) if score.reason else ""  # mostly empty: skip the escaping
    html = (f'<td class="num"><span class="value {pass_class(score.passes)}" title="{reason}">'
            f'{metric_value(score.value, evaluator)}</span>')
    if score.human:
        suffix = f": {reason}" if reason else ""
        html += f'<span class="human" title="Corrected by a human{suffix}">✎</span>'
    if score.vs_baseline == 1:
        html += ' <span class="arrow up" title="better than the baseline">▲</span>'
    elif score.vs_baseline == -1:
        html += ' <span class="arrow down" title="worse than the baseline">▼</span>'
    return html + "</td>"


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
    parts.append(f'<td class="num">{latency}</td>')
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
