import csv
import io
import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from comparisons.ids import parse_uuid
from comparisons.models import Datapoint, Evaluation, EvaluationRun, Evaluator, Feedback, Function, Inference
from comparisons.queries import Cell, comparison_page, comparison_stats, resolve_comparison
from comparisons.stats import wald_interval, wilson_interval
from comparisons.tensorzero import import_tensorzero

pytestmark = pytest.mark.django_db
SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "tensorzero"
RUN1, RUN2 = "019e8084-13c0-700a-8000-000006b60b56", "019e809f-8b00-7015-8000-00000e17e49b"
NER_RUN = "019e80a8-b2c0-7037-8000-000024e93e59"


def counts():
    return [m.objects.count() for m in (Function, Evaluation, Evaluator, Datapoint, EvaluationRun, Inference, Feedback)]


def test_import_counts_and_reports(tmp_path):
    report = import_tensorzero(SAMPLE)
    assert report.imported == {"functions": 2, "datasets": 2, "evaluations": 2, "datapoints": 9,
                               "evaluation runs": 3, "inferences": 11, "evaluators": 4, "feedback": 23}
    assert report.skipped == {
        "inferences of TensorZero's own functions (e.g. LLM judges), not evaluated outputs": 1,
        "inferences outside any evaluation run (no tensorzero::evaluation_run_id tag)": 1,
        "inferences whose datapoint is not in the export": 1,
        "feedback whose inference is not in the export": 1,
        "feedback on metrics that are not evaluators (e.g. production feedback)": 1,
    }
    assert report.problems == ["chat_inference_examples.jsonl:3: not valid JSON: Invalid control character at "
                               "(column 39)"]
    assert {f.name: f.kind for f in Function.objects.all()} == {"answer_question": "chat", "extract_entities": "json"}
    assert {(e.evaluation.name, e.name, e.value_type) for e in Evaluator.objects.all()} == {
        ("qa_eval", "exact", "boolean"), ("qa_eval", "judge_score", "float"),
        ("ner_eval", "exact_entities", "boolean"), ("ner_eval", "f1", "float")}


def test_versions_ids_times_and_pins_are_preserved():
    import_tensorzero(SAMPLE)
    qa = Evaluation.objects.get(name="qa_eval")
    edited_old = Datapoint.objects.get(name="qa-2", staled_at__isnull=False)
    edited_new = Datapoint.objects.get(name="qa-2", staled_at__isnull=True)
    assert edited_old.staled_at == edited_new.created_at  # edited at +20 minutes
    deleted = Datapoint.objects.get(name="qa-3")
    assert deleted.staled_at is not None
    run1, run2 = EvaluationRun.objects.get(id=RUN1), EvaluationRun.objects.get(id=RUN2)
    assert (run1.variant_name, run2.variant_name) == ("gpt-small", "gpt-large")
    assert str(run1.started_at) == "2026-06-01 00:10:00+00:00"
    assert all(i.variant_pinned for i in run1.inferences.all())
    assert not any(i.variant_pinned for i in run2.inferences.all())
    assert run1.inferences.get(datapoint=Datapoint.objects.get(name="qa-1")).latency_ms == 300
    page = comparison_page(resolve_comparison(qa, [run1.id, run2.id]))
    states = {(row.datapoint.name, row.datapoint.staled_at is None): [c.state for c in row.cells] for row in page.rows}
    assert states[("qa-2", False)] == [Cell.OK, Cell.OUT_OF_WINDOW]
    assert states[("qa-2", True)] == [Cell.OUT_OF_WINDOW, Cell.OK]
    assert states[("qa-3", False)] == [Cell.OK, Cell.OUT_OF_WINDOW]
    assert states[("qa-5", True)] == [Cell.MISSING, Cell.OK]


def test_latest_feedback_wins_and_human_feedback_is_marked():
    import_tensorzero(SAMPLE)
    inference = Inference.objects.get(run_id=RUN2, datapoint__name="qa-5")
    history = list(Feedback.objects.filter(inference=inference, metric="exact").order_by("id"))
    assert [(f.value, f.source) for f in history] == [(0.0, "evaluator"), (1.0, "human")]
    assert Feedback.objects.filter(inference=inference, metric="exact").winning().get() == history[-1]


