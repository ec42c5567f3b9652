"""Feedback inserts are rescored once per statement, set-based, instead of row by row.

A runner batch, an import or any multi-row INSERT/COPY of feedback now fires one statement-level
trigger (comparisons_feedback_inserted) that applies every touched cell's change to the kept tables
in four statements (comparisons_scores_changed); updates and deletes keep the row trigger. The
per-row rule function comparisons_score_changed becomes the one-entry case of the set function.
Going back restores the row trigger for inserts and the previous comparisons_score_changed (their
texts as this migration replaced them, below: reverse SQL, not live definitions).
"""

from django.db import migrations

from comparisons.sqlfunctions import all_sql

# The files this migration applied (tests/test_sql_functions.py): a later change needs a new migration.
SQL_FINGERPRINT = "d602753b37c6ac28"

PREVIOUS_SCORE_CHANGED = "-- One in-window winning score of (run r, metric m, datapoint d) appears (old NULL), changes, or goes\n-- (new NULL): adjust WindowScore, the run's RunMetricSummary and every cached PairedSummary the run\n-- takes part in, as the compared run or as the baseline. Sums are numeric, so adding and removing\n-- values never loses a digit to cancellation, whatever their magnitudes. The caller holds\n-- comparisons_lock_dataset for the run's dataset.\nCREATE OR REPLACE FUNCTION comparisons_score_changed(\n    r uuid, m text, d uuid, old_value double precision, new_value double precision,\n    old_human boolean, new_human boolean\n) RETURNS void LANGUAGE plpgsql AS $$\nDECLARE\n    v_was numeric := comparisons_exact(old_value);\n    v_now numeric := comparisons_exact(new_value);\nBEGIN\n    IF old_value IS NOT DISTINCT FROM new_value AND old_human IS NOT DISTINCT FROM new_human THEN\n        RETURN;\n    END IF;\n    IF new_value IS NULL THEN\n        DELETE FROM comparisons_windowscore WHERE run_id = r AND metric = m AND datapoint_id = d;\n    ELSE\n        INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value, human)\n        VALUES (r, m, d, new_value, new_human)\n        ON CONFLICT (run_id, metric, datapoint_id) DO UPDATE SET value = excluded.value, human = excluded.human;\n    END IF;\n    INSERT INTO comparisons_runmetricsummary AS s (run_id, metric, n, total, total_sq, overrides)\n    VALUES (r, m, (new_value IS NOT NULL)::int - (old_value IS NOT NULL)::int,\n            coalesce(v_now, 0) - coalesce(v_was, 0), coalesce(v_now * v_now, 0) - coalesce(v_was * v_was, 0),\n            coalesce(new_human::int, 0) - coalesce(old_human::int, 0))\n    ON CONFLICT (run_id, metric) DO UPDATE SET n = s.n + excluded.n, total = s.total + excluded.total,\n        total_sq = s.total_sq + excluded.total_sq, overrides = s.overrides + excluded.overrides;\n    IF old_value IS NOT DISTINCT FROM new_value THEN\n        RETURN;  -- only who scored it changed\n    END IF;\n    -- Every cached pair r takes part in, as the compared run (its value minus the baseline's on d) or\n    -- as the baseline (the run's value minus r's), in one statement. comparisons_exact keeps the order\n    -- of floats, so the sign of the exact difference says higher, lower or the same.\n    UPDATE comparisons_pairedsummary p SET\n        n = p.n + (c.d_now IS NOT NULL)::int - (c.d_was IS NOT NULL)::int,\n        total = p.total + coalesce(c.d_now, 0) - coalesce(c.d_was, 0),\n        total_sq = p.total_sq + coalesce(c.d_now * c.d_now, 0) - coalesce(c.d_was * c.d_was, 0),\n        higher = p.higher + coalesce((c.d_now > 0)::int, 0) - coalesce((c.d_was > 0)::int, 0),\n        lower = p.lower + coalesce((c.d_now < 0)::int, 0) - coalesce((c.d_was < 0)::int, 0),\n        same = p.same + coalesce((c.d_now = 0)::int, 0) - coalesce((c.d_was = 0)::int, 0)\n    FROM (\n        SELECT q.id, v_now - comparisons_exact(b.value) AS d_now, v_was - comparisons_exact(b.value) AS d_was\n        FROM comparisons_pairedsummary q\n        JOIN comparisons_windowscore b ON b.run_id = q.baseline_id AND b.metric = m AND b.datapoint_id = d\n        WHERE q.run_id = r AND q.metric = m\n        UNION ALL\n        SELECT q.id, comparisons_exact(s.value) - v_now, comparisons_exact(s.value) - v_was\n        FROM comparisons_pairedsummary q\n        JOIN comparisons_windowscore s ON s.run_id = q.run_id AND s.metric = m AND s.datapoint_id = d\n        WHERE q.baseline_id = r AND q.metric = m\n    ) c\n    WHERE p.id = c.id;\nEND $$;\n"

PREVIOUS_FEEDBACK_RESCORE = "-- Any feedback written, changed or deleted, by any writer, in any statement: rescore its cell.\nCREATE OR REPLACE FUNCTION comparisons_feedback_rescore() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    IF TG_OP IN ('UPDATE', 'DELETE') THEN\n        PERFORM comparisons_rescore(OLD.inference_id, OLD.metric);\n    END IF;\n    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND (NEW.inference_id, NEW.metric) <> (OLD.inference_id, OLD.metric)) THEN\n        PERFORM comparisons_rescore(NEW.inference_id, NEW.metric);\n    END IF;\n    RETURN NULL;\nEND $$;\n\nDROP TRIGGER IF EXISTS comparisons_feedback_rescore ON comparisons_feedback;\nCREATE TRIGGER comparisons_feedback_rescore AFTER INSERT OR UPDATE OR DELETE ON comparisons_feedback\nFOR EACH ROW EXECUTE FUNCTION comparisons_feedback_rescore();\n"

BACKWARD = (
    "DROP TRIGGER IF EXISTS comparisons_feedback_inserted ON comparisons_feedback;\n"
    "DROP FUNCTION IF EXISTS comparisons_feedback_inserted();\n"
    + PREVIOUS_SCORE_CHANGED + PREVIOUS_FEEDBACK_RESCORE
    + "DROP FUNCTION IF EXISTS comparisons_scores_changed(uuid[], text[], uuid[], double precision[], "
    "double precision[], boolean[], boolean[]);\n"
)


class Migration(migrations.Migration):

    dependencies = [
        ("comparisons", "0011_run_heartbeat"),
    ]

    operations = [
        migrations.RunSQL(all_sql(), BACKWARD),
    ]
