"""The comparison: runs side by side, each on the dataset as it was at its run time.

Everything that compares runs goes through here (the page, the CSV export, the benchmark), so
nothing in this module knows about HTTP. DESIGN.md, "The run-time window", is the specification:

1. `resolve_comparison()` validates the evaluation and run ids (ComparisonError otherwise).
2. `comparison_page()` returns one keyset page of rows (datapoints in at least one run's window,
   newest first or by Δ) with a cell per (row, run), in a fixed number of SQL queries.
3. `comparison_stats()` returns per (run, metric) n, mean and 95% CI over each run's whole window,
   coverage, and the paired Δ against the baseline (the first run).
"""

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property, reduce
from operator import or_

from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    BigIntegerField,
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    FilteredRelation,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    TextField,
)
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Greatest, Least
from django.utils import timezone

from comparisons.ids import parse_uuid
from comparisons.models import (
    Datapoint,
    Evaluation,
    EvaluationRun,
    Evaluator,
    Feedback,
    Inference,
    PairedSummary,
    RunCoverage,
    RunMetricSummary,
    in_window,
    lock_kept_tables,
    window_q,
)
from comparisons.stats import Interval, metric_interval, wald_interval

PAGE_SIZE = 100
MAX_RUNS = 10
VARIANT_COLOURS = 10


class ComparisonError(Exception):
    """Bad comparison input: `status` is 400 (malformed) or 404 (unknown); `message` names the problem."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class SelectedRun:
    """A run in the comparison, with what the page needs to draw it."""

    run: EvaluationRun
    position: int  # 0 is the baseline
    colour: int  # stable badge colour, see assign_colours()

    @property
    def id(self) -> uuid.UUID:
        return self.run.id

    @property
    def time(self) -> datetime:
        return self.run.started_at

    @property
    def is_baseline(self) -> bool:
        return self.position == 0


@dataclass(frozen=True)
class Comparison:
    """A validated comparison: the evaluation, its evaluators, and the selected runs (baseline first)."""

    evaluation: Evaluation
    evaluators: list[Evaluator]
    runs: list[SelectedRun]

    @property
    def baseline(self) -> SelectedRun:
        return self.runs[0]

    @property
    def run_ids_param(self) -> str:
        return ",".join(str(r.id) for r in self.runs)

    @cached_property
    def _evaluators_by_name(self) -> dict[str, Evaluator]:
        return {e.name: e for e in self.evaluators}

    def evaluator(self, name: str) -> Evaluator | None:
        return self._evaluators_by_name.get(name)


def parse_run_ids(text: str | None) -> list[uuid.UUID]:
    """Split a comma-separated `run_ids` value; malformed or repeated ids raise ComparisonError (400)."""
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    malformed = [part for part in parts if parse_uuid(part) is None]
    if malformed:
        shown = ", ".join(f"'{p[:60]}'" for p in malformed)
        raise ComparisonError(f"Not a valid run id (a UUID is expected): {shown}.")
    ids = [parse_uuid(part) for part in parts]
    repeated = sorted({str(i) for i in ids if ids.count(i) > 1})
    if repeated:
        raise ComparisonError(f"Run listed more than once: {', '.join(repeated)}.")
    if len(ids) > MAX_RUNS:
        raise ComparisonError(f"At most {MAX_RUNS} runs can be compared at once; {len(ids)} were given.")
    return ids


def with_ordinal(runs):
    """Annotate each run with `ordinal`: how many runs of its evaluation came before it.

    Raw SQL rather than a Subquery: every comparison request asks, and compiling the ORM's version
    cost more than running it."""
    run = EvaluationRun._meta.db_table
    return runs.annotate(ordinal=RawSQL(
        f"SELECT count(*) FROM {run} e WHERE e.evaluation_id = {run}.evaluation_id AND e.id < {run}.id", [],
        output_field=IntegerField()))


def assign_colours(ordinals: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
    """A badge colour per run from its ordinal in the evaluation (`with_ordinal`).

    A run's colour never depends on what else is selected or in which order, and consecutive runs,
    the pair compared most often, get neighbouring palette entries, which are chosen to contrast.
    Runs ten apart would share a colour; then the later run takes the next free one.
    """
    taken: set[int] = set()
    colours = {}
    for run_id in sorted(ordinals, key=lambda u: u.bytes):
        colour = ordinals[run_id] % VARIANT_COLOURS
        while colour in taken and len(taken) < VARIANT_COLOURS:
            colour = (colour + 1) % VARIANT_COLOURS
        taken.add(colour)
        colours[run_id] = colour
    return colours


def get_evaluation(name: str) -> Evaluation:
    """The evaluation called `name`, or ComparisonError (404)."""
    evaluation = Evaluation.objects.select_related("function", "dataset").filter(name=name).first()
    if evaluation is None:
        raise ComparisonError(f"There is no evaluation named '{name}'.", status=404)
    return evaluation


def resolve_comparison(evaluation: Evaluation | str, run_ids: list[uuid.UUID]) -> Comparison:
    """Validate that every run exists and belongs to `evaluation`; the first run is the baseline.

    Raises ComparisonError: 404 naming unknown run ids, 400 naming runs of another evaluation.
    """
    if isinstance(evaluation, str):
        evaluation = get_evaluation(evaluation)
    if not run_ids:
        raise ComparisonError("Choose at least one run to compare (run_ids=...).")
    found = {run.id: run for run in with_ordinal(EvaluationRun.objects.filter(id__in=run_ids))}
    unknown = [str(i) for i in run_ids if i not in found]
    if unknown:
        raise ComparisonError(f"No run with id {', '.join(unknown)}.", status=404)
    for run in found.values():
        if run.evaluation_id == evaluation.id:
            run.evaluation = evaluation  # no query for what we hold
    foreign = [found[i] for i in run_ids if found[i].evaluation_id != evaluation.id]
    if foreign:
        listed = "; ".join(f"{r.id} belongs to '{r.evaluation.name}'" for r in foreign)
        raise ComparisonError(
            f"Only runs of one evaluation can be compared, and this is '{evaluation.name}': {listed}."
        )
    colours = assign_colours({i: found[i].ordinal for i in run_ids})
    runs = [SelectedRun(found[i], position, colours[i]) for position, i in enumerate(run_ids)]
    return Comparison(evaluation, list(evaluation.evaluators.order_by("id")), runs)


# ---------------------------------------------------------------------------------------------
# Rows


class RowFilter:
    ALL = ""
    REGRESSED = "regressed"
    IMPROVED = "improved"
    DIFFERS = "differs"
    MISSING = "missing"
    ERROR_PREFIX = "error:"  # filter=error:<class>: the failure analysis' click-through (comparisons_error_class)
    CHOICES = [(ALL, "All rows"), (REGRESSED, "Regressed vs baseline"), (IMPROVED, "Improved vs baseline"),
               (DIFFERS, "Outputs differ"), (MISSING, "Missing or errored")]


class RowSort:
    NEWEST = "newest"
    REGRESSED_FIRST = "regressed_first"
    IMPROVED_FIRST = "improved_first"
    CHOICES = [(NEWEST, "Newest first"), (REGRESSED_FIRST, "Largest regression first"),
               (IMPROVED_FIRST, "Largest improvement first")]


@dataclass(frozen=True)
class RowQuery:
    """What rows to show: a filter (optionally on one metric), a sort, and the keyset cursor."""

    filter: str = RowFilter.ALL
    metric: str = ""
    sort: str = RowSort.NEWEST
    after: uuid.UUID | None = None
    page_size: int = PAGE_SIZE

    def validate(self, comparison: Comparison) -> None:
        """Raise ComparisonError (400) for values the page does not offer."""
        if self.error_class is not None:
            if not self.error_class or len(self.error_class) > 100:
                raise ComparisonError("filter=error:<class> takes an error class of 1–100 characters, as the "
                                      "failure analysis lists them (e.g. error:timeout).")
        elif self.filter not in dict(RowFilter.CHOICES):
            raise ComparisonError(f"Unknown filter '{self.filter[:60]}'; use one of: "
                                  f"{', '.join(k for k, _ in RowFilter.CHOICES if k)}, or error:<class>.")
        if self.sort not in dict(RowSort.CHOICES):
            raise ComparisonError(f"Unknown sort '{self.sort}'; use one of: "
                                  f"{', '.join(k for k, _ in RowSort.CHOICES)}.")
        if self.metric and comparison.evaluator(self.metric) is None:
            raise ComparisonError(f"Unknown metric '{self.metric}'; '{comparison.evaluation.name}' has: "
                                  f"{', '.join(e.name for e in comparison.evaluators)}.")
        if self.sort != RowSort.NEWEST and not comparison.evaluators:
            raise ComparisonError("This evaluation has no metrics to sort by.")
        needs_two = self.filter in (RowFilter.REGRESSED, RowFilter.IMPROVED, RowFilter.DIFFERS) or \
            self.sort != RowSort.NEWEST
        if needs_two and len(comparison.runs) < 2:
            raise ComparisonError("Filtering or sorting against the baseline needs at least two runs.")

    @property
    def error_class(self) -> str | None:
        """The class of `filter=error:<class>` (rows where a selected run failed that way), else None."""
        return self.filter[len(RowFilter.ERROR_PREFIX):] if self.filter.startswith(RowFilter.ERROR_PREFIX) else None

    def sort_metric(self, comparison: Comparison) -> Evaluator:
        return comparison.evaluator(self.metric) or comparison.evaluators[0]


@dataclass(slots=True)
class Score:
    """The winning feedback of one metric on one inference."""

    value: float
    source: str
    reason: str
    passes: bool | None
    vs_baseline: int | None = None  # 1 improved, -1 regressed, 0 same, None not comparable

    @property
    def human(self) -> bool:
        return self.source == Feedback.Source.HUMAN


@dataclass(slots=True)
class CellOutput:
    """What a comparison cell shows of an inference (the page builds thousands: no model instances)."""

    id_text: str
    run_id: uuid.UUID
    output: object
    error: str | None
    latency_ms: float | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.id_text)


@dataclass(slots=True)
class Cell:
    """One run's view of one datapoint."""

    run: SelectedRun
    state: str  # "out_of_window", "missing", "error" or "ok"
    inference: Inference | CellOutput | None = None
    scores: dict[str, Score] = field(default_factory=dict)

    OUT_OF_WINDOW = "out_of_window"
    MISSING = "missing"
    ERROR = "error"
    OK = "ok"


