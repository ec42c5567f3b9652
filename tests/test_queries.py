import math
import uuid
from datetime import timedelta

import pytest

from comparisons.ids import uuid7
from comparisons.models import Feedback, PairedSummary
from comparisons.queries import (
    MAX_RUNS,
    Cell,
    ComparisonError,
    RowFilter,
    RowQuery,
    RowSort,
    assign_colours,
    comparison_page,
    comparison_stats,
    datapoint_cells,
    parse_run_ids,
    resolve_comparison,
    search_runs,
)
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    at,
)

pytestmark = pytest.mark.django_db


def run_at(evaluation, minutes, **kwargs):
    return RunFactory(evaluation=evaluation, id=uuid7(at(minutes)), **kwargs)


def infer(run, datapoint, output="out", **scores):
    inference = InferenceFactory(run=run, datapoint=datapoint, output=output)
    for metric, value in scores.items():
        FeedbackFactory(inference=inference, metric=metric, value=value)
    return inference


def cells_by_datapoint(page):
    return {row.datapoint.id: [cell.state for cell in row.cells] for row in page.rows}


# --- validation -------------------------------------------------------------------------------


def test_malformed_run_ids_are_named():
    with pytest.raises(ComparisonError) as error:
        parse_run_ids(f"{uuid.uuid4()},not-a-uuid,xyz")
    assert error.value.status == 400
    assert "'not-a-uuid'" in error.value.message and "'xyz'" in error.value.message


def test_repeated_and_too_many_run_ids_are_refused():
    run_id = str(uuid.uuid4())
    with pytest.raises(ComparisonError, match="more than once"):
        parse_run_ids(f"{run_id},{run_id}")
    with pytest.raises(ComparisonError, match=f"At most {MAX_RUNS} runs"):
        parse_run_ids(",".join(str(uuid.uuid4()) for _ in range(MAX_RUNS + 1)))


def test_unknown_runs_are_404_and_named(evaluation):
    known = run_at(evaluation, 1)
    missing = uuid.uuid4()
    with pytest.raises(ComparisonError) as error:
        resolve_comparison(evaluation, [known.id, missing])
    assert error.value.status == 404 and str(missing) in error.value.message


def test_runs_of_another_evaluation_are_refused_by_name(evaluation):
    mine = run_at(evaluation, 1)
    other = RunFactory(evaluation=EvaluationFactory(name="other-eval"))
    with pytest.raises(ComparisonError) as error:
        resolve_comparison(evaluation, [mine.id, other.id])
    assert error.value.status == 400
    assert f"{other.id} belongs to 'other-eval'" in error.value.message


def test_unknown_evaluation_is_404():
    with pytest.raises(ComparisonError) as error:
        resolve_comparison("nope", [uuid.uuid4()])
    assert error.value.status == 404 and "'nope'" in error.value.message


def test_bad_filter_sort_and_metric_are_refused(evaluation):
    comparison = resolve_comparison(evaluation, [run_at(evaluation, 1).id, run_at(evaluation, 2).id])
    for query, message in [(RowQuery(filter="worse"), "Unknown filter"), (RowQuery(sort="oldest"), "Unknown sort"),
                           (RowQuery(metric="tone"), "Unknown metric 'tone'")]:
        with pytest.raises(ComparisonError, match=message):
            comparison_page(comparison, query)
    single = resolve_comparison(evaluation, [run_at(evaluation, 3).id])
    with pytest.raises(ComparisonError, match="at least two runs"):
        comparison_page(single, RowQuery(filter=RowFilter.REGRESSED))


def test_colours_follow_the_run_order_and_never_depend_on_the_selection(evaluation):
    runs = [run_at(evaluation, m) for m in range(12)]
    everything = resolve_comparison(evaluation, [r.id for r in runs[:10]])
    colours = {r.id: r.colour for r in everything.runs}
    assert [colours[r.id] for r in runs[:10]] == list(range(10))
    reordered = resolve_comparison(evaluation, [runs[5].id, runs[2].id])
    assert [r.colour for r in reordered.runs] == [5, 2]  # the same colours in any selection or order
    later = resolve_comparison(evaluation, [runs[0].id, runs[10].id, runs[11].id])
    assert [r.colour for r in later.runs] == [0, 1, 2]  # run 10 would repeat run 0's colour: next free one
    assert assign_colours({runs[0].id: 0, runs[1].id: 10}) == {runs[0].id: 0, runs[1].id: 1}


