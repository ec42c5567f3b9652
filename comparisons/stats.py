"""Confidence intervals and paired comparisons: pure functions, no database.

The formulas are the ones TensorZero's UI uses, so its users see the same numbers here:
Wilson score intervals for boolean metrics and Wald intervals (mean ± 1.96·s/√n, sample s)
for float metrics.
"""

import math
from dataclasses import dataclass

Z95 = 1.96  # exactly 1.96, as TensorZero does: n=41, 4 successes gives [0.038596, 0.22548]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def wilson_interval(successes: float, n: int, z: float = Z95) -> Interval | None:
    """Wilson score interval for a proportion; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def wald_interval(mean: float, stddev: float | None, n: int, z: float = Z95) -> Interval | None:
    """Wald interval mean ± z·s/√n with the sample standard deviation; None when n < 2."""
    if n < 2 or stddev is None or mean is None:
        return None
    half = z * stddev / math.sqrt(n)
    return Interval(mean - half, mean + half)


def metric_interval(is_boolean: bool, mean: float | None, stddev: float | None, n: int) -> Interval | None:
    """The 95% CI of a metric's mean: Wilson for booleans, Wald for floats."""
    if not n or mean is None:
        return None
    if is_boolean:
        return wilson_interval(mean * n, n)
    return wald_interval(mean, stddev, n)


def sample_stddev(values: list[float]) -> float | None:
    """Sample standard deviation (n − 1); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values; None if empty."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] * (1 - weight) + sorted_values[upper] * weight
