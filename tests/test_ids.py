import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from comparisons.ids import parse_uuid, uuid7, uuid7_max, uuid7_min, uuid7_ms, uuid7_time


def test_uuid7_carries_its_millisecond_and_version():
    when = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    value = uuid7(when)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert uuid7_time(value) == when.replace(microsecond=891_000)
    assert uuid7_ms(str(value)) == int(when.replace(microsecond=891_000).timestamp() * 1000)


def test_ids_made_in_one_millisecond_still_increase():
    when = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [uuid7(when) for _ in range(200)]
    assert ids == sorted(ids, key=lambda u: u.bytes)
    assert len(set(ids)) == 200


def test_bounds_bracket_every_id_of_their_millisecond():
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    value = uuid7(when)
    assert uuid7_min(when).bytes <= value.bytes <= uuid7_max(when).bytes
    assert uuid7(when + timedelta(milliseconds=1)).bytes > uuid7_max(when).bytes
    assert uuid7(when - timedelta(milliseconds=1)).bytes < uuid7_min(when).bytes


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        uuid7(datetime(2026, 1, 1))


@pytest.mark.parametrize("text", ["", "xyz", "0192", "01920000-0000-7000-8000-00000000000g", None])
def test_parse_uuid_rejects_malformed_text(text):
    assert parse_uuid(text) is None


@pytest.mark.django_db
def test_postgres_orders_uuid7_ids_by_time():
    base = datetime(2026, 5, 1, tzinfo=UTC)
    # Deliberately made out of order, with times far apart and within one millisecond.
    times = [base + timedelta(days=400), base, base + timedelta(milliseconds=1), base + timedelta(seconds=30)]
    made = [(uuid7(t), t) for t in times] + [(uuid7(base), base) for _ in range(5)]
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE ids (id uuid)")
        cursor.executemany("INSERT INTO ids VALUES (%s)", [(u,) for u, _ in made])
        cursor.execute("SELECT id FROM ids ORDER BY id")
        ordered = [row[0] for row in cursor.fetchall()]
    assert [uuid7_time(u) for u in ordered] == sorted(uuid7_time(u) for u, _ in made)
    assert ordered == sorted((u for u, _ in made), key=lambda u: u.bytes)


def test_ids_stay_unique_across_random_pool_refills():
    ids = [uuid7(1_700_000_000_000) for _ in range(3000)]  # one millisecond: the counter wraps, pools refill
    assert len(set(ids)) == 3000


def test_a_forked_child_draws_its_own_random_bits():
    """The parent's pool of random bytes must not be replayed in a child (same millisecond, same counter)."""
    uuid7()  # the parent has a pool now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, ",".join(str(uuid7(1_700_000_000_000)) for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 10_000).decode().split(","))
    os.close(read)
    parent = {str(uuid7(1_700_000_000_000)) for _ in range(5)}
    assert len(child) == 5 and not child & parent