# --- the window at its edges -------------------------------------------------------------------


def test_window_edges(evaluation):
    run = run_at(evaluation, 10)
    created_at_run_time = DatapointFactory(evaluation=evaluation, created=at(10))
    created_after = DatapointFactory(evaluation=evaluation, created=at(10) + timedelta(milliseconds=1))
    staled_at_run_time = DatapointFactory(evaluation=evaluation, created=at(1))
    staled_at_run_time.retire(when=at(10))
    staled_before = DatapointFactory(evaluation=evaluation, created=at(2))
    staled_before.retire(when=at(9))
    staled_after = DatapointFactory(evaluation=evaluation, created=at(3))
    staled_after.retire(when=at(10) + timedelta(milliseconds=1))
    other_function = DatapointFactory(dataset=evaluation.dataset, created=at(4))

    page = comparison_page(resolve_comparison(evaluation, [run.id]))
    shown = {row.datapoint.id for row in page.rows}
    assert shown == {created_at_run_time.id, staled_after.id}
    assert created_after.id not in shown and staled_at_run_time.id not in shown
    assert staled_before.id not in shown and other_function.id not in shown


def test_edited_between_runs_shows_each_version_to_its_run(evaluation):
    first, second = run_at(evaluation, 10), run_at(evaluation, 30)
    old = DatapointFactory(evaluation=evaluation, created=at(0))
    infer(first, old, correct=1)
    new = old.revise(reference_output="fixed", when=at(20))
    infer(second, new, correct=0)
    unchanged = DatapointFactory(evaluation=evaluation, created=at(1))

    page = comparison_page(resolve_comparison(evaluation, [first.id, second.id]))
    assert cells_by_datapoint(page) == {
        new.id: [Cell.OUT_OF_WINDOW, Cell.OK],
        old.id: [Cell.OK, Cell.OUT_OF_WINDOW],
        unchanged.id: [Cell.MISSING, Cell.MISSING],
    }
    assert [row.datapoint.id for row in page.rows] == [new.id, unchanged.id, old.id]  # newest first


def test_error_cells_and_latest_feedback_wins_with_human_override(evaluation):
    run = run_at(evaluation, 10)
    ok, failed = (DatapointFactory(evaluation=evaluation, created=at(m)) for m in (1, 2))
    inference = infer(run, ok, correct=1, similarity=0.4)
    FeedbackFactory(inference=inference, metric="similarity", value=0.6)  # a later evaluator score
    Feedback.objects.record(inference, "correct", 0, source="human", reason="wrong plan")
    InferenceFactory(run=run, datapoint=failed, output=None, error="Timeout")

    page = comparison_page(resolve_comparison(evaluation, [run.id]))
    cells = {row.datapoint.id: row.cells[0] for row in page.rows}
    assert cells[failed.id].state == Cell.ERROR and cells[failed.id].inference.error == "Timeout"
    scores = cells[ok.id].scores
    assert scores["similarity"].value == 0.6 and not scores["similarity"].human
    assert scores["correct"].value == 0 and scores["correct"].human and scores["correct"].reason == "wrong plan"
    assert scores["correct"].passes is False


def test_vs_baseline_marks_follow_optimize(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="cost", value_type="float", optimize="min")
    base, new = run_at(evaluation, 10), run_at(evaluation, 20)
    datapoint = DatapointFactory(evaluation=evaluation, created=at(0))
    infer(base, datapoint, correct=1, similarity=0.5, cost=2.0)
    infer(new, datapoint, correct=0, similarity=0.5, cost=1.0)
    page = comparison_page(resolve_comparison(evaluation, [base.id, new.id]))
    scores = page.rows[0].cells[1].scores
    assert scores["correct"].vs_baseline == -1
    assert scores["similarity"].vs_baseline == 0
    assert scores["cost"].vs_baseline == 1  # lower is better
    assert page.rows[0].cells[0].scores["correct"].vs_baseline is None


