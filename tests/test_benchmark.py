"""`benchmark --scale tiny` runs in the suite: every key present and sane, data valid. No time is asserted."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from comparisons import benchmark, loadtest


@pytest.mark.django_db(transaction=True)
def test_tiny_benchmark_produces_every_key(tmp_path):
    target = tmp_path / "bench.json"
    original = connection.settings_dict["NAME"]
    out = StringIO()
    call_command("benchmark", "--scale", "tiny", "--json", str(target), "--no-progress", "--keep", stdout=out,
                 stderr=StringIO())
    try:
        results = json.loads(target.read_text())
        assert connection.settings_dict["NAME"] == original  # switched back to the test database
        for key in benchmark.JSON_KEYS:
            assert key in results, key
        assert results["scale"] == "tiny"
        assert results["datapoints"] > benchmark.SCALES["tiny"].datapoints  # edits add versions
        assert results["inferences"] > 1000 and results["feedback"] > 3 * 0.9 * results["inferences"] * 0.95
        for key in benchmark.JSON_KEYS[4:]:
            if key != "kept_tables_drift":
                assert results[key] > 0, key
        assert results["kept_tables_drift"] == 0  # the loader's rebuild and every write since are exact
        assert results["rows_to_floor_ratio"] == pytest.approx(results["rows_page1_ms"] / results["floor_ms"])
        assert results["deep_to_page1_ratio"] == pytest.approx(results["rows_deep_ms"] / results["rows_page1_ms"])
        assert results["runner_overhead_ratio"] == pytest.approx(results["runner_actual_s"] / results["runner_ideal_s"])
        assert results["runner_sync_overhead_ratio"] == pytest.approx(results["runner_sync_actual_s"]
                                                                      / results["runner_ideal_s"])
        assert results["runner_10k_ratio"] == pytest.approx(results["runner_10k_s"] / results["runner_10k_bare_s"])
        assert 30 < results["runner_10k_peak_rss_mb"] < 1000  # megabytes, as VmHWM and ru_maxrss are read
        assert results["launch_overhead_ratio"] == pytest.approx(results["launch_s"] / results["runner_actual_s"])
        assert 0 < results["launch_first_progress_s"] < results["launch_s"]
        assert "launch_overhead_ratio" in out.getvalue()
        assert results["export_rows"] == results["runs_compared"] * _rows_shown(results["runs_compared"])
        assert "rows_page1_ms" in out.getvalue() and "target" in out.getvalue()
        # The datapoint page's word diff of two different 10,000-word outputs, with its target.
        assert results["diff_10k_words_ms"] > 0 and results["diff_10k_words_similar_ms"] > 0
        assert "diff_10k_words_ms" in out.getvalue() and "≤ 300" in out.getvalue()
        assert 0 < results["filled_cells_page1"] and 0 < results["filled_cells_deep"] <= 100 * results["runs_compared"]
        _assert_generated_data_is_valid()
    finally:
        benchmark.drop_database(benchmark.database_name("tiny"), original)


def _rows_shown(runs_compared):
    """How many datapoints the comparison of the latest `runs_compared` runs shows."""
    original = connection.settings_dict["NAME"]
    benchmark.use_database(benchmark.database_name("tiny"), create=False)
    try:
        from comparisons.models import EvaluationRun
        from comparisons.queries import RowQuery, resolve_comparison, rows_queryset

        runs = list(EvaluationRun.objects.filter(evaluation__name=benchmark.EVALUATION).order_by("id")
                    .values_list("id", flat=True))[-runs_compared:]
        return rows_queryset(resolve_comparison(benchmark.EVALUATION, runs), RowQuery()).count()
    finally:
        benchmark.use_database(original, create=False)


def _assert_generated_data_is_valid():
    """The generated data obeys the model's constraints (the triggers were off while it loaded)."""
    original = connection.settings_dict["NAME"]
    benchmark.use_database(benchmark.database_name("tiny"), create=False)
    try:
        with connection.cursor() as cursor:
            cursor.execute("""
                SELECT count(*) FROM comparisons_inference i
                JOIN comparisons_evaluationrun r ON r.id = i.run_id
                JOIN comparisons_evaluation e ON e.id = r.evaluation_id
                JOIN comparisons_datapoint d ON d.id = i.datapoint_id
                WHERE d.dataset_id <> e.dataset_id OR d.function_id <> e.function_id""")
            assert cursor.fetchone()[0] == 0
            cursor.execute("""
                SELECT count(*) FROM comparisons_feedback f
                JOIN comparisons_inference i ON i.id = f.inference_id
                JOIN comparisons_evaluationrun r ON r.id = i.run_id
                LEFT JOIN comparisons_evaluator ev ON ev.evaluation_id = r.evaluation_id AND ev.name = f.metric
                WHERE ev.id IS NULL OR (ev.value_type = 'boolean' AND f.value NOT IN (0, 1))""")
            assert cursor.fetchone()[0] == 0
            cursor.execute("""SELECT count(*) FROM (SELECT run_id, datapoint_id FROM comparisons_inference
                              GROUP BY 1, 2 HAVING count(*) > 1) t""")
            assert cursor.fetchone()[0] == 0
            # Each inference's datapoint was in its run's window (time ≤ run time, not staled by then).
            run_time = "to_timestamp(('x' || left(replace(i.run_id::text, '-', ''), 12))::bit(48)::bigint / 1000.0)"
            created = "('x' || left(replace(d.id::text, '-', ''), 12))::bit(48)::bigint"
            run_ms = "('x' || left(replace(i.run_id::text, '-', ''), 12))::bit(48)::bigint"
            cursor.execute(f"""
                SELECT count(*) FROM comparisons_inference i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
                WHERE {created} > {run_ms} OR d.staled_at <= {run_time}""")
            assert cursor.fetchone()[0] == 0
            # The kept tables, built set-based after the load, equal what the triggers would keep.
            winning = """
                SELECT i.run_id, w.metric, i.datapoint_id, w.value FROM (
                    SELECT DISTINCT ON (f.inference_id, f.metric) f.inference_id, f.metric, f.value
                    FROM comparisons_feedback f ORDER BY f.inference_id, f.metric, f.id DESC) w
                JOIN comparisons_inference i ON i.id = w.inference_id
                JOIN comparisons_datapoint d ON d.id = i.datapoint_id
                WHERE comparisons_in_window(d.id, d.staled_at, i.run_id)"""
            kept = "SELECT run_id, metric, datapoint_id, value FROM comparisons_windowscore"
            cursor.execute(f"SELECT (SELECT count(*) FROM ({winning} EXCEPT {kept}) a), "
                           f"(SELECT count(*) FROM ({kept} EXCEPT {winning}) b), (SELECT count(*) FROM ({kept}) c)")
            missing, extra, total = cursor.fetchone()
            assert (missing, extra) == (0, 0) and total > 0
            cursor.execute("""
                SELECT count(*) FROM comparisons_evaluationrun r
                LEFT JOIN comparisons_runcoverage c ON c.run_id = r.id
                WHERE coalesce(c.inferences, 0) <> (
                    SELECT count(*) FROM comparisons_inference i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
                    WHERE i.run_id = r.id AND comparisons_in_window(d.id, d.staled_at, i.run_id))""")
            assert cursor.fetchone()[0] == 0
            cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'comparisons_%' AND tgenabled = 'D'")
            assert cursor.fetchone()[0] == 0  # triggers are back on after the load
    finally:
        benchmark.use_database(original, create=False)


