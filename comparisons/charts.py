"""Geometry for the small server-rendered SVG charts of the statistics: means with 95% CI bars (one
row per run, the cutoff drawn), and each run's distribution of scores (a histogram or a pass/fail bar).
"""

import math
from dataclasses import dataclass, field
from decimal import Decimal

WIDTH = 420
ROW_HEIGHT = 22
LEFT = 22
RIGHT = 22
TOP = 6
AXIS = 18
TICKS = 5  # about how many ticks an axis gets

# Histograms: drawn small, inside the statistics table.
HIST_WIDTH = 120
HIST_HEIGHT = 30


@dataclass
class ChartRow:
    y: float
    x_mean: float
    x_low: float
    x_high: float
    colour: int
    label: str
    best: bool = False


@dataclass
class Chart:
    width: int
    height: int
    rows: list
    ticks: list  # (x, label)
    axis_y: float
    cutoff_x: float | None = None
    cutoff_label: str = ""


def _nice_step(span: float, count: int) -> Decimal:
    """The round step (1, 2, 2.5 or 5 × 10^k, exact) that cuts `span` into about `count` parts."""
    raw = span / count
    exponent = math.floor(math.log10(raw))
    for factor in ("1", "2", "2.5", "5", "10"):
        step = Decimal(factor).scaleb(exponent)
        if raw <= float(step) * 1.0000001:
            return step
    return Decimal(10).scaleb(exponent)


def _labels(values: list[Decimal], step: Decimal) -> list[str]:
    """Labels exact to the step, all with the same digits (plain decimals; exponents for huge or
    tiny values): ticks are distinct multiples of the step, so no two labels are the same."""
    step_exponent = step.normalize().as_tuple().exponent
    largest = max(abs(v) for v in values)
    if largest >= 1000000 or largest < Decimal("0.0001"):
        top = max(v.adjusted() for v in values if v)
        digits = max(0, top - step_exponent)
        return [f"{v:.{digits}e}" if v else "0" for v in values]
    decimals = max(0, -step_exponent)
    return [f"{v:.{decimals}f}" if v else "0" for v in values]


def nice_ticks(low: float, high: float, count: int = TICKS) -> list[tuple[float, str]]:
    """Round, increasing, distinct ticks (value, label) whose first is ≤ `low` and last ≥ `high`.

    Steps are 1, 2, 2.5 or 5 × 10^k (0, 0.25, 0.5 … on a [0, 1] scale); a range of one value is
    widened around it. Every label shows its tick exactly, so none repeats.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("ticks need finite bounds")
    low, high = min(low, high), max(low, high)
    if high - low <= max(abs(low), abs(high)) * 1e-12 or high - low < 1e-300:
        pad = abs(high) * 0.1 if abs(high) > 1e-300 else 1.0
        low, high = low - pad, high + pad
    if high / 2 - low / 2 > 8e307:  # the span itself would not be a finite float
        ends = [low, 0.0, high] if low < 0 < high else [low, high]
        return [(value, f"{value:.3g}") for value in ends]
    step = _nice_step(high - low, count)
    # Integer multiples of the step, in decimal, so 0.1 × 3 is 0.3 and not 0.30000000000000004.
    first, last = math.floor(low / float(step)), math.ceil(high / float(step))
    while float(step * first) > low:
        first -= 1
    while float(step * last) < high:
        last += 1
    exact = [step * k for k in range(first, last + 1)]
    return list(zip([float(v) for v in exact], _labels(exact, step), strict=True))


class _Scale:
    """Maps values in [low, high] to x positions between LEFT and width − RIGHT."""

    def __init__(self, low: float, high: float, width: float = WIDTH, left: float = LEFT, right: float = RIGHT):
        self.low, self.high = low, high
        self.left, self.inner = left, width - left - right

    def __call__(self, value: float) -> float:
        share = (value / 2 - self.low / 2) / (self.high / 2 - self.low / 2)
        return self.left + min(max(share, 0.0), 1.0) * self.inner


def mean_ci_chart(points, *, bounded: bool, cutoff: float | None = None, percent: bool = False) -> Chart | None:
    """Lay out (colour, label, mean, low, high[, best]) points on nice ticks; a [0, 1] scale when
    `bounded` (booleans, labelled in % when `percent`), with the `cutoff` line when there is one.

    Points without a mean are skipped; None when nothing is left to draw.
    """
    points = [p for p in points if p[2] is not None]
    if not points:
        return None
    if bounded:
        ticks = nice_ticks(0.0, 1.0, 4)
    else:
        values = [v for p in points for v in (p[2], p[3], p[4]) if v is not None]
        if cutoff is not None:
            values.append(cutoff)
        ticks = nice_ticks(min(values), max(values))
    if percent:
        ticks = [(value, f"{value * 100:g}%") for value, _ in ticks]
    x = _Scale(ticks[0][0], ticks[-1][0])
    rows = []
    for index, point in enumerate(points):
        colour, label, mean, low, high = point[:5]
        low = mean if low is None else low
        high = mean if high is None else high
        rows.append(ChartRow(TOP + index * ROW_HEIGHT + ROW_HEIGHT / 2, x(mean), x(low), x(high), colour, label,
                             best=bool(point[5]) if len(point) > 5 else False))
    axis_y = TOP + len(points) * ROW_HEIGHT
    chart = Chart(WIDTH, int(axis_y + AXIS), rows, [(x(value), label) for value, label in ticks], axis_y)
    if cutoff is not None:
        chart.cutoff_x = x(cutoff)
        chart.cutoff_label = f"{cutoff * 100:g}%" if percent else f"{cutoff:g}"
    return chart


@dataclass
class HistogramBar:
    x: float
    y: float
    width: float
    height: float
    count: int
    low: float
    high: float


@dataclass
class Histogram:
    width: int
    height: int
    bars: list = field(default_factory=list)
    description: str = ""  # the text alternative: every bin's range and count


def histogram(counts: list[int], low: float | None, high: float | None, *, tallest: int) -> Histogram | None:
    """Bars for `counts` over equal bins of [low, high], scaled so `tallest` fills the height (the
    same for every run of a metric, so their shapes compare). None without any count."""
    total = sum(counts)
    if not total or low is None or high is None:
        return None
    bins = len(counts)
    gap = 1.0
    bar_width = (HIST_WIDTH - gap * (bins - 1)) / bins
    width = (high - low) / bins
    bars, parts = [], []
    for index, count in enumerate(counts):
        bar_height = (HIST_HEIGHT - 2) * count / max(tallest, 1)
        if count:
            bar_height = max(bar_height, 1.5)  # a bin with any score stays visible
        start, end = low + width * index, low + width * (index + 1)
        bars.append(HistogramBar(index * (bar_width + gap), HIST_HEIGHT - bar_height, bar_width, bar_height,
                                 count, start, end))
        if count:
            parts.append(f"{start:.3g}–{end:.3g}: {count}")
    return Histogram(HIST_WIDTH, HIST_HEIGHT, bars, f"{total} scores; " + ", ".join(parts))
