"""factory-boy factories for the domain; `Sequence` for values tests assert on."""

from datetime import UTC, datetime, timedelta

import factory
from django.contrib.auth import get_user_model

from comparisons.ids import uuid7
from comparisons.models import (
    Datapoint,
    Dataset,
    Evaluation,
    EvaluationRun,
    Evaluator,
    Feedback,
    Function,
    Inference,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """A fixed instant `minutes` after T0, for tests that place things in time."""
    return T0 + timedelta(minutes=minutes)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


class FunctionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Function

    name = factory.Sequence(lambda n: f"function_{n}")
    kind = Function.Kind.CHAT


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    name = factory.Sequence(lambda n: f"dataset_{n}")


class EvaluationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Evaluation

    name = factory.Sequence(lambda n: f"evaluation_{n}")
    function = factory.SubFactory(FunctionFactory)
    dataset = factory.SubFactory(DatasetFactory)


class EvaluatorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Evaluator

    evaluation = factory.SubFactory(EvaluationFactory)
    name = factory.Sequence(lambda n: f"metric_{n}")
    value_type = Evaluator.ValueType.BOOLEAN
    # Boolean metrics score exact matches; float metrics are custom scores with no declared range.
    kind = factory.LazyAttribute(lambda e: Evaluator.Kind.EXACT_MATCH if e.value_type == "boolean"
                                 else Evaluator.Kind.CUSTOM)
    optimize = Evaluator.Optimize.MAX


class DatapointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Datapoint

    class Params:
        evaluation = None
        created = None

    id = factory.LazyAttribute(lambda o: uuid7(o.created) if o.created else uuid7())
    dataset = factory.LazyAttribute(lambda o: o.evaluation.dataset if o.evaluation else DatasetFactory())
    function = factory.LazyAttribute(lambda o: o.evaluation.function if o.evaluation else FunctionFactory())
    name = factory.Sequence(lambda n: f"datapoint {n}")
    input = factory.Sequence(lambda n: {"messages": [{"role": "user", "content": f"question {n}"}]})
    reference_output = factory.Sequence(lambda n: f"answer {n}")


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EvaluationRun

    class Params:
        at = None

    id = factory.LazyAttribute(lambda o: uuid7(o.at) if o.at else uuid7())
    evaluation = factory.SubFactory(EvaluationFactory)
    variant_name = factory.Sequence(lambda n: f"variant_{n}")
    status = EvaluationRun.Status.COMPLETED


class InferenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Inference

    run = factory.SubFactory(RunFactory)
    # By default a datapoint that was in the dataset when the run ran (created at its run time).
    datapoint = factory.LazyAttribute(lambda o: DatapointFactory(evaluation=o.run.evaluation,
                                                                 created=o.run.started_at))
    id = factory.LazyAttribute(lambda o: uuid7(o.run.started_at))
    variant_name = factory.LazyAttribute(lambda o: o.run.variant_name)
    input = factory.LazyAttribute(lambda o: o.datapoint.input)
    output = factory.Sequence(lambda n: f"output {n}")
    latency_ms = 120.0


class FeedbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feedback

    inference = factory.SubFactory(InferenceFactory)
    metric = "correct"
    value = 1.0
    source = Feedback.Source.EVALUATOR


def qa_evaluation(datapoints: int) -> Evaluation:
    """Evaluation "qa" with an exact-match and a Levenshtein evaluator and `datapoints` questions
    ("question i" → "answer i", a millisecond apart): the runner's subprocess tests' data."""
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match")
    EvaluatorFactory(evaluation=evaluation, name="similar", kind="levenshtein", value_type="float")
    for i in range(datapoints):
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(milliseconds=i),
                         input={"question": f"question {i}"}, reference_output=f"answer {i}")
    return evaluation


INFERENCE_COLUMNS = ["id", "run_id", "datapoint_id", "input", "output", "variant_name", "variant_pinned", "latency_ms",
                     "input_tokens", "output_tokens", "cost", "error", "tags"]
FEEDBACK_COLUMNS = ["id", "inference_id", "metric", "value", "source", "reason", "tags"]


def bulk_scored_runs(evaluation: Evaluation, runs, datapoints: int, scores, *, start=None,
                     output=lambda run, i: f"answer {i} from {run.variant_name}") -> list[Datapoint]:
    """`datapoints` datapoints ("dp-000", … a second apart from `start`, default at(0)) and, for each run,
    an inference per datapoint (`output(run, i)`, default "answer i from <variant>"; 120 ms) with evaluator feedback
    `scores(run, i) -> {metric: value}`: written in a few statements, as the runner writes (COPY), so a
    test's data costs milliseconds rather than a factory's thousand saves."""
    from comparisons.bulk import copy_rows

    start = start or at(0)
    points = [DatapointFactory.build(evaluation=evaluation, created=start + timedelta(seconds=i), name=f"dp-{i:03d}")
              for i in range(datapoints)]
    Datapoint.objects.bulk_create(points)
    inferences, feedback = [], []
    for run in runs:
        for i, point in enumerate(points):
            inference_id = uuid7(run.started_at)
            inferences.append((inference_id, run.id, point.id, point.input, output(run, i),
                               run.variant_name, False, 120.0, None, None, None, None, {}))
            feedback += [(uuid7(run.started_at), inference_id, metric, value, "evaluator", "", {})
                         for metric, value in scores(run, i).items()]
    copy_rows(Inference, INFERENCE_COLUMNS, inferences)
    copy_rows(Feedback, FEEDBACK_COLUMNS, feedback)
    return points