def test_datapoint_cells_match_the_page(evaluation):
    first, second = run_at(evaluation, 10), run_at(evaluation, 30)
    old = DatapointFactory(evaluation=evaluation, created=at(0))
    infer(first, old, correct=1)
    new = old.revise(name="v2", when=at(20))
    comparison = resolve_comparison(evaluation, [first.id, second.id])
    assert [c.state for c in datapoint_cells(comparison, old)] == [Cell.OK, Cell.OUT_OF_WINDOW]
    assert [c.state for c in datapoint_cells(comparison, new)] == [Cell.OUT_OF_WINDOW, Cell.MISSING]


# --- pages ---------------------------------------------------------------------------------------


def make_rows(evaluation, runs, count):
    datapoints = [DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i)) for i in range(count)]
    for index, datapoint in enumerate(datapoints):
        for offset, run in enumerate(runs):
            infer(run, datapoint, correct=float((index + offset) % 2), similarity=((index * 7 + offset * 3) % 10) / 10)
    return datapoints


def all_pages(comparison, query):
    seen, after = [], None
    for _ in range(100):
        page = comparison_page(comparison, RowQuery(**{**query.__dict__, "after": after}))
        seen.extend(page.rows)
        after = page.next_after
        if after is None:
            return seen
    raise AssertionError("paging did not end")


def test_keyset_pages_cover_every_row_once_newest_first(evaluation):
    run = run_at(evaluation, 100)
    datapoints = make_rows(evaluation, [run], 230)
    comparison = resolve_comparison(evaluation, [run.id])
    first = comparison_page(comparison)
    assert len(first.rows) == 100 and first.next_after == first.rows[-1].datapoint.id
    rows = all_pages(comparison, RowQuery())
    assert [r.datapoint.id for r in rows] == [d.id for d in reversed(datapoints)]


def test_a_page_costs_one_query_whatever_its_size(evaluation, django_assert_num_queries):
    runs = [run_at(evaluation, 100 + i) for i in range(3)]
    make_rows(evaluation, runs, 120)
    big = resolve_comparison(evaluation, [r.id for r in runs])
    with django_assert_num_queries(1):
        page = comparison_page(big)
    assert len(page.rows) == 100 and all(len(row.cells) == 3 for row in page.rows)
    assert all(cell.state == Cell.OK and set(cell.scores) == {"correct", "similarity"}
               for row in page.rows for cell in row.cells)
    small = resolve_comparison(evaluation, [runs[0].id])
    with django_assert_num_queries(1):
        comparison_page(small, RowQuery(page_size=5, after=page.rows[10].datapoint.id))
    with django_assert_num_queries(1):
        comparison_page(big, RowQuery(filter=RowFilter.REGRESSED))
    with django_assert_num_queries(2):  # the cursor's Δ, then the page
        comparison_page(big, RowQuery(sort=RowSort.REGRESSED_FIRST, after=page.rows[3].datapoint.id))


def test_delta_sorted_pages_are_ordered_and_complete(evaluation):
    base, new = run_at(evaluation, 100), run_at(evaluation, 200)
    datapoints = make_rows(evaluation, [base, new], 60)
    unscored = DatapointFactory(evaluation=evaluation, created=at(50))  # no scores: sorts last
    comparison = resolve_comparison(evaluation, [base.id, new.id])
    rows = all_pages(comparison, RowQuery(sort=RowSort.REGRESSED_FIRST, metric="similarity", page_size=7))
    assert len(rows) == 61 and len({r.datapoint.id for r in rows}) == 61
    deltas = [r.delta for r in rows if r.delta is not None]
    assert deltas == sorted(deltas) and len(deltas) == len(datapoints)
    assert rows[-1].datapoint.id == unscored.id
    improved = all_pages(comparison, RowQuery(sort=RowSort.IMPROVED_FIRST, metric="similarity", page_size=9))
    assert [r.delta for r in improved if r.delta is not None] == sorted(deltas, reverse=True)


def test_unknown_after_for_a_sorted_page_is_refused(evaluation):
    base, new = run_at(evaluation, 100), run_at(evaluation, 200)
    comparison = resolve_comparison(evaluation, [base.id, new.id])
    with pytest.raises(ComparisonError, match="not a row"):
        comparison_page(comparison, RowQuery(sort=RowSort.REGRESSED_FIRST, after=uuid.uuid4()))


