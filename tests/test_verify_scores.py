"""`manage.py verify_scores`: finds every kind of drift in the kept tables, and repairs it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from comparisons.ids import uuid7
from comparisons.models import Feedback, RunCoverage, RunMetricSummary
from comparisons.queries import paired_summaries, resolve_comparison
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, InferenceFactory, RunFactory, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs():
    made = {}
    for name in ("qa", "other"):
        evaluation = EvaluationFactory(name=name)
        EvaluatorFactory(evaluation=evaluation, name="quality", value_type="float")
        pair = [RunFactory(evaluation=evaluation, id=uuid7(at(m))) for m in (100, 200)]
        for i in range(3):
            datapoint = DatapointFactory(evaluation=evaluation, created=at(i))
            for run in pair:
                Feedback.objects.create(inference=InferenceFactory(run=run, datapoint=datapoint), metric="quality",
                                        value=0.25 * (i + 1))
        paired_summaries(resolve_comparison(evaluation, [r.id for r in pair]))
        made[name] = pair
    return made


def verify(*args):
    out = StringIO()
    try:
        call_command("verify_scores", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


def sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_clean_tables_report_no_drift(runs):
    code, out = verify()
    assert code == 0 and "No drift" in out


def test_each_kind_of_drift_is_named_and_repaired(runs):
    base, other = runs["qa"]
    sql("UPDATE comparisons_runmetricsummary SET n = n + 1, total = total + 0.5 WHERE run_id = %s", [base.id])
    sql("DELETE FROM comparisons_windowscore WHERE ctid IN (SELECT ctid FROM comparisons_windowscore "
        "WHERE run_id = %s LIMIT 1)", [other.id])
    sql("UPDATE comparisons_pairedsummary SET higher = higher + 2 WHERE run_id = %s", [other.id])
    sql("UPDATE comparisons_runcoverage SET errors = 7 WHERE run_id = %s", [base.id])
    code, out = verify()
    assert code == 1
    assert f"RunMetricSummary ({base.id}, quality): kept (4, 2.00, " in out
    assert f"WindowScore ({other.id}, quality, " in out and "kept (no row), true (" in out
    assert "PairedSummary" in out and f"RunCoverage ({base.id}): kept (3, 7, 0), true (3, 0, 0)" in out
    assert "4 drift(s)" in out and "--repair" in out
    # Scoped to the other evaluation, nothing is wrong.
    assert verify("--evaluation", "other")[0] == 0
    code, out = verify("--repair")
    assert code == 0 and "Repaired 4 drift(s)" in out
    assert verify() == (0, verify()[1])
    assert RunMetricSummary.objects.get(run=base, metric="quality").n == 3
    assert RunCoverage.objects.get(run=base).errors == 0


def test_a_kept_row_that_should_not_exist_is_drift(runs):
    base, _ = runs["other"]
    stray = DatapointFactory(evaluation=base.evaluation, created=at(5))
    sql("INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value, human) "
        "VALUES (%s, 'quality', %s, 1, false)", [base.id, stray.id])
    code, out = verify("--evaluation", "other")
    assert code == 1 and "true (no row)" in out


def test_bad_arguments_are_clear(runs):
    code, out = verify("--evaluation", "nope\x00/")
    assert code == 2 and "There is no evaluation named" in out and "qa" in out
    assert verify("--limit", "0")[0] == 2