@dataclass
class Row:
    datapoint: Datapoint
    cells: list[Cell]
    delta: float | None = None  # the sort key when sorting by Δ


@dataclass
class ComparisonPage:
    comparison: Comparison
    query: RowQuery
    rows: list[Row]
    next_after: uuid.UUID | None  # the cursor of the next page; None on the last page


def _alias(i: int, metric_index: int | None = None) -> str:
    return f"r{i}" if metric_index is None else f"r{i}_m{metric_index}"


def _inference_of(run_id, ref="pk"):
    return Inference.objects.filter(run_id=run_id, datapoint_id=OuterRef(ref))


def _with_scores(qs, runs: list[SelectedRun], metrics: list[Evaluator]):
    """Annotate `r<i>_m<j>`: run i's winning value of metric j on the datapoint, when inside run i's
    window (WindowScore). LEFT JOINs on WindowScore's primary key, which PostgreSQL can hash or
    merge over whole windows, where a correlated subquery would search feedback row by row."""
    for j, evaluator in enumerate(metrics):
        for i, run in enumerate(runs):
            relation = f"ws{i}_m{j}"
            qs = qs.annotate(**{relation: FilteredRelation(
                "window_scores", condition=Q(window_scores__run_id=run.id, window_scores__metric=evaluator.name))})
            qs = qs.annotate(**{_alias(i, j): F(f"{relation}__value")})
    return qs


def _signed_change(evaluator: Evaluator, run_alias: str, base_alias: str):
    """value − baseline, negated when lower is better, so a positive number is always an improvement."""
    change = F(run_alias) - F(base_alias)
    return change if evaluator.optimize == Evaluator.Optimize.MAX else -change