def test_filters(evaluation):
    base, new = run_at(evaluation, 100), run_at(evaluation, 200)
    regressed, improved, same, missing, errored = (DatapointFactory(evaluation=evaluation, created=at(m))
                                                  for m in range(5))
    infer(base, regressed, output="a", correct=1, similarity=0.5)
    infer(new, regressed, output="b", correct=0, similarity=0.5)
    infer(base, improved, output="a", correct=1, similarity=0.2)
    infer(new, improved, output="a", correct=1, similarity=0.9)
    infer(base, same, output="same", correct=1, similarity=0.5)
    infer(new, same, output="same", correct=1, similarity=0.5)
    infer(base, missing, output="x", correct=1)
    infer(base, errored, output="x", correct=1)
    InferenceFactory(run=new, datapoint=errored, output=None, error="boom")
    comparison = resolve_comparison(evaluation, [base.id, new.id])

    def ids(**query):
        return {row.datapoint.id for row in comparison_page(comparison, RowQuery(**query)).rows}

    assert ids(filter=RowFilter.REGRESSED) == {regressed.id}
    assert ids(filter=RowFilter.IMPROVED) == {improved.id}
    assert ids(filter=RowFilter.REGRESSED, metric="similarity") == set()
    assert ids(filter=RowFilter.IMPROVED, metric="correct") == set()
    assert ids(filter=RowFilter.DIFFERS) == {regressed.id}
    assert ids(filter=RowFilter.MISSING) == {missing.id, errored.id}


# --- statistics ------------------------------------------------------------------------------------


def test_wilson_interval_of_a_boolean_metric(evaluation):
    run = run_at(evaluation, 100)
    for i in range(41):
        infer(run, DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i)), correct=float(i < 4))
    stats = comparison_stats(resolve_comparison(evaluation, [run.id]))
    correct = stats.metrics[0].per_run[0]
    assert correct.n == 41 and correct.mean == pytest.approx(4 / 41)
    assert correct.ci.low == pytest.approx(0.038596, abs=1e-6)
    assert correct.ci.high == pytest.approx(0.22548, abs=1e-5)


def test_wald_interval_of_a_float_metric_and_coverage(evaluation):
    run = run_at(evaluation, 100)
    values = [0.2, 0.4, 0.4, 0.9, 1.0]
    for i, value in enumerate(values):
        infer(run, DatapointFactory(evaluation=evaluation, created=at(i)), similarity=value)
    DatapointFactory(evaluation=evaluation, created=at(10))  # in the window, never run
    failed = DatapointFactory(evaluation=evaluation, created=at(11))
    InferenceFactory(run=run, datapoint=failed, output=None, error="boom", variant_pinned=True)
    stats = comparison_stats(resolve_comparison(evaluation, [run.id]))
    similarity = stats.metrics[1].per_run[0]
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert similarity.n == 5 and similarity.mean == pytest.approx(mean)
    assert similarity.ci.low == pytest.approx(mean - 1.96 * sd / math.sqrt(5))
    assert similarity.ci.high == pytest.approx(mean + 1.96 * sd / math.sqrt(5))
    coverage = stats.coverage[run.id]
    assert (coverage.datapoints, coverage.inferences, coverage.errors, coverage.missing, coverage.pinned) == (
        7, 6, 1, 1, 1)


def test_statistics_span_the_whole_window_not_the_page(evaluation):
    run = run_at(evaluation, 100)
    make_rows(evaluation, [run], 150)
    stats = comparison_stats(resolve_comparison(evaluation, [run.id]))
    assert stats.metrics[0].per_run[0].n == 150


def test_statistics_exclude_scores_outside_the_window(evaluation):
    run = run_at(evaluation, 10)
    inside = DatapointFactory(evaluation=evaluation, created=at(1))
    infer(run, inside, correct=1)
    late = DatapointFactory(evaluation=evaluation, created=at(20))  # created after the run
    infer(run, late, correct=0)  # e.g. a bad import: must not count
    stats = comparison_stats(resolve_comparison(evaluation, [run.id]))
    assert stats.metrics[0].per_run[0].n == 1 and stats.coverage[run.id].inferences == 1


