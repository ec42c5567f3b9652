"""UUIDv7 ids: the first 48 bits are Unix milliseconds, so PostgreSQL's bytewise `uuid` order is time order.

Every id that carries time in evalcompare comes from `uuid7()`; `uuid7_time()` reads the time back.
The window rule compares times at millisecond precision, so `uuid7_max()` gives the greatest id
of a millisecond: `id <= uuid7_max(t)` is exactly `time(id) <= t`, and it can use an index.
"""

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_last_ms = -1
_counter = 0
# Random bits are drawn from os.urandom 256 ids at a time (one system call per id cost the runner's
# event loop a tenth of its time); a forked child starts with a pool of its own.
_POOL_IDS = 256
_pool = b""
_pool_at = 0


def _forget_pool():
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(when: datetime | int | None) -> int:
    """Unix milliseconds of `when` (floored, exact: integer arithmetic, no float rounding)."""
    if when is None:
        return time.time_ns() // 1_000_000
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("UUIDv7 times must be timezone-aware")
        return (when - _EPOCH) // timedelta(milliseconds=1)
    return int(when)


def uuid7(when: datetime | int | None = None) -> uuid.UUID:
    """A new UUIDv7 for `when` (a datetime or Unix milliseconds; default now).

    Ids made in the same millisecond by this process increase monotonically (a 12-bit counter in
    `rand_a`, RFC 9562 method 1), so insertion order survives within a millisecond too.
    """
    global _last_ms, _counter, _pool, _pool_at
    ms = _ms(when)
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"time out of UUIDv7 range: {ms} ms")
    with _lock:
        if _pool_at >= len(_pool):
            _pool, _pool_at = os.urandom(10 * _POOL_IDS), 0
        random = int.from_bytes(_pool[_pool_at:_pool_at + 10], "big")
        _pool_at += 10
        if ms == _last_ms and _counter < 0xFFF:
            _counter += 1
        else:
            _counter = (random >> 64) & 0x7FF  # a random start that leaves room to count up
        _last_ms = ms
        counter = _counter
    rand_b = random & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def uuid7_ms(value: uuid.UUID | str) -> int:
    """The Unix milliseconds stored in a UUIDv7."""
    if not isinstance(value, uuid.UUID):
        value = uuid.UUID(str(value))
    return value.int >> 80


def uuid7_time(value: uuid.UUID | str) -> datetime:
    """The creation time stored in a UUIDv7, as an aware UTC datetime (millisecond precision)."""
    return datetime.fromtimestamp(uuid7_ms(value) / 1000, tz=UTC)


def uuid7_max(when: datetime | int) -> uuid.UUID:
    """The greatest UUID whose time prefix is `when`'s millisecond (for `id <= bound` filters)."""
    return uuid.UUID(int=(_ms(when) << 80) | ((1 << 80) - 1))


def uuid7_min(when: datetime | int) -> uuid.UUID:
    """The smallest UUID whose time prefix is `when`'s millisecond (for `id >= bound` filters)."""
    return uuid.UUID(int=_ms(when) << 80)


SHORT_ID_LENGTH = 8


def short_id(value: uuid.UUID | str) -> str:
    """The short form of an id shown everywhere (run selector, chips, run pages, admin): its last 8 hex
    digits. A UUIDv7 starts with its time, so a prefix is the same for everything made in the same
    minute; its last 62 bits are random, so 8 digits (32 bits) tell apart any runs shown together
    (two of 10,000 runs share them with a chance of about 1%, and the run selector then lists both).
    The run selector and the admin search find an id by this tail as well as by a prefix."""
    return str(value)[-SHORT_ID_LENGTH:]


def parse_uuid(text: str) -> uuid.UUID | None:
    """The UUID in `text`, or None when it is not a well-formed UUID."""
    try:
        return uuid.UUID(str(text).strip())
    except (ValueError, AttributeError, TypeError):
        return None
