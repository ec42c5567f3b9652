from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from comparisons.ids import uuid7
from comparisons.models import (
    Datapoint,
    DatapointStaledError,
    Dataset,
    Evaluation,
    Evaluator,
    Feedback,
    Function,
    Inference,
)
from tests.factories import (
    DatapointFactory,
    EvaluationFactory,
    EvaluatorFactory,
    FeedbackFactory,
    InferenceFactory,
    RunFactory,
    at,
)

pytestmark = pytest.mark.django_db


def test_one_inference_per_run_and_datapoint(evaluation):
    inference = InferenceFactory(run=RunFactory(evaluation=evaluation))
    with pytest.raises(IntegrityError), transaction.atomic():
        Inference.objects.create(run=inference.run, datapoint=inference.datapoint, variant_name="x")


def test_evaluator_names_are_unique_per_evaluation(evaluation):
    with pytest.raises(IntegrityError), transaction.atomic():
        EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(name="correct")  # the same name in another evaluation is fine


def test_inference_datapoint_must_be_in_the_runs_evaluation_dataset(evaluation):
    run = RunFactory(evaluation=evaluation)
    foreign = DatapointFactory()  # another dataset and function
    inference = Inference(run=run, datapoint=foreign, variant_name="v")
    with pytest.raises(ValidationError, match="is not in dataset"):
        inference.full_clean()
    with pytest.raises(IntegrityError, match="not in the dataset and function"), transaction.atomic():
        Inference.objects.bulk_create([inference])  # the database refuses it too, even in bulk


def test_inference_datapoint_must_match_function_too(evaluation):
    other_function = DatapointFactory(dataset=evaluation.dataset)  # right dataset, wrong function
    with pytest.raises(IntegrityError), transaction.atomic():
        Inference.objects.create(run=RunFactory(evaluation=evaluation), datapoint=other_function, variant_name="v")


def test_feedback_metric_must_be_an_evaluator_of_the_evaluation(evaluation):
    inference = InferenceFactory(run=RunFactory(evaluation=evaluation))
    with pytest.raises(ValidationError, match="'tone' is not an evaluator"):
        Feedback.objects.record(inference, "tone", 1.0)
    with pytest.raises(IntegrityError, match="not an evaluator"), transaction.atomic():
        Feedback.objects.create(inference=inference, metric="tone", value=1.0)


def test_boolean_feedback_takes_only_zero_or_one(evaluation):
    inference = InferenceFactory(run=RunFactory(evaluation=evaluation))
    with pytest.raises(ValidationError, match="must be 0 or 1"):
        Feedback.objects.record(inference, "correct", 0.5)
    with pytest.raises(IntegrityError, match="takes 0 or 1"), transaction.atomic():
        Feedback.objects.create(inference=inference, metric="correct", value=0.5)
    assert Feedback.objects.record(inference, "similarity", 0.5).value == 0.5


def test_a_batch_with_one_bad_row_is_refused_whole_naming_that_row(evaluation):
    """Inserts are checked per statement: the first offending row is named and nothing is written."""
    run = RunFactory(evaluation=evaluation)
    inferences = [InferenceFactory(run=run) for _ in range(3)]
    rows = [Feedback(id=uuid7(), inference=inference, metric="correct", value=1.0) for inference in inferences]
    rows[1].value, rows[2].metric = 0.5, "tone"
    with pytest.raises(IntegrityError, match=f"feedback {rows[1].id}: boolean metric correct takes 0 or 1, not 0.5"), \
            transaction.atomic():
        Feedback.objects.bulk_create(rows)
    rows[1].value = 0.0
    with pytest.raises(IntegrityError, match=f"feedback {rows[2].id}: metric tone is not an evaluator"), \
            transaction.atomic():
        Feedback.objects.bulk_create(rows)
    assert not Feedback.objects.exists()
    good, foreign = DatapointFactory(dataset=evaluation.dataset, function=evaluation.function), DatapointFactory()
    batch = [Inference(id=uuid7(), run=RunFactory(evaluation=evaluation), datapoint=d, variant_name="v")
             for d in (good, foreign)]
    with pytest.raises(IntegrityError, match=f"inference {batch[1].id}: datapoint {foreign.id} is not in the "), \
            transaction.atomic():
        Inference.objects.bulk_create(batch)
    assert Inference.objects.count() == 3


def test_recording_feedback_appends_and_the_latest_wins(evaluation):
    inference = InferenceFactory(run=RunFactory(evaluation=evaluation))
    judge = FeedbackFactory(inference=inference, metric="correct", value=1.0)
    human = Feedback.objects.record(inference, "correct", 0.0, source="human", reason="wrong plan")
    assert Feedback.objects.filter(inference=inference).count() == 2
    winning = Feedback.objects.filter(inference=inference).winning()
    assert list(winning) == [human]
    judge.refresh_from_db()
    assert judge.value == 1.0  # history kept, never overwritten


def test_revise_inserts_a_new_version_and_stales_the_old_one_at_the_same_instant(evaluation):
    original = DatapointFactory(evaluation=evaluation, created=at(0), reference_output="old")
    new = original.revise(reference_output="new", when=at(10))
    original.refresh_from_db()
    assert new.pk != original.pk
    assert new.reference_output == "new" and original.reference_output == "old"
    assert new.supersedes == original
    assert original.staled_at == new.created_at == at(10)
    assert new.input == original.input and new.dataset_id == original.dataset_id
    assert Datapoint.objects.count() == 2