def test_numbers_match_tensorzero():
    import_tensorzero(SAMPLE)
    qa = resolve_comparison("qa_eval", [parse_uuid(RUN1), parse_uuid(RUN2)])
    stats = {(s.run.run.variant_name, m.evaluator.name): s for m in comparison_stats(qa).metrics for s in m.per_run}
    assert (stats["gpt-small", "exact"].n, stats["gpt-small", "exact"].mean) == (4, 0.5)
    assert stats["gpt-small", "exact"].ci == wilson_interval(2, 4)
    assert stats["gpt-small", "judge_score"].mean == pytest.approx(0.6)
    assert (stats["gpt-large", "exact"].n, stats["gpt-large", "exact"].mean) == (4, 1.0)
    assert stats["gpt-large", "judge_score"].mean == pytest.approx(0.85)
    ner = resolve_comparison("ner_eval", [parse_uuid(NER_RUN)])
    f1 = comparison_stats(ner).metrics[1].per_run[0]
    values = [1.0, 0.667, 1.0]
    expected = wald_interval(sum(values) / 3, (sum((v - sum(values) / 3) ** 2 for v in values) / 2) ** 0.5, 3)
    assert f1.mean == pytest.approx(sum(values) / 3) and f1.ci.low == pytest.approx(expected.low, abs=1e-6)

    out = StringIO()
    call_command("export_comparison", "qa_eval", "--run-ids", f"{RUN1},{RUN2}", "--summary", stdout=out)
    summary = {(r["variant"], r["metric"]): r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert float(summary["gpt-large", "exact"]["mean"]) == 1.0 and summary["gpt-large", "exact"]["n"] == "4"
    judge = stats["gpt-small", "judge_score"]
    assert float(summary["gpt-small", "judge_score"]["ci_low"]) == pytest.approx(judge.ci.low)


def test_importing_twice_changes_nothing():
    import_tensorzero(SAMPLE)
    before = counts()
    again = import_tensorzero(SAMPLE)
    assert counts() == before and again.imported == {}


def test_strict_aborts_with_nothing_imported():
    with pytest.raises(CommandError, match="chat_inference_examples.jsonl:3") as error:
        call_command("import_tensorzero", str(SAMPLE), "--strict", stdout=StringIO())
    assert error.value.returncode == 1
    assert counts() == [0] * 7


def test_command_prints_what_it_did_and_refuses_bad_folders(tmp_path):
    out = StringIO()
    call_command("import_tensorzero", str(SAMPLE), stdout=out)
    text = out.getvalue()
    assert "imported 11 inferences" in text and "skipped 1: feedback whose inference is not in the export" in text
    assert "malformed chat_inference_examples.jsonl:3" in text
    with pytest.raises(CommandError, match="not a folder") as error:
        call_command("import_tensorzero", str(tmp_path / "missing"), stdout=StringIO())
    assert error.value.returncode == 2
    with pytest.raises(CommandError, match="no TensorZero export files"):
        call_command("import_tensorzero", str(tmp_path), stdout=StringIO())


def test_a_later_export_stales_a_datapoint_deleted_since(tmp_path):
    import_tensorzero(SAMPLE)
    folder = tmp_path / "later"
    shutil.copytree(SAMPLE, folder)
    path = folder / "json_inference_datapoint_examples.jsonl"
    lines = path.read_text().splitlines()
    deleted = lines[0].replace('"is_deleted": false', '"is_deleted": true').replace(
        '"updated_at": "2026-06-01 00:30:00.000000"', '"updated_at": "2026-07-01 00:00:00.000000"')
    path.write_text("\n".join([*lines, deleted]) + "\n")
    report = import_tensorzero(folder)
    assert report.imported == {"datapoints staled since the last import": 1}
    assert Datapoint.objects.filter(dataset__name="ner_set", staled_at__isnull=False).count() == 1


def test_hostile_feedback_values_are_reported_per_line_and_skipped(tmp_path):
    export = tmp_path / "export"
    shutil.copytree(SAMPLE, export)
    import_tensorzero(export)
    Evaluator.objects.filter(name="judge_score").update(min_value=0, max_value=1)
    target = "019e8084-fe20-700b-8000-00000761d945"
    metric = "tensorzero::evaluation_name::qa_eval::evaluator_name::judge_score"
    ids = [f"019e8090-0000-7000-8000-0000000000{i:02d}" for i in range(1, 7)]
    values = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "7"]
    with (export / "float_metric_feedback_examples.jsonl").open("a") as file:
        for id_, value in zip(ids, values, strict=True):
            file.write(f'{{"id": "{id_}", "target_id": "{target}", "metric_name": "{metric}", "value": {value}, '
                       '"tags": {}}\n')
    before = Feedback.objects.count()
    report = import_tensorzero(export)
    lines = [p for p in report.problems if p.startswith("float_metric_feedback_examples.jsonl")]
    assert len(lines) == 6
    assert all("not a finite number" in p or "too large" in p.lower() or "overflow" in p.lower() for p in lines[:5])
    assert "'judge_score' takes values from 0 to 1; 7 is outside that range" in lines[5]
    assert Feedback.objects.count() == before
    with pytest.raises(CommandError, match="float_metric_feedback_examples.jsonl"):
        call_command("import_tensorzero", str(export), "--strict", stdout=StringIO())
    assert Feedback.objects.count() == before


def test_strict_aborts_on_a_value_outside_its_evaluators_range(tmp_path):
    export = tmp_path / "export"
    shutil.copytree(SAMPLE, export)
    chat = export / "chat_inference_examples.jsonl"
    chat.write_text("".join(line for n, line in enumerate(chat.read_text().splitlines(True), 1) if n != 3))
    import_tensorzero(export)
    Evaluator.objects.filter(name="judge_score").update(min_value=0, max_value=1)
    metric = "tensorzero::evaluation_name::qa_eval::evaluator_name::judge_score"
    with (export / "float_metric_feedback_examples.jsonl").open("a") as file:
        file.write(f'{{"id": "019e8090-0000-7000-8000-000000000077", "target_id": '
                   f'"019e8084-fe20-700b-8000-00000761d945", "metric_name": "{metric}", "value": -3, "tags": {{}}}}\n')
    before = counts()
    with pytest.raises(CommandError, match="takes values from 0 to 1; -3 is outside that range"):
        call_command("import_tensorzero", str(export), "--strict", stdout=StringIO())
    assert counts() == before


