"""Are these runs comparable? Short ids that identify, the evaluator snapshot each run records, the
comparison's Configuration panel and its warning (queries.run_configurations)."""

import html

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import caches
from django.urls import reverse

from comparisons.ids import short_id, uuid7
from comparisons.launch import RunLaunchForm, launch_run
from comparisons.models import EvaluationRun, Evaluator, evaluator_snapshot
from comparisons.queries import CONFIG_TEXT_LIMIT, resolve_comparison, run_configurations, search_runs
from comparisons.rows_cache import CACHE_ALIAS
from comparisons.runner import evaluate
from tests import sample_tasks
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, RunFactory, UserFactory, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def qa():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match", cutoff=0.5)
    EvaluatorFactory(evaluation=evaluation, name="judge", kind="llm_judge", value_type="float",
                     config={"prompt": "Grade {output} against {reference}.", "model": "gpt-4o-mini"})
    for i in range(3):
        DatapointFactory(evaluation=evaluation, created=at(i), input={"question": f"question {i}"},
                         reference_output=f"answer {i}")
    return evaluation


def recorded_run(evaluation, variant, **fields):
    """A completed run made the way the runner and launches make them (with its evaluator snapshot)."""
    run = EvaluationRun.new(evaluation, variant, status=EvaluationRun.Status.COMPLETED, **fields)
    run.save(force_insert=True)
    return run


def page_of(client, evaluation, *runs) -> str:
    url = reverse("comparison_detail", args=[evaluation.name]) + "?run_ids=" + ",".join(str(r.id) for r in runs)
    response = client.get(url)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


# -- Short ids --------------------------------------------------------------------------------------


def test_runs_made_in_the_same_millisecond_get_different_short_ids(qa):
    first, second = (RunFactory(evaluation=qa, variant_name="same", id=uuid7(at(42))) for _ in range(2))
    assert str(first.id)[:13] == str(second.id)[:13]  # the time prefix the portal used to show
    assert first.short_id != second.short_id
    assert first.short_id == short_id(first.id) == str(first.id)[-8:]
    assert first.short_id in str(first) and second.short_id in str(second)


def test_the_selector_run_page_and_admin_show_the_short_ids(client, qa):
    first, second = (RunFactory(evaluation=qa, variant_name="same", id=uuid7(at(42))) for _ in range(2))
    client.force_login(UserFactory(username="admin", is_staff=True, is_superuser=True))
    options = client.get(reverse("run_search", args=["qa"])).content.decode()
    assert first.short_id in options and second.short_id in options
    assert f"Run {first.short_id}" in client.get(reverse("run_detail", args=[first.id])).content.decode()
    admin = client.get(reverse("admin:comparisons_evaluationrun_changelist")).content.decode()
    assert first.short_id in admin and second.short_id in admin


def test_a_short_id_or_a_prefix_finds_the_run_in_the_selector_and_the_admin(client, qa):
    first, second = (RunFactory(evaluation=qa, variant_name="same", id=uuid7(at(42))) for _ in range(2))
    found, _ = search_runs(qa, first.short_id)
    assert [option.run for option in found] == [first]
    found, _ = search_runs(qa, first.short_id.upper())
    assert [option.run for option in found] == [first]
    found, _ = search_runs(qa, str(first.id)[:13])  # a prefix of the full id still finds both
    assert {option.run for option in found} == {first, second}
    client.force_login(UserFactory(username="admin", is_staff=True, is_superuser=True))
    admin = client.get(reverse("admin:comparisons_evaluationrun_changelist"), {"q": second.short_id}).content.decode()
    assert second.short_id in admin and first.short_id not in admin


# -- The evaluator snapshot -------------------------------------------------------------------------