def rows_queryset(comparison: Comparison, query: RowQuery):
    """The datapoints of the comparison as an ordered queryset, filtered, not yet paged.

    Annotations: `in_window_<i>` per run; with filters or Δ sort also the metric values
    `r<i>_m<j>` and the sort key `delta`.
    """
    evaluation = comparison.evaluation
    windows = [window_q(r.time) for r in comparison.runs]
    qs = Datapoint.objects.for_dataset(evaluation.dataset_id, evaluation.function_id).filter(reduce(or_, windows))
    qs = qs.annotate(**{f"in_window_{i}": ExpressionWrapper(w, output_field=BooleanField())
                        for i, w in enumerate(windows)})
    others = range(1, len(comparison.runs))

    filtering = query.filter in (RowFilter.REGRESSED, RowFilter.IMPROVED)
    if filtering or query.sort != RowSort.NEWEST:
        # Filters look at the chosen metric or all of them; the sort needs only its own metric.
        metrics = ([comparison.evaluator(query.metric)] if query.metric else list(comparison.evaluators)) \
            if filtering else []
        if query.sort != RowSort.NEWEST and query.sort_metric(comparison) not in metrics:
            metrics.append(query.sort_metric(comparison))
        qs = _with_scores(qs, comparison.runs, metrics)
        if filtering:
            lookup = "lt" if query.filter == RowFilter.REGRESSED else "gt"
            changed = []
            for j, evaluator in enumerate(metrics):
                for i in others:
                    key = f"c_{i}_{j}"
                    qs = qs.alias(**{key: _signed_change(evaluator, _alias(i, j), _alias(0, j))})
                    changed.append(Q(**{f"{key}__{lookup}": 0}))
            qs = qs.filter(reduce(or_, changed))
        if query.sort != RowSort.NEWEST:
            j = metrics.index(query.sort_metric(comparison))
            changes = [_signed_change(metrics[j], _alias(i, j), _alias(0, j)) for i in others]
            pick = Least if query.sort == RowSort.REGRESSED_FIRST else Greatest
            delta = changes[0] if len(changes) == 1 else pick(*changes)
            qs = qs.annotate(delta=ExpressionWrapper(delta, output_field=FloatField()))

    if query.filter == RowFilter.DIFFERS:
        qs = qs.annotate(**{f"out_{i}": Subquery(_inference_of(run.id).filter(error__isnull=True).values("output")[:1])
                            for i, run in enumerate(comparison.runs)})
        differs = [Q(**{f"out_{i}__isnull": False, "out_0__isnull": False}) & ~Q(**{f"out_{i}": F("out_0")})
                   for i in others]
        qs = qs.filter(reduce(or_, differs))
    elif query.error_class is not None:
        failed = [Exists(_inference_of(run.id).annotate(error_class=ERROR_CLASS).filter(error_class=query.error_class))
                  for run in comparison.runs]
        qs = qs.filter(reduce(or_, [Q(w) & Q(f) for w, f in zip(windows, failed, strict=True)]))
    elif query.filter == RowFilter.MISSING:
        qs = qs.annotate(**{f"ok_{i}": Exists(_inference_of(run.id).filter(error__isnull=True))
                            for i, run in enumerate(comparison.runs)})
        qs = qs.filter(reduce(or_, [Q(**{f"in_window_{i}": True, f"ok_{i}": False})
                                    for i in range(len(comparison.runs))]))

    if query.sort == RowSort.NEWEST:
        return qs.order_by("-id")
    direction = F("delta").asc(nulls_last=True) if query.sort == RowSort.REGRESSED_FIRST else \
        F("delta").desc(nulls_last=True)
    return qs.order_by(direction, "-id")


ERROR_CLASS = Func(F("error"), function="comparisons_error_class", output_field=TextField())


def failure_classes(comparison: Comparison) -> dict[str, dict[uuid.UUID, int]]:
    """Per error class (comparisons_error_class), how many of each run's inferences in its window failed
    that way; the classes most frequent overall first. One query."""
    in_windows = reduce(or_, [Q(run_id=run.id) & window_q(run.time, "datapoint__") for run in comparison.runs])
    rows = (Inference.objects.filter(in_windows, error__isnull=False).annotate(error_class=ERROR_CLASS)
            .values_list("error_class", "run_id").annotate(n=Count("id")).order_by())
    classes: dict[str, dict[uuid.UUID, int]] = defaultdict(dict)
    for error_class, run_id, count in rows:
        classes[error_class][run_id] = count
    return dict(sorted(classes.items(), key=lambda item: (-sum(item[1].values()), item[0])))


def rows_after(qs, query: RowQuery):
    """Keep the rows after the cursor datapoint (keyset: no OFFSET, so deep pages cost as page 1)."""
    if query.after is None:
        return qs
    if query.sort == RowSort.NEWEST:
        return qs.filter(id__lt=query.after)
    cursor = qs.filter(id=query.after).values_list("delta", flat=True).first()
    if cursor is None and not qs.filter(id=query.after).exists():
        raise ComparisonError(f"after={query.after} is not a row of this comparison with these filters.")
    if cursor is None:  # rows without a Δ come last, newest first
        return qs.filter(delta__isnull=True, id__lt=query.after)
    beyond = "gt" if query.sort == RowSort.REGRESSED_FIRST else "lt"
    return qs.filter(Q(**{f"delta__{beyond}": cursor}) | Q(delta=cursor, id__lt=query.after)
                     | Q(delta__isnull=True))


# The winning feedback of an inference, per metric: the greatest id wins (DESIGN.md). The one
# statement of that rule for reading scores: the page's cells, the datapoint page and the export use
# it (the database's kept tables use comparisons_rescore, which tests/test_cells.py checks against it).
WINNING_FEEDBACK_SQL = """
    SELECT DISTINCT ON (f.metric) f.metric, f.value, f.source, f.reason FROM comparisons_feedback f
    WHERE f.inference_id = {inference} ORDER BY f.metric, f.id DESC
"""

