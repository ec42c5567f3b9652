import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from comparisons.runner.openai_client import MAX_BACKOFF_S, MAX_RETRY_AFTER_S, RateLimiter, backoff_delay, retry_after_s

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("header, seconds", [
    ("1", 1.0),
    (" 2.5 ", 2.5),
    ("0", 0.0),
    ("-3", 0.0),
    ("86400", MAX_RETRY_AFTER_S),
    (format_datetime(NOW + timedelta(seconds=7), usegmt=True), 7.0),
    (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),  # a date in the past: go now
    (format_datetime(NOW + timedelta(hours=2), usegmt=True), MAX_RETRY_AFTER_S),
    ("Sun, 01 Mar 2026 12:00:09 GMT", 9.0),
])
def test_retry_after_reads_seconds_and_http_dates_within_the_cap(header, seconds):
    assert retry_after_s(header, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("header", [None, "", "soon", "nan", "Sun, 99 Foo 2026"])
def test_an_unreadable_retry_after_falls_back_to_the_backoff(header):
    assert retry_after_s(header, now=NOW) is None


def test_backoff_jitter_stays_within_half_to_full_step_and_is_capped():
    rng = random.Random(7)
    for attempt in range(5):
        step = 0.5 * 2**attempt
        delays = [backoff_delay(attempt, 0.5, rng) for _ in range(500)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # jittered, not one fixed delay
    assert all(MAX_BACKOFF_S / 2 <= backoff_delay(30, 0.5, rng) <= MAX_BACKOFF_S for _ in range(100))


@pytest.mark.parametrize("rpm", [0, -1, float("nan"), float("inf")])
def test_a_rate_limiter_needs_a_positive_rpm(rpm):
    with pytest.raises(ValueError, match="rpm must be a positive number"):
        RateLimiter(rpm)
