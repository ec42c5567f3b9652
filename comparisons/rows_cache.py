"""The comparison's rendered rows, cached: a page of rows is rendered once per web process for as long
as nothing it shows has changed, however many people open it.

The key holds everything the rows' HTML is made of, read fresh on every request:
- the dataset's version (`queries.dataset_version`), which the database bumps in every transaction
  that writes the dataset's datapoints, inferences or feedback — a correction, a runner batch, an
  edited datapoint, an import;
- every column of the evaluation, its evaluators and the selected runs, in the comparison's order
  (names, cutoffs, ranges, statuses, times: what the windows, formats and badges depend on), and the
  badges themselves;
- the row query (filter, metric, sort, cursor, page size), the view (grid or stacked) and the code's version.

The version is read before the rows, and both are read in committed snapshots, so rows cached under a
version are never older than it: a reader that races a writer's commit caches newer rows under the
older version, which only a reader that started before the commit can use. `COMPARISON_ROWS_CACHE_ENTRIES=0`
turns the cache off (DummyCache); tests/test_rows_cache.py checks it against fresh renders with
several connections writing at once.
"""

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import caches
from django.utils.safestring import SafeString

from comparisons import queries
from comparisons.queries import Comparison, RowQuery
from comparisons.rows_html import GRID, STACKED, render_grid_rows, render_rows
from evalcompare import __version__

CACHE_ALIAS = "comparison_rows"
# Bump when the rows' markup changes in a way the package version does not follow (a development checkout).
MARKUP = 3


@dataclass(frozen=True, slots=True)
class RenderedRows:
    """What the page's template needs of a page of rows."""

    html: SafeString
    count: int
    next_after: uuid.UUID | None
    key: str  # the cache key: everything the rows are made of (cached_html extends it)

    @property
    def rows(self) -> int:  # the template asks `page.rows` whether the page has any
        return self.count


def _columns(instance) -> tuple:
    return tuple(getattr(instance, field.attname) for field in instance._meta.concrete_fields)


def cache_key(comparison: Comparison, query: RowQuery, badges: dict, view: str, version: tuple) -> str:
    parts = (
        MARKUP, __version__, version, view, _columns(comparison.evaluation),
        [_columns(evaluator) for evaluator in comparison.evaluators],
        [(_columns(run.run), run.position, run.colour, badges[run.id]) for run in comparison.runs],
        (query.filter, query.metric, query.sort, query.after, query.page_size),
    )
    return "rows:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def rendered_rows(comparison: Comparison, query: RowQuery, badges: dict, view: str = STACKED) -> RenderedRows:
    """A page of rows as HTML, in the grid or stacked view: from the cache when nothing it shows has
    changed, else rendered and kept."""
    query.validate(comparison)
    cache = caches[CACHE_ALIAS]
    key = cache_key(comparison, query, badges, view, queries.dataset_version(comparison.evaluation.dataset_id))
    rendered = cache.get(key)
    if rendered is None:
        page = queries.comparison_page(comparison, query)
        html = render_grid_rows(comparison, page) if view == GRID else render_rows(comparison, page, badges)
        rendered = RenderedRows(html, len(page.rows), page.next_after, key)
        cache.set(key, rendered)
    return rendered


def cached_html(rows: RenderedRows, what: str, render: Callable[[], str]) -> str:
    """HTML made of the rows' inputs and `what` (the rest of its inputs, as a string), cached with the rows."""
    key = "html:" + hashlib.sha256(f"{rows.key}|{what}".encode()).hexdigest()
    cache = caches[CACHE_ALIAS]
    html = cache.get(key)
    if html is None:
        html = render()
        cache.set(key, html)
    return html
