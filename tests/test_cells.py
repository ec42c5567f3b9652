"""One cell rule everywhere: the comparison rows, the datapoint page and the export show the same
winning scores for the same (datapoint, run), and nothing for a cell outside the run's window."""

import pytest

from comparisons.export import export_lines
from comparisons.ids import uuid7
from comparisons.models import Feedback
from comparisons.queries import Cell, comparison_page, datapoint_cells, resolve_comparison
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, InferenceFactory, RunFactory, at

pytestmark = pytest.mark.django_db


@pytest.fixture
def comparison():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="quality", value_type="float")
    runs = [RunFactory(evaluation=evaluation, id=uuid7(at(m))) for m in (100, 200, 300)]
    old = DatapointFactory(evaluation=evaluation, created=at(1))
    late = DatapointFactory(evaluation=evaluation, created=at(150))  # after the baseline ran
    retired = DatapointFactory(evaluation=evaluation, created=at(2))
    failing = DatapointFactory(evaluation=evaluation, created=at(3))
    for run in runs:
        for datapoint in (old, late, retired):
            inference = InferenceFactory(run=run, datapoint=datapoint)  # the baseline even has one for `late`
            Feedback.objects.create(inference=inference, metric="correct", value=float(run is not runs[1]))
            Feedback.objects.create(inference=inference, metric="quality", value=0.1 * runs.index(run))
        if run is not runs[2]:
            InferenceFactory(run=run, datapoint=failing, error="TimeoutError")
    # The newest feedback wins, a human correction included; an older one arriving late does not.
    corrected = old.inferences.get(run=runs[1])
    Feedback.objects.record(corrected, "quality", 0.9, source="human")
    Feedback.objects.create(id=uuid7(at(50)), inference=corrected, metric="quality", value=0.0)
    retired.retire(when=at(250))  # gone before the third run
    return resolve_comparison(evaluation, [r.id for r in runs])


def shown(cell: Cell):
    scores = {m: (s.value, s.source, s.vs_baseline) for m, s in cell.scores.items()}
    inference = cell.inference.id if cell.inference is not None and cell.state != Cell.OUT_OF_WINDOW else None
    return cell.state, inference, scores


def test_the_rows_the_datapoint_page_and_the_export_agree(comparison):
    page = comparison_page(comparison)
    assert len(page.rows) == 4
    exported = {}
    for line in export_lines(comparison):
        scores = {m: (line[m], line[f"{m}__source"]) for m in ("correct", "quality") if line[m] is not None}
        exported[(line["datapoint_id"], line["run_id"])] = (line["in_window"], line["inference_id"], scores)
    out_of_window = 0
    for row in page.rows:
        on_datapoint_page = datapoint_cells(comparison, row.datapoint)
        assert [shown(c) for c in on_datapoint_page] == [shown(c) for c in row.cells]
        for cell in row.cells:
            state, inference, scores = shown(cell)
            line = exported[(str(row.datapoint.id), str(cell.run.id))]
            assert line == (state != Cell.OUT_OF_WINDOW, str(inference) if inference else None,
                            {m: (v, s) for m, (v, s, _) in scores.items()})
            if state == Cell.OUT_OF_WINDOW:
                out_of_window += 1
                assert scores == {}
    assert out_of_window == 2  # `late` for the baseline, `retired` for the third run


def test_no_arrow_against_a_baseline_cell_outside_its_window(comparison):
    late = next(row for row in comparison_page(comparison).rows if row.cells[0].state == Cell.OUT_OF_WINDOW)
    for cells in (late.cells, datapoint_cells(comparison, late.datapoint)):
        assert all(score.vs_baseline is None for cell in cells for score in cell.scores.values())
        assert cells[1].scores["correct"].value == 0.0  # scored, just not compared


def test_the_winning_score_is_the_newest_feedback_on_every_page(comparison):
    row = next(r for r in comparison_page(comparison).rows if r.cells[1].scores.get("quality")
               and r.cells[1].scores["quality"].source == "human")
    assert row.cells[1].scores["quality"].value == 0.9
    assert datapoint_cells(comparison, row.datapoint)[1].scores["quality"].value == 0.9
