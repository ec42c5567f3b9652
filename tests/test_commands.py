from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group
from django.core.management import call_command

from comparisons.demo import DEMO_PASSWORD, DEMO_USERNAME
from comparisons.launch import LAUNCHERS_GROUP
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
    # The demo login may correct values, through the Reviewers group and its permission, and launch runs
    # through the Launchers group.
    assert sorted(demo.groups.values_list("name", flat=True)) == sorted([REVIEWERS_GROUP, LAUNCHERS_GROUP])
    assert Group.objects.get(name=REVIEWERS_GROUP).permissions.filter(codename="add_feedback").exists()
    assert Group.objects.get(name=LAUNCHERS_GROUP).permissions.filter(codename="launch_run").exists()


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


def test_the_demo_judge_sees_the_answer_and_load_demo_updates_an_old_prompt():
    from comparisons.models import Evaluator

    call_command("load_demo", stdout=StringIO())
    judge = Evaluator.objects.get(evaluation__name="support_answers", kind="llm_judge")
    assert all(placeholder in judge.config["prompt"] for placeholder in ("{input}", "{output}", "{reference}"))
    judge.full_clean()
    new_prompt = judge.config["prompt"]
    # A database loaded before the fix, where someone also pointed the judge at their own endpoint.
    Evaluator.objects.filter(pk=judge.pk).update(config={
        "model": "gpt-4o-mini", "prompt": "Does the answer resolve the question?", "base_url": "http://127.0.0.1:9"})
    out = StringIO()
    call_command("load_demo", stdout=out)
    judge.refresh_from_db()
    assert judge.config == {"model": "gpt-4o-mini", "prompt": new_prompt, "base_url": "http://127.0.0.1:9"}
    assert "Updated 1 judge configs" in out.getvalue()
    again = StringIO()
    call_command("load_demo", stdout=again)
    assert "Updated" not in again.getvalue()