def _with_bad_lines(tmp_path):
    """The sample export plus lines a TensorZero export may hold but the portal cannot keep."""
    folder = tmp_path / "bad"
    shutil.copytree(SAMPLE, folder)

    def append(file, changes, line=0, raw=None):
        path = folder / file
        row = json.loads(path.read_text().splitlines()[line])
        for key, value in changes.items():
            if key.startswith("tags."):
                row["tags"][key.removeprefix("tags.")] = value
            else:
                row[key] = value
        with path.open("a") as out:
            out.write((raw or json.dumps)(row) + "\n")

    datapoints, inferences = "chat_inference_datapoint_examples.jsonl", "chat_inference_examples.jsonl"
    feedback = "float_metric_feedback_examples.jsonl"
    append(datapoints, {"id": "019e807a-ec00-7001-8000-0000000000f1", "dataset_name": "team/qa"})
    append(datapoints, {"id": "019e807a-ec00-7001-8000-0000000000f2", "function_name": "answer\r\nquestion"})
    append(datapoints, {"id": "019e807a-ec00-7001-8000-0000000000f3", "input": '{"messages": ["a\\u0000"]}'})
    append(inferences, {"id": "019e8084-fe20-700b-8000-0000000000f4", "tags.tensorzero::evaluation_name": "qa eval"})
    append(inferences, {"id": "019e8084-fe20-700b-8000-0000000000f5", "output": "[NaN]"})
    append(inferences, {"id": "019e8084-fe20-700b-8000-0000000000f6", "processing_time_ms": -5})
    append(inferences, {"id": "ffffffff-ffff-7fff-bfff-ffffffffffff"})
    append(inferences, {"id": "019e8084-fe20-700b-8000-0000000000f7", "variant_name": "gpt\x00small"})
    append(feedback, {"id": "019e8086-d2e0-7024-8000-0000000000f8",
                      "metric_name": "tensorzero::evaluation_name::qa_eval::evaluator_name::judge/score"})
    append(feedback, {"id": "019e8086-d2e0-7024-8000-0000000000f9", "value": float("nan")})
    return folder


BAD_LINE_PROBLEMS = [
    "chat_inference_examples.jsonl:13: tag tensorzero::evaluation_name 'qa eval' is not allowed: Use letters, "
    "digits and _ . : - only, and not only dots (the name appears in URLs and file names).",
    "chat_inference_examples.jsonl:14: output holds NaN, which JSON cannot represent (use null or a string)",
    "chat_inference_examples.jsonl:15: processing_time_ms is not a non-negative number: '-5'",
    "chat_inference_examples.jsonl:16: id ffffffff-ffff-7fff-bfff-ffffffffffff carries no time before year 10000 "
    "(a UUIDv7 is expected)",
    "chat_inference_examples.jsonl:17: variant_name contains a NUL character (U+0000), which cannot be stored",
    "chat_inference_datapoint_examples.jsonl:9: dataset_name 'team/qa' is not allowed: Use letters, digits and "
    "_ . : - only, and not only dots (the name appears in URLs and file names).",
    "chat_inference_datapoint_examples.jsonl:10: function_name 'answer\\r\\nquestion' is not allowed: Use letters, "
    "digits and _ . : - only, and not only dots (the name appears in URLs and file names).",
    "chat_inference_datapoint_examples.jsonl:11: input has a string that contains a NUL character (U+0000), which "
    "cannot be stored",
    "float_metric_feedback_examples.jsonl:13: the evaluator in metric_name 'judge/score' is not allowed: Use "
    "letters, digits and _ . : - only, and not only dots (the name appears in URLs and file names).",
    "float_metric_feedback_examples.jsonl:14: feedback value nan is not a finite number",
]


def test_bad_names_and_unstorable_values_are_reported_per_line_and_skipped(tmp_path):
    report = import_tensorzero(_with_bad_lines(tmp_path))
    assert report.problems[1:] == BAD_LINE_PROBLEMS  # [0] is the sample's own malformed line
    assert report.imported == {"functions": 2, "datasets": 2, "evaluations": 2, "datapoints": 9,
                               "evaluation runs": 3, "inferences": 11, "evaluators": 4, "feedback": 23}
    assert sorted(Function.objects.values_list("name", flat=True)) == ["answer_question", "extract_entities"]


def test_strict_aborts_on_a_bad_name(tmp_path):
    with pytest.raises(CommandError, match="team/qa") as error:
        call_command("import_tensorzero", str(_with_bad_lines(tmp_path)), "--strict", stdout=StringIO())
    assert error.value.returncode == 1
    assert counts() == [0] * 7