def test_the_runner_records_every_evaluator_as_it_was(qa):
    result = evaluate(qa, "v1", sample_tasks.perfect, progress=False, scorers={"judge": lambda *a: 1.0})
    snapshot = EvaluationRun.objects.get(id=result.run.id).evaluator_snapshot
    assert snapshot == [
        {"name": "exact", "kind": "exact_match", "value_type": "boolean", "optimize": "max", "cutoff": 0.5,
         "min_value": 0.0, "max_value": 1.0, "config": {}},
        {"name": "judge", "kind": "llm_judge", "value_type": "float", "optimize": "max", "cutoff": None,
         "min_value": None, "max_value": None,
         "config": {"prompt": "Grade {output} against {reference}.", "model": "gpt-4o-mini"}},
    ]
    Evaluator.objects.filter(name="exact").update(cutoff=0.9)  # a later change leaves the run's snapshot alone
    assert EvaluationRun.objects.get(id=result.run.id).evaluator_snapshot[0]["cutoff"] == 0.5


def test_a_portal_launch_records_the_snapshot(qa):
    user = UserFactory(username="launcher")
    user.user_permissions.add(Permission.objects.get(codename="launch_run"))
    form = RunLaunchForm(qa, {"variant": "portal-v1", "task": "demo-offline", "concurrency": "4", "pinned": "on"})
    assert form.is_valid(), form.errors
    run = EvaluationRun.objects.get(id=launch_run(qa, form, user).id)
    assert [e["name"] for e in run.evaluator_snapshot] == ["exact", "judge"]
    assert run.evaluator_snapshot == evaluator_snapshot(qa)


@pytest.mark.parametrize("bad", [{"prompt": "a\x00b"}, {"a\x00": 1}, {"temperature": float("nan")},
                                 {"nested": [{"deep": float("inf")}]}])
def test_a_config_postgresql_cannot_store_is_refused_before_anything_is_recorded(qa, bad):
    with pytest.raises(ValueError, match="the run's config"):
        evaluate(qa, "v1", sample_tasks.perfect, config=bad, progress=False)
    with pytest.raises(ValueError, match="the run's tags"):
        EvaluationRun.new(qa, "v1", tags=bad)
    assert not EvaluationRun.objects.exists()


def test_non_finite_evaluator_columns_are_kept_by_name_in_the_snapshot(qa):
    Evaluator.objects.filter(name="exact").update(cutoff=float("nan"), max_value=float("inf"))
    run = recorded_run(qa, "v1")
    run.refresh_from_db()
    assert (run.evaluator_snapshot[0]["cutoff"], run.evaluator_snapshot[0]["max_value"]) == ("nan", "inf")


def test_unicode_nested_and_huge_values_are_stored_and_shown_bounded(client, qa):
    EvaluatorFactory(evaluation=qa, name="custom_1", kind="custom", value_type="float",
                     config={"emoji": "🧪 \u202e evil", "nested": {"a": [1, {"b": None}]},
                             "html": "<script>x</script>"})
    huge = {"prompt": "é" * 200_000, **{f"param_{i:04d}": i for i in range(500)}}
    base = recorded_run(qa, "small", config={"model": "m"})
    big = recorded_run(qa, "huge", config=huge, tags={"ключ": "值 \U0001f600"})
    big.refresh_from_db()
    assert big.config["prompt"] == "é" * 200_000 and big.evaluator_snapshot[2]["config"]["emoji"] == "🧪 \u202e evil"
    configurations = run_configurations(resolve_comparison(qa, [base.id, big.id]))
    config = configurations.sections[0]
    assert len(config.rows) == 200 and config.hidden_rows == 302  # model, prompt and 500 params
    prompt = next(row for row in config.rows if row.label == "prompt")
    assert len(prompt.values[1].text) == CONFIG_TEXT_LIMIT and prompt.values[1].more == 200_000 - CONFIG_TEXT_LIMIT
    client.force_login(UserFactory())
    response = client.get(reverse("comparison_detail", args=["qa"]) + f"?run_ids={base.id},{big.id}")
    page = response.content.decode()
    assert len(page) < 200_000
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x</script>" not in page
    assert "ключ" in page and "302 more settings not shown" in page


# -- What the panel says ----------------------------------------------------------------------------


def test_the_same_evaluators_and_config_make_no_warning(qa):
    a, b = recorded_run(qa, "a", config={"model": "m"}), recorded_run(qa, "b", config={"model": "m"})
    configurations = run_configurations(resolve_comparison(qa, [a.id, b.id]))
    assert configurations.evaluator_differences == [] and configurations.differences == 0
    assert configurations.not_recorded == []


