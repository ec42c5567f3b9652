"""Import a TensorZero ClickHouse export (JSONEachRow, one file per table) into evalcompare.

Files read (TensorZero's table names): chat/json_inference_examples.jsonl (ChatInference,
JsonInference), chat/json_inference_datapoint_examples.jsonl (ChatInferenceDatapoint,
JsonInferenceDatapoint), boolean/float_metric_feedback_examples.jsonl (BooleanMetricFeedback,
FloatMetricFeedback). Mapping:

- Evaluation runs are the distinct `tensorzero::evaluation_run_id` tags on inferences whose function
  does not start with `tensorzero::` (LLM-judge inferences do); the evaluation, dataset and datapoint
  come from the `tensorzero::evaluation_name`, `tensorzero::dataset_name`, `tensorzero::datapoint_id` tags.
- Metric `tensorzero::evaluation_name::<evaluation>::evaluator_name::<evaluator>` becomes evaluator
  `<evaluator>`, boolean or float by its table. Other metrics are not evaluators: counted, skipped.
- Datapoint tables are ReplacingMergeTree(updated_at, is_deleted): for each id the row with the
  latest `updated_at` wins; `is_deleted` stales the datapoint at `staled_at` or else `updated_at`.
- Ids (hence times), `staled_at`, `processing_time_ms` (latency) and `tensorzero::variant_pinned` are kept.

Nothing is guessed: feedback whose inference is not in the export (or the database), inferences whose
datapoint is not, and malformed lines are counted and reported. A line is malformed when it is not
a JSON object with the table's columns, or holds what the portal cannot keep: a function, dataset,
evaluation or evaluator name that NAME_VALIDATOR refuses (they appear in URLs and file names), an id
without a time before year 10000, NUL in text, NaN or Infinity, a negative latency. One transaction; ids already
present are left alone, so importing the same files twice changes nothing.
"""

import json
import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from comparisons.bulk import copy_rows
from comparisons.ids import parse_uuid, uuid7_time
from comparisons.models import Datapoint, Dataset, Evaluation, EvaluationRun, Evaluator, Feedback, Function, Inference
from comparisons.validation import json_problem, text_problem

FILES = {
    "chat_inference_examples.jsonl": ("inference", "chat"),
    "json_inference_examples.jsonl": ("inference", "json"),
    "chat_inference_datapoint_examples.jsonl": ("datapoint", "chat"),
    "json_inference_datapoint_examples.jsonl": ("datapoint", "json"),
    "boolean_metric_feedback_examples.jsonl": ("feedback", "boolean"),
    "float_metric_feedback_examples.jsonl": ("feedback", "float"),
}
REQUIRED = {
    "inference": ("id", "function_name", "variant_name", "output"),
    "datapoint": ("id", "dataset_name", "function_name", "input"),
    "feedback": ("id", "target_id", "metric_name", "value"),
}
METRIC_PREFIX = "tensorzero::evaluation_name::"
METRIC_SEPARATOR = "::evaluator_name::"
MAX_PROBLEMS_SHOWN = 50


class ImportAborted(Exception):
    """--strict found malformed lines: nothing was imported."""

    def __init__(self, problems):
        super().__init__(f"{len(problems)} malformed line(s); nothing was imported")
        self.problems = problems


@dataclass
class ImportReport:
    files: list[str] = field(default_factory=list)
    imported: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # "file:line: what is wrong"

    def lines(self) -> list[str]:
        out = [f"Read {', '.join(self.files)}."]
        out += [f"  imported {count} {what}" for what, count in self.imported.items()]
        if not self.imported:
            out.append("  nothing new to import")
        out += [f"  skipped {count}: {why}" for why, count in self.skipped.items()]
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        out += [f"  malformed {problem}" for problem in shown]
        if len(self.problems) > len(shown):
            out.append(f"  … and {len(self.problems) - len(shown)} more malformed lines")
        return out