# A row's cells as JSON, computed in the rows query itself: one round trip a page. Per selected
# run's inference (unique index on (run, datapoint)): its fields and its winning feedback per metric
# (`feedback_latest_idx`, DISTINCT ON). PostgreSQL evaluates it only for the rows the LIMIT keeps.
CELLS_JSON_SQL = """(
    SELECT json_agg(json_build_array(i.run_id, i.id, i.output, i.error, i.latency_ms, i.input_tokens,
                                     i.output_tokens, i.cost, (
        SELECT json_agg(json_build_array(w.metric, w.value, w.source, w.reason)) FROM (""" + \
    WINNING_FEEDBACK_SQL.format(inference="i.id") + """) w
    )))::text
    FROM comparisons_inference i
    WHERE i.datapoint_id = comparisons_datapoint.id AND i.run_id = ANY(%s::uuid[])
)"""


def make_cell(run: SelectedRun, inside: bool, inference, scores: dict) -> Cell:
    """The cell of one run on one datapoint, the same on every page: outside the run's window it shows
    no scores (they do not count), in the window it is missing, an error or ok."""
    if not inside:
        return Cell(run, Cell.OUT_OF_WINDOW, inference)
    if inference is None:
        return Cell(run, Cell.MISSING)
    return Cell(run, Cell.ERROR if inference.error is not None else Cell.OK, inference, scores)


def comparison_page(comparison: Comparison, query: RowQuery = RowQuery()) -> ComparisonPage:
    """One page of rows with a cell per selected run.

    One SQL query (rows with their cells as JSON), two when continuing a Δ-sorted page (the
    cursor's Δ), whatever the page and run count.
    """
    query.validate(comparison)
    qs = rows_after(rows_queryset(comparison, query), query)
    run_ids = [r.id for r in comparison.runs]
    qs = qs.annotate(cells_json=RawSQL(CELLS_JSON_SQL, [run_ids], output_field=TextField()))
    datapoints = list(qs.defer("tags")[: query.page_size + 1])
    next_after = datapoints[query.page_size - 1].id if len(datapoints) > query.page_size else None
    datapoints = datapoints[: query.page_size]
    if not datapoints:
        return ComparisonPage(comparison, query, [], None)

    evaluators = {e.name: e for e in comparison.evaluators}
    runs_by_text = {str(run.id): run.id for run in comparison.runs}
    rows = []
    for datapoint in datapoints:
        found = {}
        for run_id, inference_id, output, error, latency, tokens_in, tokens_out, cost, feedback in \
                json.loads(datapoint.cells_json or "[]"):
            run_uuid = runs_by_text[run_id]
            scores = {}
            for metric, value, source, reason in feedback or ():
                evaluator = evaluators.get(metric)
                scores[metric] = Score(value, source, reason, evaluator.passes(value) if evaluator else None)
            found[run_uuid] = (CellOutput(inference_id, run_uuid, output, error, latency, tokens_in, tokens_out, cost),
                               scores)
        cells = [make_cell(run, getattr(datapoint, f"in_window_{i}"), *found.get(run.id, (None, {})))
                 for i, run in enumerate(comparison.runs)]
        _mark_vs_baseline(comparison, cells)
        rows.append(Row(datapoint, cells, getattr(datapoint, "delta", None)))
    return ComparisonPage(comparison, query, rows, next_after)


def dataset_version(dataset_id: int) -> tuple[int, str]:
    """The dataset's data version and its row's transaction id (xmin): both change in every transaction
    that writes the dataset's datapoints, inferences or feedback (comparisons_data_changed), and the
    xmin also after a restore or a migration that recreates the table. (0, "") before any write."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT version, xmin::text FROM comparisons_datasetversion WHERE dataset_id = %s",
                       [dataset_id])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, "")


def winning_scores(comparison: Comparison, inference_ids) -> dict[uuid.UUID, dict[str, Score]]:
    """The winning feedback per (inference, metric) for these inferences, in one query."""
    evaluators = {e.name: e for e in comparison.evaluators}
    scores: dict[uuid.UUID, dict[str, Score]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute("SELECT i.id, w.metric, w.value, w.source, w.reason FROM unnest(%s::uuid[]) AS i (id) "
                       f"CROSS JOIN LATERAL ({WINNING_FEEDBACK_SQL.format(inference='i.id')}) w",
                       [list(inference_ids)])
        winning = cursor.fetchall()
    for inference_id, metric, value, source, reason in winning:
        evaluator = evaluators.get(metric)
        scores[inference_id][metric] = Score(value, source, reason, evaluator.passes(value) if evaluator else None)
    return scores


def _mark_vs_baseline(comparison: Comparison, cells: list[Cell]) -> None:
    base = cells[0].scores
    for cell in cells[1:]:
        for name, score in cell.scores.items():
            evaluator = comparison.evaluator(name)
            if evaluator is not None and name in base:
                score.vs_baseline = evaluator.better(score.value, base[name].value)


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass
class Coverage:
    datapoints: int  # in the run's window
    inferences: int
    errors: int
    pinned: int  # inferences whose variant was pinned by the caller

    @property
    def missing(self) -> int:
        return max(self.datapoints - self.inferences, 0)


@dataclass
class DeltaStat:
    """The paired change of a run against the baseline on datapoints scored in both."""

    n: int
    mean: float
    ci: Interval | None
    improved: int
    regressed: int
    unchanged: int

    outcome: str = "same"  # "better" or "worse" by the metric's direction, "same" for no change

    @property
    def significant(self) -> bool:
        return self.ci is not None and self.ci.excludes_zero()


@dataclass
class MetricStat:
    run: SelectedRun
    n: int
    mean: float | None
    ci: Interval | None
    delta: DeltaStat | None = None
    overrides: int = 0  # how many of the n values are human corrections


@dataclass
class MetricSummary:
    evaluator: Evaluator
    per_run: list[MetricStat]


@dataclass
class ComparisonStats:
    comparison: Comparison
    coverage: dict[uuid.UUID, Coverage]
    metrics: list[MetricSummary]


def comparison_stats(comparison: Comparison) -> ComparisonStats:
    """Per (run, metric) statistics over each run's whole window, coverage, and Δ vs the baseline.

    Four queries whatever the number of runs and metrics: window sizes, then rows kept by triggers:
    inference counts (RunCoverage), per-run running sums (RunMetricSummary) and the paired Δ against
    the baseline (PairedSummary, filled on first use).
    """
    evaluation = comparison.evaluation
    window_counts = Datapoint.objects.for_dataset(evaluation.dataset_id, evaluation.function_id).aggregate(
        **{f"w{i}": Count("id", filter=window_q(r.time)) for i, r in enumerate(comparison.runs)}
    )
    counts = {c.run_id: c for c in RunCoverage.objects.filter(run_id__in=[r.id for r in comparison.runs])}
    coverage = {}
    for i, run in enumerate(comparison.runs):
        kept = counts.get(run.id, RunCoverage())
        coverage[run.id] = Coverage(window_counts[f"w{i}"], kept.inferences, kept.errors, kept.pinned)

    # Per-run figures come from the trigger-maintained running sums: one row per (run, metric).
    per_run = {
        (summary.run_id, summary.metric): {"n": summary.n, "mean": summary.mean, "sd": summary.stddev,
                                           "overrides": summary.overrides}
        for summary in RunMetricSummary.objects.filter(run_id__in=[r.id for r in comparison.runs])
    }
    deltas = paired_summaries(comparison)

    metrics = []
    for evaluator in comparison.evaluators:
        stats = []
        for run in comparison.runs:
            row = per_run.get((run.id, evaluator.name))
            n = row["n"] if row else 0
            mean = row["mean"] if row else None
            stat = MetricStat(run, n, mean, metric_interval(evaluator.is_boolean, mean, row and row["sd"], n),
                              overrides=row["overrides"] if row else 0)
            pair = deltas.get((run.id, evaluator.name))
            if pair is not None:
                stat.delta = _delta_stat(evaluator, pair)
            stats.append(stat)
        metrics.append(MetricSummary(evaluator, stats))
    return ComparisonStats(comparison, coverage, metrics)


FILL_PAIRS_SQL = """
INSERT INTO comparisons_pairedsummary (baseline_id, run_id, metric, n, total, total_sq, higher, lower, same)
SELECT %(baseline)s, wanted_run.run_id, wanted.metric, coalesce(a.n, 0), coalesce(a.total, 0),
       coalesce(a.total_sq, 0), coalesce(a.higher, 0), coalesce(a.lower, 0), coalesce(a.same, 0)
