"""The statistics' chart geometry: nice ticks (property-style), the cutoff line, histograms."""

import math
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from comparisons.charts import histogram, mean_ci_chart, nice_ticks

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


def round_steps(values: list[float]) -> bool:
    """Every tick an integer multiple of one step of 1, 2, 2.5 or 5 × 10^k (read as the shortest decimals)."""
    exact = [Decimal(repr(v)) for v in values]
    step = exact[1] - exact[0]
    mantissa = "".join(map(str, step.normalize().as_tuple().digits))
    return mantissa in ("1", "2", "25", "5") and all(v % step == 0 for v in exact)


@settings(max_examples=400, deadline=None)
@given(finite, finite)
@example(0.0, 1.0)
@example(-0.01, 0.97)  # the old axis: −0.01, 0.24, 0.48 …
@example(0.063, 0.087)
@example(5e-324, 5e-324)
@example(0.0, 5e-324)
@example(-1e200, 1e200)
@example(123456.0, 123999.0)
@example(0.3, 0.3)
def test_ticks_are_round_increasing_unique_and_cover_the_range(a, b):
    low, high = min(a, b), max(a, b)
    ticks = nice_ticks(low, high)
    values = [value for value, _ in ticks]
    labels = [label for _, label in ticks]
    assert values == sorted(values) and len(set(values)) == len(values), ticks
    assert len(set(labels)) == len(labels), ticks  # no label twice
    assert values[0] <= low and values[-1] >= high, ticks
    assert 2 <= len(values) <= 12, ticks
    assert round_steps(values), ticks  # round and evenly spaced
    assert all(math.isclose(float(label), value, rel_tol=0.05, abs_tol=1e-300) or value == 0
               for value, label in ticks), ticks


def test_a_zero_to_one_scale_ticks_by_quarters():
    assert nice_ticks(0.0, 1.0, 4) == [(0.0, "0"), (0.25, "0.25"), (0.5, "0.50"), (0.75, "0.75"), (1.0, "1.00")]


def test_the_chart_draws_the_cutoff_inside_the_axis_and_marks_the_best_run():
    points = [(0, "base", 0.063, 0.05, 0.08, False), (1, "new", 0.087, 0.07, 0.1, True)]
    chart = mean_ci_chart(points, bounded=False, cutoff=0.5)
    xs = [x for x, _ in chart.ticks]
    assert xs[0] <= chart.cutoff_x <= xs[-1] and chart.cutoff_label == "0.5"
    assert [row.best for row in chart.rows] == [False, True]
    percent = mean_ci_chart([(0, "b", 0.4, 0.3, 0.5)], bounded=True, cutoff=0.5, percent=True)
    assert [label for _, label in percent.ticks] == ["0%", "25%", "50%", "75%", "100%"]
    assert percent.cutoff_label == "50%"
    huge = mean_ci_chart([(0, "b", 1e300, -1e300, 1.7e308), (1, "c", -1.7e308, None, None)], bounded=False)
    assert all(math.isfinite(v) for row in huge.rows for v in (row.x_low, row.x_mean, row.x_high))


def test_histogram_bars_and_text_alternative():
    shape = histogram([0, 3, 1, 0], 0.0, 1.0, tallest=6)
    assert [bar.count for bar in shape.bars] == [0, 3, 1, 0]
    assert shape.bars[1].height == 14  # half the tallest bin of the metric's runs
    assert shape.description == "4 scores; 0.25–0.5: 3, 0.5–0.75: 1"
    assert histogram([0, 0], 0.0, 1.0, tallest=0) is None
