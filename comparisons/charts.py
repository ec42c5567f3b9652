"""Geometry for the small server-rendered SVG chart of means with 95% CI bars, one row per run."""

from dataclasses import dataclass

WIDTH = 420
ROW_HEIGHT = 22
LEFT = 22
RIGHT = 22
TOP = 6
AXIS = 18


@dataclass
class ChartRow:
    y: float
    x_mean: float
    x_low: float
    x_high: float
    colour: int
    label: str


@dataclass
class Chart:
    width: int
    height: int
    rows: list
    ticks: list  # (x, label)
    axis_y: float


def mean_ci_chart(points, *, bounded: bool) -> Chart | None:
    """Lay out (colour, label, mean, low, high) points; a [0, 1] scale when `bounded` (booleans).

    Points without a mean are skipped; None when nothing is left to draw.
    """
    points = [p for p in points if p[2] is not None]
    if not points:
        return None
    if bounded:
        lo, hi = 0.0, 1.0
    else:
        values = [v for p in points for v in (p[2], p[3], p[4]) if v is not None]
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    span = hi - lo

    def x(value):
        return LEFT + (value - lo) / span * (WIDTH - LEFT - RIGHT)

    rows = []
    for index, (colour, label, mean, low, high) in enumerate(points):
        low = mean if low is None else low
        high = mean if high is None else high
        rows.append(ChartRow(TOP + index * ROW_HEIGHT + ROW_HEIGHT / 2, x(mean), x(low), x(high), colour, label))
    axis_y = TOP + len(points) * ROW_HEIGHT
    ticks = [(x(lo + span * k / 4), f"{lo + span * k / 4:.2f}") for k in range(5)]
    return Chart(WIDTH, int(axis_y + AXIS), rows, ticks, axis_y)