FROM unnest(%(runs)s::uuid[]) AS wanted_run (run_id)
CROSS JOIN unnest(%(metrics)s::text[]) AS wanted (metric)
LEFT JOIN (
    SELECT s.run_id, s.metric, count(*) AS n, sum(d.diff) AS total, sum(d.diff * d.diff) AS total_sq,
           count(*) FILTER (WHERE s.value > b.value) AS higher, count(*) FILTER (WHERE s.value < b.value) AS lower,
           count(*) FILTER (WHERE s.value = b.value) AS same
    FROM comparisons_windowscore s
    JOIN comparisons_windowscore b
        ON b.run_id = %(baseline)s AND b.metric = s.metric AND b.datapoint_id = s.datapoint_id
    CROSS JOIN LATERAL (SELECT comparisons_exact(s.value) - comparisons_exact(b.value) AS diff) d
    WHERE s.run_id = ANY(%(runs)s::uuid[]) AND s.metric = ANY(%(metrics)s::text[])
    GROUP BY s.run_id, s.metric
) a ON a.run_id = wanted_run.run_id AND a.metric = wanted.metric
ON CONFLICT (baseline_id, run_id, metric) DO NOTHING
"""


def paired_summaries(comparison: Comparison) -> dict[tuple[uuid.UUID, str], PairedSummary]:
    """The paired Δ sums of each (run, metric) against the baseline, over datapoints scored inside
    both runs' windows (PairedSummary).

    A pair asked for the first time is filled from WindowScore in one statement (a join over two
    whole windows, the slow part) and then kept exact by the feedback triggers, so later requests
    read a row per (run, metric). The fill holds the dataset's kept-table lock, as every trigger that
    adjusts pairs does: a score written meanwhile is either in the fill or adjusts the filled row.
    """
    if len(comparison.runs) < 2:
        return {}
    baseline = comparison.baseline.id
    others = [r.id for r in comparison.runs[1:]]
    metrics = [e.name for e in comparison.evaluators]

    def read():
        return {(p.run_id, p.metric): p
                for p in PairedSummary.objects.filter(baseline_id=baseline, run_id__in=others, metric__in=metrics)}

    pairs = read()
    missing = sorted({run_id for run_id in others for metric in metrics if (run_id, metric) not in pairs},
                     key=str)
    if not missing:
        return pairs
    with transaction.atomic(), connection.cursor() as cursor:
        lock_kept_tables(comparison.evaluation.dataset_id)
        cursor.execute(FILL_PAIRS_SQL, {"baseline": baseline, "runs": missing, "metrics": metrics})
    return read()


def _delta_stat(evaluator: Evaluator, pair: PairedSummary) -> DeltaStat | None:
    if not pair.n:
        return None
    maximise = evaluator.optimize == Evaluator.Optimize.MAX
    mean = pair.mean
    return DeltaStat(
        n=pair.n, mean=mean, ci=wald_interval(mean, pair.stddev, pair.n),
        improved=pair.higher if maximise else pair.lower,
        regressed=pair.lower if maximise else pair.higher,
        unchanged=pair.same,
        outcome="same" if not mean else "better" if (mean > 0) == maximise else "worse",
    )


# ---------------------------------------------------------------------------------------------
# Runs: search and headline scores


@dataclass
class RunOption:
    run: EvaluationRun
    colour: int
    headline: tuple[Evaluator, float | None] | None  # the evaluation's first metric and this run's mean
    pinned: bool
    selected: bool


def search_runs(evaluation: Evaluation, q: str = "", *, selected: list[uuid.UUID] = (), limit: int = 10):
    """Runs of `evaluation` for the run selector: most recent first, or matching `q`.

    `q` matches the variant name, a tag key or value, an id prefix or the short id (`ids.short_id`,
    an id's tail). A full UUID finds that run
    first; when it belongs to another evaluation, that run is returned as `foreign` so the caller can say so.
    Returns (options, foreign_run_or_None). Four small queries (runs, pin flags, headlines from the
    running sums).
    """
    q = q.strip()
    runs = EvaluationRun.objects.for_evaluation(evaluation).recent()
    foreign = None
    exact = parse_uuid(q) if len(q) >= 32 else None
    if exact is not None:
        found = EvaluationRun.objects.select_related("evaluation").filter(id=exact).first()
        if found is not None and found.evaluation_id != evaluation.id:
            foreign = found
        runs = runs.filter(id=exact)
    elif q:
        prefix = q.lower().replace("-", "")
        matches = Q(variant_name__icontains=q) | Q(tags__icontains=q)
        if all(c in "0123456789abcdef" for c in prefix):
            matches |= Q(id__startswith=_uuid_prefix(prefix))
            if len(prefix) <= 12:  # the short id shown (ids.short_id) is a tail of the id's last group
                matches |= Q(id__endswith=prefix)
        runs = runs.filter(matches)
    runs = list(with_ordinal(runs)[:limit])
    colours = assign_colours({r.id: r.ordinal for r in runs})
    first_metric = evaluation.evaluators.order_by("id").first()
    headline = {}
    pinned = {}
    if runs:
        pinned = run_pinned_flags([r.id for r in runs])
        if first_metric is not None:
            for summary in RunMetricSummary.objects.filter(run_id__in=[r.id for r in runs], metric=first_metric.name):
                headline[summary.run_id] = summary.mean
    options = [
        RunOption(run, colours[run.id], (first_metric, headline.get(run.id)) if first_metric else None,
                  pinned.get(run.id, False), run.id in selected)
        for run in runs
    ]
    return options, foreign


def _uuid_prefix(hex_prefix: str) -> str:
    """A hex prefix written the way PostgreSQL prints a uuid (with dashes), for `id__startswith`."""
    dashed = ""
    for position, char in enumerate(hex_prefix[:32]):
        if position in (8, 12, 16, 20):
            dashed += "-"
        dashed += char
    return dashed


def run_pinned_flags(run_ids) -> dict[uuid.UUID, bool]:
    """Whether each run had the variant pinned by the caller (an inference in its window pinned)."""
    pinned = set(RunCoverage.objects.filter(run_id__in=list(run_ids), pinned__gt=0).values_list("run_id", flat=True))
    return {run_id: run_id in pinned for run_id in run_ids}



# ---------------------------------------------------------------------------------------------
# One datapoint, one run


def datapoint_cells(comparison: Comparison, datapoint: Datapoint) -> list[Cell]:
    """One datapoint across the selected runs, a cell per run (two queries)."""
    inferences = {inf.run_id: inf for inf in Inference.objects.filter(
        run_id__in=[r.id for r in comparison.runs], datapoint_id=datapoint.id)}
    scores = winning_scores(comparison, [inf.id for inf in inferences.values()])
    cells = []
    for run in comparison.runs:
        inference = inferences.get(run.id)
        inside = in_window(datapoint.id, datapoint.staled_at, run.time)
        cells.append(make_cell(run, inside, inference, scores.get(inference.id, {}) if inference else {}))
    _mark_vs_baseline(comparison, cells)
    return cells


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass
class RunSummary:
    inferences: int
    errors: int
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    input_tokens: int
    output_tokens: int
    cost: float | None  # the task's (inferences' cost)
    error_samples: list  # (datapoint id, error) of up to 20 failed inferences
    judge_input_tokens: int | None = None  # LLM judges', from their feedback's tags
    judge_output_tokens: int | None = None
    judge_cost: float | None = None


def run_summary(run: EvaluationRun) -> RunSummary:
    """Operational figures of one run: latency percentiles, tokens, cost and errors (three queries).

    Task tokens and cost come from the inferences; LLM judges' from their feedback's tags
    (`judge_input_tokens`, `judge_output_tokens`, `judge_cost`, as the runner records them). Every
    judge call counts, also those a later feedback superseded: they were paid for.
    """
    totals = Inference.objects.filter(run=run).aggregate(
        n=Count("id"), errors=Count("id", filter=Q(error__isnull=False)),
        p50=PercentileCont("latency_ms", 0.5), p95=PercentileCont("latency_ms", 0.95),
        p99=PercentileCont("latency_ms", 0.99), input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"), cost=Sum("cost"),
    )
    # Tags are editable in the admin: only numbers are summed, so a stray value never breaks the page.
    integer, number = r"^[0-9]{1,15}$", r"^[0-9]{1,15}(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?$"
    judge = Feedback.objects.filter(inference__run=run, source=Feedback.Source.EVALUATOR).aggregate(
        input_tokens=Sum(Cast(KT("tags__judge_input_tokens"), BigIntegerField()),
                         filter=Q(tags__judge_input_tokens__regex=integer)),
        output_tokens=Sum(Cast(KT("tags__judge_output_tokens"), BigIntegerField()),
                          filter=Q(tags__judge_output_tokens__regex=integer)),
        cost=Sum(Cast(KT("tags__judge_cost"), FloatField()), filter=Q(tags__judge_cost__regex=number)),
    )
    samples = list(Inference.objects.filter(run=run, error__isnull=False).order_by("id")
                   .values_list("datapoint_id", "error")[:20])
    return RunSummary(totals["n"], totals["errors"], totals["p50"], totals["p95"], totals["p99"],
                      totals["input_tokens"] or 0, totals["output_tokens"] or 0,
                      float(totals["cost"]) if totals["cost"] is not None else None, samples,
                      judge["input_tokens"], judge["output_tokens"], judge["cost"])


THROUGHPUT_WINDOW_S = 10  # a running run's throughput: inferences recorded in the last 10 s


@dataclass
class RunProgress:
    """Where a run stands, for its live progress fragment and status chip."""

    done: int  # datapoints recorded (failed ones included)
    errors: int
    total: int  # datapoints the run will run at most (its window, or its max_datapoints)
    elapsed_s: float  # since a process took the run (running_since; the first output for older runs), 0 before
    throughput: float | None  # datapoints a second
    eta_s: float | None
    queue_position: int | None  # queued runs: 1 is the next a free worker takes
    stopping: bool  # Stop was pressed; the worker has not ended the run yet

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.done / self.total)) if self.total else 0


def run_progress(run: EvaluationRun) -> RunProgress:
    """The run's progress: counts from its inferences, times from when a process took it, the queue position.

    Elapsed runs from `running_since` (when a worker took the run, or the last resume did) to now, or to
    the run's end once it has ended; a queued run has none yet. Running means are the run's outcome
    (`run_outcome`), read from the same kept sums as the comparison page.
    """
    from comparisons.ids import uuid7_min, uuid7_time
    from comparisons.jobs import queue_position

    now = timezone.now()
    queued = run.status == EvaluationRun.Status.QUEUED
    since = None if queued else run.running_since
    inferences = Inference.objects.filter(run=run)
    counts = inferences.aggregate(
        n=Count("id"), errors=Count("id", filter=Q(error__isnull=False)),
        recent=Count("id", filter=Q(id__gte=uuid7_min(now - timedelta(seconds=THROUGHPUT_WINDOW_S)))),
        # recorded since the process took the run (a resumed run's earlier outputs are not this leg's)
        this_leg=Count("id", filter=Q(id__gte=uuid7_min(since or 0))))
    ids = inferences.values_list("id", flat=True)  # no min()/max() for uuid in PostgreSQL
    first, last = (ids.order_by("id").first(), ids.order_by("-id").first()) if counts["n"] else (None, None)
    if since is None and first is not None and not queued:  # runs recorded before running_since existed
        since = uuid7_time(first)
    total = run.window_datapoints().count()
    limit = run.config_object.get("max_datapoints")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        total = min(total, limit)
    active = run.status == EvaluationRun.Status.RUNNING and not run.interrupted
    elapsed = throughput = eta = None
    if since is not None:
        end = now if active else run.finished_at or (uuid7_time(last) if last is not None else since)
        elapsed = max(0.0, (end - since).total_seconds())
        if active:
            throughput = counts["recent"] / min(THROUGHPUT_WINDOW_S, max(elapsed, 1.0))
        elif elapsed > 0:
            throughput = counts["this_leg"] / elapsed
        if active and throughput:
            eta = max(0, total - counts["n"]) / throughput
    return RunProgress(
        done=counts["n"], errors=counts["errors"], total=total, elapsed_s=elapsed or 0.0, throughput=throughput,
        eta_s=eta, queue_position=queue_position(run) if queued else None,
        stopping=run.stop_requested_at is not None and not run.ended)


@dataclass
class MetricOutcome:
    """One metric of a run's outcome: its mean, whether it meets its cutoff, its change since the previous run."""

    evaluator: Evaluator
    stat: MetricStat  # the run's n, mean and 95% CI over its whole window
    cutoff_met: bool | None  # None: the metric has no cutoff
    delta: DeltaStat | None  # paired Δ vs the previous run (None: no previous run, or nothing scored in both)


@dataclass
class RunOutcome:
    """A run's summary: each metric's mean with its CI, cutoffs met, and Δ vs the previous run."""

    run: SelectedRun
    previous: SelectedRun | None
    coverage: Coverage
    metrics: list[MetricOutcome]

    @property
    def scored(self) -> bool:
        return any(m.stat.n for m in self.metrics)

    @property
    def cutoffs(self) -> int:
        return sum(m.cutoff_met is not None for m in self.metrics)

    @property
    def cutoffs_met(self) -> int:
        return sum(m.cutoff_met is True for m in self.metrics)

    @property
    def compare_ids(self) -> str | None:
        """`run_ids` of the comparison with the previous run (the previous run is the baseline)."""
        return f"{self.previous.id},{self.run.id}" if self.previous else None


def run_outcome(run: EvaluationRun) -> RunOutcome:
    """The run's summary, from the comparison of [previous run, run]: the same statistics, CIs and paired Δ
    as the comparison page (`comparison_stats`), and each cutoff judged by `Evaluator.cutoff_met`."""
    previous = run.previous()
    comparison = resolve_comparison(run.evaluation, [previous.id, run.id] if previous else [run.id])
    stats = comparison_stats(comparison)
    metrics = []
    for summary in stats.metrics:
        stat = summary.per_run[-1]
        metrics.append(MetricOutcome(summary.evaluator, stat, summary.evaluator.cutoff_met(stat.mean), stat.delta))
    this = comparison.runs[-1]
    return RunOutcome(this, comparison.runs[0] if previous else None, stats.coverage[run.id], metrics)


# ---------------------------------------------------------------------------------------------
# Configuration: are these runs comparable?

CONFIG_TEXT_LIMIT = 2_000  # characters of one value shown; the rest is said, not shown
CONFIG_ROWS_LIMIT = 200  # rows of one section (a config with thousands of keys stays a page)
CONFIG_FIRST_KEYS = ("model", "prompt", "task", "task_name", "base_url", "temperature")
EVALUATOR_FIELDS = (("kind", "kind"), ("value_type", "value type"), ("optimize", "optimize"),
                    ("cutoff", "cutoff"), ("min_value", "smallest value"), ("max_value", "largest value"))


@dataclass(frozen=True)
class ConfigValue:
    """One run's value of one configuration row."""

    text: str | None  # None: the run has no such key / evaluator
    state: str = ""  # "" (a value), "absent", or "not-recorded" (a run from before evaluator snapshots)
    more: int = 0  # characters left out of `text`
    differs: bool = False  # differs from the baseline's value (both known)

    @property
    def long(self) -> bool:
        return self.text is not None and (len(self.text) > 60 or "\n" in self.text)


@dataclass(frozen=True)
class ConfigRow:
    label: str
    values: list[ConfigValue]  # one per selected run, in the comparison's order
    differs: bool  # the known values are not all equal
    group: str = ""  # the evaluator a row of the evaluators' section is about

    @property
    def name(self) -> str:
        return f"{self.group}: {self.label}" if self.group else self.label


@dataclass(frozen=True)
class ConfigSection:
    title: str
    rows: list[ConfigRow]
    hidden_rows: int = 0  # rows beyond CONFIG_ROWS_LIMIT

    @property
    def differs(self) -> bool:
        return any(row.differs for row in self.rows)


@dataclass(frozen=True)
class RunConfigurations:
    """The selected runs' configurations side by side, and whether their scores are comparable."""

    sections: list[ConfigSection]
    not_recorded: list[SelectedRun]  # runs from before evaluator snapshots were recorded
    evaluator_differences: list[str]  # "answer_quality: judge prompt", one per differing evaluator

    @property
    def differences(self) -> int:
        return sum(1 for section in self.sections for row in section.rows if row.differs)


_ABSENT = object()


def _config_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return json.dumps(value, ensure_ascii=False)


def _config_row(label: str, raw: list, unknown=frozenset(), ignore=frozenset()) -> ConfigRow:
    """A row from each run's raw value (`_ABSENT` when it has none). Runs in `unknown` recorded nothing;
    runs in `ignore` are shown but left out of whether the row differs."""
    known = [value for i, value in enumerate(raw) if i not in unknown and i not in ignore]
    differs = any(value != known[0] or type(value) is not type(known[0]) for value in known[1:])
    base = raw[0]
    values = []
    for i, value in enumerate(raw):
        if i in unknown:
            values.append(ConfigValue(None, "not-recorded"))
            continue
        changed = i > 0 and 0 not in unknown and (value != base or type(value) is not type(base))
        if value is _ABSENT:
            values.append(ConfigValue(None, "absent", differs=changed))
            continue
        text = _config_text(value)
        values.append(ConfigValue(text[:CONFIG_TEXT_LIMIT], more=max(0, len(text) - CONFIG_TEXT_LIMIT),
                                  differs=changed))
    return ConfigRow(label, values, differs)


def _ordered_keys(objects: list[dict], first=()) -> list[str]:
    keys = dict.fromkeys(key for key in first if any(key in o for o in objects))
    for o in objects:
        keys.update(dict.fromkeys(o))
    return list(keys)


def _section(title: str, rows: list[ConfigRow]) -> ConfigSection:
    if len(rows) <= CONFIG_ROWS_LIMIT:
        return ConfigSection(title, rows)
    # Keep the rows that differ first: they are what the panel is for.
    kept = sorted(rows, key=lambda row: not row.differs)[:CONFIG_ROWS_LIMIT]
    return ConfigSection(title, kept, len(rows) - len(kept))


def _evaluator_label(kind, key: str) -> str:
    return "judge prompt" if kind == "llm_judge" and key == "config.prompt" else key


def run_configurations(comparison: Comparison) -> RunConfigurations:
    """Each selected run's configuration side by side: its config (model, prompt, parameters), tags,
    and the evaluators recorded when it was created (`EvaluationRun.evaluator_snapshot`).

    `evaluator_differences` names each evaluator whose kind, value type, optimize, cutoff, range or
    config was not the same for every run that recorded one: their scores are then not comparable.
    No queries: everything comes from the runs the comparison holds (whose columns are in the rows
    cache's key, so the cached page changes with them)."""
    runs = comparison.runs
    configs = [run.run.config if isinstance(run.run.config, dict) else {"(config)": run.run.config} for run in runs]
    tags = [run.run.tags if isinstance(run.run.tags, dict) else {"(tags)": run.run.tags} for run in runs]
    sections = [
        _section("Config", [_config_row(key, [c.get(key, _ABSENT) for c in configs])
                            for key in _ordered_keys(configs, CONFIG_FIRST_KEYS)]),
        _section("Tags", [_config_row(key, [t.get(key, _ABSENT) for t in tags]) for key in _ordered_keys(tags)]),
    ]
    snapshots = []
    unknown = set()
    for i, run in enumerate(runs):
        snapshot = run.run.evaluator_snapshot
        if not isinstance(snapshot, list):
            unknown.add(i)
            snapshot = []
        snapshots.append({e["name"]: e for e in snapshot if isinstance(e, dict) and isinstance(e.get("name"), str)})
    names = _ordered_keys(snapshots, [e.name for e in comparison.evaluators])
    evaluator_rows, differences = [], []
    for name in names:
        present = [s.get(name) for s in snapshots]
        missing = {i for i, e in enumerate(present) if e is None and i not in unknown}
        entries = []
        for e in present:
            entry = {}
            if e is not None:
                entry = {key: e.get(key, _ABSENT) for key, _ in EVALUATOR_FIELDS}
                config = e.get("config", _ABSENT)
                if isinstance(config, dict):
                    entry.update({f"config.{key}": value for key, value in config.items()})
                elif config is not _ABSENT:
                    entry["config"] = config
            entries.append(entry)
        kind = next((e.get("kind") for e in present if e is not None), None)
        changed = []
        if missing:
            evaluator_rows.append(replace(_config_row("evaluator", [
                _ABSENT if i in missing else "yes" for i in range(len(runs))], unknown), group=name))
            changed.append("not an evaluator of " + ", ".join(runs[i].run.short_id for i in sorted(missing)))
        labels = dict(EVALUATOR_FIELDS)
        for key in _ordered_keys(entries, list(labels)):
            row = _config_row(_evaluator_label(kind, labels.get(key, key)),
                              [entry.get(key, _ABSENT) for entry in entries], unknown, missing)
            evaluator_rows.append(replace(row, group=name))
            if row.differs:
                changed.append(row.label)
        if changed:
            differences.append(f"{name}: {', '.join(changed)}")
    sections.append(_section("Evaluators at run time", evaluator_rows))
    return RunConfigurations(sections, [run for i, run in enumerate(runs) if i in unknown], differences)
