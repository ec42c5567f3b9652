from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group
from django.core.management import call_command

from comparisons.demo import DEMO_PASSWORD, DEMO_USERNAME
from comparisons.models import Datapoint, Evaluation, EvaluationRun, Feedback, Inference
from comparisons.reviewers import REVIEWERS_GROUP

pytestmark = pytest.mark.django_db


def counts():
    return [m.objects.count() for m in (Evaluation, Datapoint, EvaluationRun, Inference, Feedback)]


def test_load_demo_is_idempotent_and_prints_the_login():
    out = StringIO()
    call_command("load_demo", stdout=out)
    assert f"as {DEMO_USERNAME} / {DEMO_PASSWORD}" in out.getvalue()
    first = counts()
    call_command("load_demo", stdout=StringIO())
    assert counts() == first
    demo = authenticate(username=DEMO_USERNAME, password=DEMO_PASSWORD)
    assert demo is not None
    # The demo login may correct values, through the Reviewers group and its permission.
    assert list(demo.groups.values_list("name", flat=True)) == [REVIEWERS_GROUP]
    assert Group.objects.get(name=REVIEWERS_GROUP).permissions.filter(codename="add_feedback").exists()


def test_load_demo_yields_the_promised_mix():
    call_command("load_demo", stdout=StringIO())
    assert Evaluation.objects.count() >= 2
    assert {e.function.kind for e in Evaluation.objects.all()} == {"chat", "json"}
    chat = Evaluation.objects.get(function__kind="chat")
    assert {ev.value_type for ev in chat.evaluators.all()} == {"boolean", "float"}
    assert Datapoint.objects.current().count() >= 300
    assert Datapoint.objects.filter(supersedes__isnull=False).exists()  # edited
    assert Datapoint.objects.stale().filter(superseded_by__isnull=True).exists()  # deleted
    runs = EvaluationRun.objects.all()
    assert runs.count() >= 6 and len({r.variant_name for r in runs}) == runs.count()
    assert Inference.objects.filter(error__isnull=False).exists()
    assert Feedback.objects.filter(source="human").exists()
    assert {True, False} <= set(Inference.objects.values_list("variant_pinned", flat=True))
    # Some datapoints in a run's window have no inference, and windows differ between runs.
    run = chat.runs.order_by("id").first()
    assert run.window_datapoints().count() > run.inferences.count()
    windows = [set(r.window_datapoints().values_list("id", flat=True)) for r in chat.runs.all()]
    assert len({frozenset(w) for w in windows}) == len(windows)
    # Human feedback overrides the evaluator on the same metric.
    human = Feedback.objects.filter(source="human").first()
    assert Feedback.objects.filter(inference=human.inference, metric=human.metric, source="evaluator").exists()
    assert Feedback.objects.filter(inference=human.inference, metric=human.metric).winning().get() == human
