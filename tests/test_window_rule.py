"""The run-time window has one statement (models.window_bounds) and three forms: the ORM's Q, the
SQL function comparisons_in_window and Python's in_window. They must agree at every edge."""

from datetime import timedelta

import pytest
from django.db import connection

from comparisons.ids import uuid7, uuid7_max, uuid7_min
from comparisons.models import Datapoint, in_window, window_q
from tests.factories import DatapointFactory, EvaluationFactory, RunFactory, at

pytestmark = pytest.mark.django_db
MS, US = timedelta(milliseconds=1), timedelta(microseconds=1)
RUN_TIME = at(100)

# (name, datapoint id, staled_at, expected inside the window of a run at RUN_TIME)
CASES = [
    ("created long before, current", uuid7(at(1)), None, True),
    ("created in the run's millisecond, lowest id", uuid7_min(RUN_TIME), None, True),
    ("created in the run's millisecond, highest id", uuid7_max(RUN_TIME), None, True),
    ("created in the run's millisecond, after the run's own id", "after-run-id", None, True),
    ("created one millisecond after the run", uuid7_min(RUN_TIME + MS), None, False),
    ("staled exactly at the run time", uuid7(at(1)), RUN_TIME, False),
    ("staled a microsecond before the run", uuid7(at(1)), RUN_TIME - US, False),
    ("staled a microsecond after the run (sub-millisecond)", uuid7(at(1)), RUN_TIME + US, True),
    ("staled 0.9 ms after the run (same millisecond)", uuid7(at(1)), RUN_TIME + timedelta(microseconds=900), True),
    ("staled long after the run", uuid7(at(1)), at(500), True),
    ("staled long before the run", uuid7(at(1)), at(2), False),
    ("created and staled in the run's millisecond, after it", uuid7_min(RUN_TIME), RUN_TIME + US, True),
    ("created in the run's millisecond, staled at it", uuid7_max(RUN_TIME), RUN_TIME, False),
]


@pytest.mark.parametrize(("name", "datapoint_id", "staled_at", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_form_of_the_window_agrees(name, datapoint_id, staled_at, expected):
    evaluation = EvaluationFactory(name="qa")
    run = RunFactory(evaluation=evaluation, id=uuid7(RUN_TIME))
    if datapoint_id == "after-run-id":  # same millisecond as the run, greater random bits
        datapoint_id = uuid7_max(RUN_TIME)
        assert datapoint_id > run.id
    datapoint = DatapointFactory(evaluation=evaluation, id=datapoint_id, staled_at=staled_at)
    when = run.started_at

    orm = Datapoint.objects.filter(window_q(when), pk=datapoint.pk).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT comparisons_in_window(d.id, d.staled_at, %s) FROM comparisons_datapoint d "
                       "WHERE d.id = %s", [run.id, datapoint.id])
        sql = cursor.fetchone()[0]
    python = in_window(datapoint.id, datapoint.staled_at, when)
    assert (orm, sql, python) == (expected, expected, expected)