def test_a_changed_judge_prompt_cutoff_or_evaluator_set_is_named(qa):
    before = recorded_run(qa, "before")
    judge = Evaluator.objects.get(name="judge")
    judge.config = {**judge.config, "prompt": "Be strict. Grade {output}."}
    judge.save()
    Evaluator.objects.filter(name="exact").update(cutoff=0.7)
    EvaluatorFactory(evaluation=qa, name="fresh", kind="contains")
    after = recorded_run(qa, "after")
    configurations = run_configurations(resolve_comparison(qa, [before.id, after.id]))
    assert configurations.evaluator_differences == [
        "exact: cutoff", "judge: judge prompt", f"fresh: not an evaluator of {before.short_id}"]
    rows = {row.name: row for row in configurations.sections[2].rows}
    assert [v.text for v in rows["exact: cutoff"].values] == ["0.5", "0.7"]
    assert rows["exact: cutoff"].values[1].differs and not rows["exact: kind"].differs
    assert [v.state for v in rows["fresh: evaluator"].values] == ["absent", ""]


def test_runs_recorded_before_snapshots_say_not_recorded_and_raise_no_warning(qa):
    old = RunFactory(evaluation=qa, variant_name="old")  # made like a run from before: no snapshot
    new = recorded_run(qa, "new")
    configurations = run_configurations(resolve_comparison(qa, [old.id, new.id]))
    assert [run.id for run in configurations.not_recorded] == [old.id]
    assert configurations.evaluator_differences == []
    assert {v.state for row in configurations.sections[2].rows for v in row.values[:1]} == {"not-recorded"}


def test_the_page_shows_the_panel_collapsed_and_the_warning(client, qa):
    client.force_login(UserFactory())
    a = recorded_run(qa, "a", config={"model": "gpt-4o", "temperature": 0.2}, tags={"team": "search"})
    b = recorded_run(qa, "b", config={"model": "gpt-4o-mini", "temperature": 0.2})
    page = page_of(client, qa, a, b)
    assert '<details class="config-panel" id="run-configuration">' in page  # collapsed: no `open`
    assert "2 differences between the selected runs" in page
    assert 'id="config-diff-only"' in page and "Differences only" in page
    assert "Scores may not be comparable" not in page
    assert page.index('id="run-chips"') < page.index('id="run-configuration"') < page.index('id="results-stats"')
    Evaluator.objects.filter(name="exact").update(cutoff=0.8)
    c = recorded_run(qa, "c")
    page = page_of(client, qa, a, c)
    assert "Scores may not be comparable" in page and "exact: cutoff" in page
    fragment = client.get(reverse("comparison_detail", args=["qa"]) + f"?run_ids={a.id},{c.id}",
                          headers={"HX-Request": "true", "HX-Target": "comparison"}).content.decode()
    assert "Scores may not be comparable" in fragment and 'id="run-configuration"' in fragment
    old = RunFactory(evaluation=qa, variant_name="old")
    assert "evaluators not recorded for 1 run" in page_of(client, qa, old, a)


def test_changing_a_runs_snapshot_or_config_changes_the_cached_page(client, qa):
    caches[CACHE_ALIAS].clear()
    client.force_login(UserFactory())
    a, b = recorded_run(qa, "a", config={"model": "m"}), recorded_run(qa, "b", config={"model": "m"})
    assert "Scores may not be comparable" not in page_of(client, qa, a, b)
    assert "Scores may not be comparable" not in page_of(client, qa, a, b)  # now from the cache
    snapshot = b.evaluator_snapshot
    snapshot[0]["cutoff"] = 0.25
    EvaluationRun.objects.filter(id=b.id).update(evaluator_snapshot=snapshot)
    assert "exact: cutoff" in page_of(client, qa, a, b)
    EvaluationRun.objects.filter(id=b.id).update(config={"model": "other-model"})
    assert "other-model" in page_of(client, qa, a, b)