def test_bad_arguments_are_refused():
    with pytest.raises(CommandError, match="--runs-compared"):
        call_command("benchmark", "--scale", "tiny", "--runs-compared", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="--runs-compared takes"):
        call_command("benchmark", "--scale", "tiny", "--runs-compared", "two", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_tiny_load_test_serves_logged_in_clients_through_gunicorn(tmp_path):
    """`--load-only` at a tiny size: gunicorn (DEBUG off) on loopback, every key, no errors. No time is asserted."""
    target = tmp_path / "load.json"
    original = connection.settings_dict["NAME"]
    out = StringIO()
    call_command("benchmark", "--scale", "tiny", "--load-only", "--load-clients", "3", "--load-seconds", "2",
                 "--load-workers", "2", "--json", str(target), "--no-progress", stdout=out, stderr=StringIO())
    assert connection.settings_dict["NAME"] == original
    results = json.loads(target.read_text())
    for key in loadtest.LOAD_KEYS:
        assert key in results, key
    assert results["load_errors"] == 0, results["load_error_examples"]
    assert results["load_requests"] >= 2 and results["load_requests_per_s"] > 0
    assert results["load_page_p95_ms"] > 0 and results["load_rows_p95_ms"] > 0
    assert results["load_server_cpu_ms_per_request"] > 0  # the workers' CPU time was read
    # Sampled from pg_stat_activity: the server's connections, one per sync worker (within workers × pool size).
    assert 1 <= results["load_db_connections_max"] <= 2
    assert "load_rows_p95_ms" in out.getvalue() and "≤ 800" in out.getvalue()
    assert "rows_page1_ms" not in out.getvalue()  # --load-only measures nothing else


def test_bad_load_arguments_are_refused():
    for option, value in (("--load-clients", "0"), ("--load-clients", "500"), ("--load-seconds", "3600"),
                          ("--load-workers", "0")):
        with pytest.raises(CommandError, match="--load-clients must be 1–200"):
            call_command("benchmark", "--scale", "tiny", "--load", option, value, stdout=StringIO())