def test_revise_and_retire_refuse_a_stale_version(evaluation):
    original = DatapointFactory(evaluation=evaluation, created=at(0))
    original.revise(name="renamed", when=at(1))
    with pytest.raises(DatapointStaledError):
        Datapoint.objects.get(pk=original.pk).revise(name="again")
    with pytest.raises(DatapointStaledError):
        Datapoint.objects.get(pk=original.pk).retire()
    with pytest.raises(ValueError, match="cannot change dataset"):
        DatapointFactory(evaluation=evaluation).revise(dataset=None)


def test_retire_only_stales(evaluation):
    datapoint = DatapointFactory(evaluation=evaluation, created=at(0))
    datapoint.retire(when=at(5))
    datapoint.refresh_from_db()
    assert datapoint.staled_at == at(5)
    assert Datapoint.objects.filter(pk=datapoint.pk).exists()


def test_window_includes_versions_alive_at_the_instant(evaluation):
    first = DatapointFactory(evaluation=evaluation, created=at(0))
    second = first.revise(name="v2", when=at(10))
    gone = DatapointFactory(evaluation=evaluation, created=at(1))
    gone.retire(when=at(20))
    in_window = evaluation.datapoints().in_window
    assert set(in_window(at(5))) == {first, gone}
    assert set(in_window(at(10))) == {second, gone}  # edited exactly now: the new version only
    assert set(in_window(at(20))) == {second}  # deleted exactly now: gone
    assert set(in_window(at(0) - timedelta(milliseconds=1))) == set()


def test_run_time_is_the_id_time(evaluation):
    run = RunFactory(evaluation=evaluation, id=uuid7(at(42)))
    assert run.started_at == at(42)
    assert run.short_id == str(run.id)[-8:]  # the random tail, not the time prefix


def test_evaluator_pass_and_better_respect_optimize(evaluation):
    latency = EvaluatorFactory(evaluation=evaluation, name="latency", value_type="float", optimize="min", cutoff=2.0)
    assert latency.passes(1.5) and not latency.passes(2.5)
    assert latency.better(1.0, 2.0) == 1 and latency.better(3.0, 2.0) == -1 and latency.better(2.0, 2.0) == 0
    correct = Evaluator.objects.get(evaluation=evaluation, name="correct")
    assert correct.passes(1.0) and not correct.passes(0.0)
    assert correct.passes(None) is None


BAD_NAMES = ["team/alpha", "qa\n", "line\r\nbreak", "nul\x00", "tab\there", "a b", 'quote"', "é", ".", "..", "",
             "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_save_of_a_name_checks_it(evaluation, name):
    for create in (
        lambda: Function.objects.create(name=name),
        lambda: Dataset(name=name).save(),
        lambda: Evaluation.objects.create(name=name, function=evaluation.function, dataset=evaluation.dataset),
        lambda: Evaluator.objects.create(evaluation=evaluation, name=name, kind="custom", value_type="float"),
    ):
        with pytest.raises(ValidationError) as error:
            create()
        assert "name" in error.value.message_dict
    assert Evaluation.objects.count() == 1 and Evaluator.objects.count() == 2


def test_valid_names_save_and_a_rename_is_checked_too(evaluation):
    for name in ("qa.v2", "tensorzero::llm_judge", "a-b_c", "...x"):
        Function.objects.create(name=name)
    with pytest.raises(ValidationError):
        Dataset.objects.get_or_create(name="team/alpha")
    evaluation.name = "bad/name"
    with pytest.raises(ValidationError):
        evaluation.save()
    evaluation.description = "only the description"
    evaluation.save(update_fields=["description"])  # the name is not written, so not checked


@pytest.mark.parametrize("name, url", [("qa", "/evaluations/qa/"), ("with space", "/evaluations/with%20space/"),
                                       ("a/b", None), ("a\nb", None), ("..", None), ("", None)])
def test_comparison_url_is_none_for_a_name_no_url_can_carry(evaluation, name, url):
    evaluation.name = name  # as a row written before validation holds it
    assert evaluation.comparison_url == url


@pytest.mark.parametrize("prompt, problem", [
    ("Does the answer resolve the question?", "has no {output} placeholder"),
    ("Judge {input} against {reference}", "has no {output} placeholder"),
    ("Judge {OUTPUT}", "has no {output} placeholder"),
    ("Judge { output }", "has no {output} placeholder"),
    (["{output}"], "config.prompt must be text, not list"),
    (42, "config.prompt must be text, not int"),
])
def test_a_judge_prompt_without_the_output_is_refused(prompt, problem):
    evaluator = EvaluatorFactory.build(evaluation=EvaluationFactory(), name="judge", kind="llm_judge",
                                       config={"model": "m", "prompt": prompt})
    with pytest.raises(ValidationError) as error:
        evaluator.full_clean()
    assert problem in " ".join(error.value.message_dict["config"])


@pytest.mark.parametrize("config", [
    {"model": "m", "prompt": "Input {input}\nAnswer {output}\nReference {reference}"},
    {"model": "m", "prompt": "{output}"},
    {"model": "m", "prompt": ""},  # empty or absent: the default prompt, which has every placeholder
    {"model": "m"},
])
def test_a_judge_prompt_with_the_output_or_the_default_prompt_is_accepted(config):
    EvaluatorFactory.build(evaluation=EvaluationFactory(), name="judge", kind="llm_judge", config=config).full_clean()


def test_only_judges_have_their_prompt_checked():
    EvaluatorFactory.build(evaluation=EvaluationFactory(), name="custom", kind="custom", value_type="float",
                           config={"prompt": "not a judge prompt"}).full_clean()