def _json_field(value, column):
    """ClickHouse String columns hold JSON as text; accept decoded JSON too. Refuses what jsonb cannot store."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError as error:
            raise ValueError(f"{column} is not valid JSON: {error}") from error
    if problem := json_problem(value):
        raise ValueError(f"{column} {problem}")
    return value


def _name(model, value, column):
    """`value` if it is an allowed name for `model` (NAME_VALIDATOR, length), else ValueError naming it."""
    if not isinstance(value, str):
        raise ValueError(f"{column} is not a string: {str(value)[:60]!r}")
    try:
        model._meta.get_field("name").clean(value, None)
    except ValidationError as error:
        raise ValueError(f"{column} {value[:60]!r} is not allowed: {' '.join(error.messages)}") from error
    return value


def _text(value, column, max_length=None):
    if not isinstance(value, str):
        raise ValueError(f"{column} is not a string: {str(value)[:60]!r}")
    if problem := text_problem(value):
        raise ValueError(f"{column} {problem}")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{column} is longer than {max_length} characters")
    return value


def _latency(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"processing_time_ms is not a non-negative number: {str(value)[:60]!r}")
    return value


def _timestamp(value) -> datetime | None:
    """ClickHouse DateTime64 as JSON ('2026-06-01 00:20:00.000000', UTC) or ISO 8601."""
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace(" ", "T").replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _uuid(value, name):
    parsed = parse_uuid(value) if value is not None else None
    if parsed is None:
        raise ValueError(f"{name} is not a UUID: {str(value)[:60]!r}")
    try:
        uuid7_time(parsed)  # ids carry their creation time; pages show it
    except (ValueError, OverflowError) as error:
        raise ValueError(f"{name} {parsed} carries no time before year 10000 (a UUIDv7 is expected)") from error
    return parsed


def read_export(directory: Path, report: ImportReport) -> dict[str, list[dict]]:
    """Parse the known files into validated rows per kind; malformed lines go to `report.problems`."""
    rows = defaultdict(list)
    for name, (kind, flavour) in FILES.items():
        path = directory / name
        if not path.exists():
            continue
        report.files.append(name)
        with path.open(encoding="utf-8") as file:
            for number, text in enumerate(file, 1):
                if not text.strip():
                    continue
                try:
                    try:
                        row = json.loads(text)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"not valid JSON: {error.msg} (column {error.colno})") from error
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                    missing = [k for k in REQUIRED[kind] if k not in row]
                    if missing:
                        raise ValueError(f"missing {', '.join(missing)}")
                    rows[kind].append({**_clean(kind, flavour, row), "where": f"{name}:{number}"})
                except (ValueError, TypeError, OverflowError) as error:
                    report.problems.append(f"{name}:{number}: {error}")
                except RecursionError:
                    report.problems.append(f"{name}:{number}: JSON nested too deeply")
    return rows


def _clean(kind, flavour, row) -> dict:
    tags = row.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValueError("tags is not a map")
    if problem := json_problem(tags):
        raise ValueError(f"tags {problem}")
    if kind == "datapoint":
        return {"id": _uuid(row["id"], "id"), "kind": flavour,
                "dataset": _name(Dataset, row["dataset_name"], "dataset_name"),
                "function": _name(Function, row["function_name"], "function_name"),
                "input": _json_field(row["input"], "input"), "output": _json_field(row.get("output"), "output"),
                "tags": tags, "name": _text(row.get("name") or "", "name", 200),
                "is_deleted": bool(row.get("is_deleted")), "updated_at": _timestamp(row.get("updated_at")),
                "staled_at": _timestamp(row.get("staled_at"))}
    if kind == "inference":
        function = _text(row["function_name"], "function_name")
        if not function.startswith("tensorzero::"):  # TensorZero's own functions are skipped, not created
            _name(Function, function, "function_name")
            for tag, model in (("tensorzero::evaluation_name", Evaluation), ("tensorzero::dataset_name", Dataset)):
                if tags.get(tag) is not None:
                    _name(model, tags[tag], f"tag {tag}")
        return {"id": _uuid(row["id"], "id"), "kind": flavour, "function": function,
                "variant": _text(row["variant_name"], "variant_name", 200),
                "input": _json_field(row.get("input"), "input"), "output": _json_field(row["output"], "output"),
                "latency_ms": _latency(row.get("processing_time_ms")), "tags": tags}
    value = row["value"]
    if flavour == "boolean":
        if not isinstance(value, bool) and value not in (0, 1):
            raise ValueError(f"boolean feedback value {value!r}")
        value = float(bool(value))
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"float feedback value {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"feedback value {value!r} is not a finite number")
    metric = _text(row["metric_name"], "metric_name")
    if metric.startswith(METRIC_PREFIX) and METRIC_SEPARATOR in metric:
        evaluation_name, evaluator_name = metric[len(METRIC_PREFIX):].split(METRIC_SEPARATOR, 1)
        _name(Evaluation, evaluation_name, "the evaluation in metric_name")
        _name(Evaluator, evaluator_name, "the evaluator in metric_name")
    return {"id": _uuid(row["id"], "id"), "kind": flavour, "target": _uuid(row["target_id"], "target_id"),
            "metric": metric, "value": float(value), "tags": tags}


def _latest_versions(rows):
    """ReplacingMergeTree semantics: per id, the row with the greatest updated_at."""
    latest = {}
    for row in rows:
        current = latest.get(row["id"])
        stamp = row["updated_at"] or datetime.min.replace(tzinfo=UTC)
        if current is None or stamp >= (current["updated_at"] or datetime.min.replace(tzinfo=UTC)):
            latest[row["id"]] = row
    return latest


def _existing(model, ids) -> set:
    found, ids = set(), list(ids)
    for start in range(0, len(ids), 5000):
        found |= set(model.objects.filter(id__in=ids[start:start + 5000]).values_list("id", flat=True))
    return found


def import_tensorzero(directory: Path | str, *, strict: bool = False) -> ImportReport:
    """Import the export in `directory`; see the module docstring. Raises ImportAborted with --strict."""
    directory = Path(directory)
    report = ImportReport()
    rows = read_export(directory, report)
    if not report.files:
        raise FileNotFoundError(f"no TensorZero export files in {directory} (expected any of: {', '.join(FILES)})")
    if strict and report.problems:
        raise ImportAborted(report.problems)
    with transaction.atomic():
        _import(rows, report)
        if strict and report.problems:  # values refused by their evaluator: nothing is kept
            raise ImportAborted(report.problems)
    return report


def _import(rows, report: ImportReport):
    skipped = report.skipped
    datapoints = _latest_versions(rows["datapoint"])

    evaluation_inferences = []
    for row in rows["inference"]:
        if row["function"].startswith("tensorzero::"):
            skipped["inferences of TensorZero's own functions (e.g. LLM judges), not evaluated outputs"] += 1
        elif "tensorzero::evaluation_run_id" not in row["tags"]:
            skipped["inferences outside any evaluation run (no tensorzero::evaluation_run_id tag)"] += 1
        else:
            evaluation_inferences.append(row)

    # Functions, datasets, evaluations.
    function_kinds = {}
    for row in [*datapoints.values(), *evaluation_inferences]:
        function_kinds.setdefault(row["function"], row["kind"])
    functions = {}
    for name, kind in function_kinds.items():
        function, created = Function.objects.get_or_create(name=name, defaults={"kind": kind})
        functions[name] = function
        report.imported["functions"] += created
    dataset_names = {row["dataset"] for row in datapoints.values()} | {
        row["tags"].get("tensorzero::dataset_name") for row in evaluation_inferences} - {None}
    datasets = {}
    for name in dataset_names:
        datasets[name], created = Dataset.objects.get_or_create(name=name)
        report.imported["datasets"] += created

    evaluations = {}
    for row in evaluation_inferences:
        name = row["tags"].get("tensorzero::evaluation_name")
        dataset = row["tags"].get("tensorzero::dataset_name")
        if not name or not dataset:
            continue
        if name in evaluations:
            continue
        evaluation, created = Evaluation.objects.get_or_create(
            name=name, defaults={"function": functions[row["function"]], "dataset": datasets[dataset],
                                 "description": "Imported from TensorZero."})
        if (evaluation.function.name, evaluation.dataset.name) != (row["function"], dataset):
            evaluations[name] = None  # exists with another function or dataset: not merged
            continue
        evaluations[name] = evaluation
        report.imported["evaluations"] += created

    # Datapoints: new ids inserted, known ids get their (newer) stale time.
    existing = {d.id: d for d in Datapoint.objects.filter(id__in=list(datapoints)).only("id", "staled_at")}
    new_datapoints = []
    for row in datapoints.values():
        staled_at = row["staled_at"] or (row["updated_at"] if row["is_deleted"] else None)
        if row["id"] in existing:
            if existing[row["id"]].staled_at != staled_at and staled_at is not None:
                Datapoint.objects.filter(id=row["id"]).update(staled_at=staled_at)
                report.imported["datapoints staled since the last import"] += 1
            continue
        new_datapoints.append((row["id"], datasets[row["dataset"]].id, functions[row["function"]].id, row["name"],
                               row["input"], row["output"], row["tags"], staled_at))
    report.imported["datapoints"] += copy_rows(
        Datapoint, ["id", "dataset_id", "function_id", "name", "input", "reference_output", "tags", "staled_at"],
        new_datapoints)

    # Runs and inferences.
    known_datapoints = {row["id"]: (row["dataset"], row["function"]) for row in datapoints.values()}
    referenced = {parse_uuid(r["tags"].get("tensorzero::datapoint_id")) for r in evaluation_inferences} - {None}
    for dp in Datapoint.objects.filter(id__in=list(referenced - set(known_datapoints))).select_related(
            "dataset", "function"):
        known_datapoints[dp.id] = (dp.dataset.name, dp.function.name)
    runs: dict[uuid.UUID, list] = defaultdict(list)
    for row in evaluation_inferences:
        tags = row["tags"]
        run_id = parse_uuid(tags.get("tensorzero::evaluation_run_id"))
        datapoint_id = parse_uuid(tags.get("tensorzero::datapoint_id"))
        evaluation = evaluations.get(tags.get("tensorzero::evaluation_name"))
        if run_id is None or evaluation is None:
            skipped["inferences with a malformed evaluation tag, or of an evaluation that exists here with "
                    "another function or dataset"] += 1
        elif datapoint_id not in known_datapoints:
            skipped["inferences whose datapoint is not in the export"] += 1
        elif known_datapoints[datapoint_id] != (evaluation.dataset.name, evaluation.function.name):
            skipped["inferences whose datapoint is in another dataset or function than their evaluation's"] += 1
        else:
            runs[run_id].append((row, datapoint_id, evaluation))

    existing_runs = _existing(EvaluationRun, runs)
    existing_inferences = _existing(Inference, [row["id"] for members in runs.values() for row, _, _ in members])
    new_inferences = []
    inference_evaluation = {}
    for run_id, members in runs.items():
        evaluation = members[0][2]
        if run_id not in existing_runs:
            variant = Counter(row["variant"] for row, _, _ in members).most_common(1)[0][0]
            EvaluationRun.objects.create(
                id=run_id, evaluation=evaluation, variant_name=variant, status=EvaluationRun.Status.COMPLETED,
                config={"source": "tensorzero"}, finished_at=max(uuid7_time(row["id"]) for row, _, _ in members))
            report.imported["evaluation runs"] += 1
        seen = set()
        for row, datapoint_id, _ in members:
            inference_evaluation[row["id"]] = evaluation
            if row["id"] in existing_inferences:
                continue
            if datapoint_id in seen:
                skipped["second inferences of a run for the same datapoint"] += 1
                continue
            seen.add(datapoint_id)
            new_inferences.append((row["id"], run_id, datapoint_id, row["input"], row["output"], row["variant"],
                                   row["tags"].get("tensorzero::variant_pinned") == "true", row["latency_ms"],
                                   row["tags"]))
    report.imported["inferences"] += copy_rows(
        Inference, ["id", "run_id", "datapoint_id", "input", "output", "variant_name", "variant_pinned", "latency_ms",
                    "tags"], new_inferences)

    # Evaluators and feedback.
    targets = {row["target"] for row in rows["feedback"]} - set(inference_evaluation)
    for inference in Inference.objects.filter(id__in=list(targets)).select_related("run__evaluation"):
        inference_evaluation[inference.id] = inference.run.evaluation
    evaluators = {(e.evaluation_id, e.name): e for e in Evaluator.objects.filter(
        evaluation__in={e.id for e in evaluations.values() if e})}
    existing_feedback = _existing(Feedback, [row["id"] for row in rows["feedback"]])
    new_feedback = []
    for row in rows["feedback"]:
        metric = row["metric"]
        evaluation = inference_evaluation.get(row["target"])
        if evaluation is None:
            skipped["feedback whose inference is not in the export"] += 1
            continue
        if not metric.startswith(METRIC_PREFIX) or METRIC_SEPARATOR not in metric:
            skipped["feedback on metrics that are not evaluators (e.g. production feedback)"] += 1
            continue
        evaluation_name, evaluator_name = metric[len(METRIC_PREFIX):].split(METRIC_SEPARATOR, 1)
        if evaluation_name != evaluation.name:
            skipped["feedback naming another evaluation than its inference's"] += 1
            continue
        evaluator = evaluators.get((evaluation.id, evaluator_name))
        if evaluator is None:
            evaluator = Evaluator.objects.create(
                evaluation=evaluation, name=evaluator_name, kind=Evaluator.Kind.CUSTOM, value_type=row["kind"],
                config={"imported_from": "tensorzero", "metric_name": metric})
            evaluators[(evaluation.id, evaluator_name)] = evaluator
            report.imported["evaluators"] += 1
        if evaluator.value_type != row["kind"]:
            skipped["feedback whose table (boolean/float) disagrees with its evaluator's type"] += 1
            continue
        problem = evaluator.value_problem(row["value"])
        if problem:
            report.problems.append(f"{row['where']}: {problem}")
            continue
        if row["id"] in existing_feedback:
            continue
        human = row["tags"].get("tensorzero::human_feedback") == "true"
        new_feedback.append((row["id"], row["target"], evaluator_name, row["value"],
                             Feedback.Source.HUMAN if human else Feedback.Source.EVALUATOR, "", row["tags"]))
    report.imported["feedback"] += copy_rows(
        Feedback, ["id", "inference_id", "metric", "value", "source", "reason", "tags"], new_feedback)
    for key in [k for k, v in report.imported.items() if not v]:
        del report.imported[key]