def test_baseline_delta_counts_and_significance(evaluation):
    EvaluatorFactory(evaluation=evaluation, name="latency", value_type="float", optimize="min")
    base, new = run_at(evaluation, 100), run_at(evaluation, 200)
    pairs = [(0.2, 0.5), (0.4, 0.6), (0.5, 0.5), (0.3, 0.9), (0.6, 0.4)]
    for i, (before, after) in enumerate(pairs):
        datapoint = DatapointFactory(evaluation=evaluation, created=at(i))
        infer(base, datapoint, similarity=before, latency=before)
        infer(new, datapoint, similarity=after, latency=after)
    only_new = DatapointFactory(evaluation=evaluation, created=at(150))
    infer(new, only_new, similarity=1.0, latency=1.0)  # not paired: excluded from Δ

    stats = comparison_stats(resolve_comparison(evaluation, [base.id, new.id]))
    by_name = {m.evaluator.name: m for m in stats.metrics}
    delta = by_name["similarity"].per_run[1].delta
    diffs = [after - before for before, after in pairs]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    assert delta.n == 5 and delta.mean == pytest.approx(mean)
    assert delta.ci.low == pytest.approx(mean - 1.96 * sd / math.sqrt(5))
    assert (delta.improved, delta.regressed, delta.unchanged) == (3, 1, 1)
    assert delta.significant == (delta.ci.low > 0 or delta.ci.high < 0)
    assert delta.outcome == "better"
    latency = by_name["latency"].per_run[1].delta  # lower is better: the same changes read the other way
    assert (latency.improved, latency.regressed, latency.unchanged) == (1, 3, 1)
    assert latency.outcome == "worse"
    assert by_name["similarity"].per_run[0].delta is None  # the baseline has no Δ
    assert by_name["similarity"].per_run[1].n == 6


def test_significant_change_is_flagged(evaluation):
    base, new = run_at(evaluation, 100), run_at(evaluation, 200)
    for i in range(30):
        datapoint = DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i))
        infer(base, datapoint, similarity=0.2 + (i % 3) * 0.01)
        infer(new, datapoint, similarity=0.8 + (i % 5) * 0.01)
    delta = comparison_stats(resolve_comparison(evaluation, [base.id, new.id])).metrics[1].per_run[1].delta
    assert delta.significant and delta.improved == 30


def test_stats_cost_a_fixed_number_of_queries(evaluation, django_assert_num_queries):
    runs = [run_at(evaluation, 100 + i) for i in range(4)]
    make_rows(evaluation, runs, 20)
    comparison = resolve_comparison(evaluation, [r.id for r in runs])
    comparison_stats(comparison)  # the first look fills the paired sums of the three pairs
    assert PairedSummary.objects.filter(baseline=runs[0]).count() == 3 * len(comparison.evaluators)
    with django_assert_num_queries(4):  # windows, inference counts, run sums, paired sums
        comparison_stats(comparison)


# --- run search -------------------------------------------------------------------------------------


def test_search_runs_by_variant_tag_and_id(evaluation):
    runs = [run_at(evaluation, i, variant_name=f"variant-{i}", tags={"branch": f"b{i}"}) for i in range(12)]
    options, foreign = search_runs(evaluation)
    assert [o.run for o in options] == list(reversed(runs))[:10] and foreign is None
    assert [o.run for o in search_runs(evaluation, "variant-3")[0]] == [runs[3]]
    assert [o.run for o in search_runs(evaluation, "b11")[0]] == [runs[11]]
    prefix = str(runs[5].id)[:13]  # crosses a dash
    assert runs[5] in [o.run for o in search_runs(evaluation, prefix)[0]]
    assert [o.run for o in search_runs(evaluation, str(runs[0].id))[0]] == [runs[0]]
    selected = search_runs(evaluation, "", selected=[runs[11].id])[0]
    assert selected[0].selected and not selected[1].selected


def test_search_runs_says_when_a_pasted_id_is_another_evaluations(evaluation):
    other = RunFactory(evaluation=EvaluationFactory(name="elsewhere"))
    options, foreign = search_runs(evaluation, str(other.id))
    assert options == [] and foreign == other


def test_search_runs_headline_is_the_first_metric_mean(evaluation):
    run = run_at(evaluation, 100)
    for i, value in enumerate([1, 0, 1, 1]):
        infer(run, DatapointFactory(evaluation=evaluation, created=at(i)), correct=value)
    option = search_runs(evaluation)[0][0]
    assert option.headline[0].name == "correct" and option.headline[1] == pytest.approx(0.75)
    assert option.pinned is False
