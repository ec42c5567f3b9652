"""Keep RunMetricSummary right for every writer, and fill it for existing data.

- comparisons_uuid7_ms / comparisons_in_window: the window rule of DESIGN.md in SQL.
- BEFORE INSERT on feedback: rows inserted earlier by the same statement are visible and this one is
  not yet, so the previous winner of (inference, metric) is known; when the new row is newer it
  replaces the winner's contribution (n, Σ, Σ²) — only for datapoints in the run's window.
- AFTER UPDATE OF staled_at on datapoints: if a stale time moves across a run's time (a back-dated
  delete), that run's window changed: recompute it.
- comparisons_refresh_all_run_summaries(): a set-based rebuild (backfill, bulk loads).
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION comparisons_uuid7_ms(u uuid) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ('x' || left(replace(u::text, '-', ''), 12))::bit(48)::bigint
$$;

CREATE FUNCTION comparisons_in_window(datapoint uuid, staled timestamptz, run uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT comparisons_uuid7_ms(datapoint) <= comparisons_uuid7_ms(run)
       AND (staled IS NULL OR staled > timestamptz 'epoch' + comparisons_uuid7_ms(run) * interval '1 millisecond')
$$;

CREATE FUNCTION comparisons_refresh_run_summary(target uuid) RETURNS void LANGUAGE sql AS $$
    DELETE FROM comparisons_runmetricsummary WHERE run_id = target;
    INSERT INTO comparisons_runmetricsummary (run_id, metric, n, total, total_sq)
    SELECT i.run_id, w.metric, count(*), sum(w.value), sum(w.value * w.value)
    FROM comparisons_inference i
    JOIN comparisons_datapoint d ON d.id = i.datapoint_id
    JOIN LATERAL (
        SELECT DISTINCT ON (f.metric) f.metric, f.value FROM comparisons_feedback f
        WHERE f.inference_id = i.id ORDER BY f.metric, f.id DESC
    ) w ON true
    WHERE i.run_id = target AND comparisons_in_window(d.id, d.staled_at, i.run_id)
    GROUP BY i.run_id, w.metric;
$$;

CREATE FUNCTION comparisons_refresh_all_run_summaries() RETURNS void LANGUAGE sql AS $$
    DELETE FROM comparisons_runmetricsummary;
    INSERT INTO comparisons_runmetricsummary (run_id, metric, n, total, total_sq)
    SELECT i.run_id, w.metric, count(*), sum(w.value), sum(w.value * w.value)
    FROM (
        SELECT DISTINCT ON (f.inference_id, f.metric) f.inference_id, f.metric, f.value
        FROM comparisons_feedback f ORDER BY f.inference_id, f.metric, f.id DESC
    ) w
    JOIN comparisons_inference i ON i.id = w.inference_id
    JOIN comparisons_datapoint d ON d.id = i.datapoint_id
    WHERE comparisons_in_window(d.id, d.staled_at, i.run_id)
    GROUP BY i.run_id, w.metric;
$$;

CREATE FUNCTION comparisons_feedback_summarise() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run uuid;
    datapoint uuid;
    staled timestamptz;
    previous_id uuid;
    previous_value double precision;
BEGIN
    SELECT i.run_id, i.datapoint_id, d.staled_at INTO run, datapoint, staled
    FROM comparisons_inference i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
    WHERE i.id = NEW.inference_id;
    IF NOT FOUND OR NOT comparisons_in_window(datapoint, staled, run) THEN
        RETURN NEW;
    END IF;
    SELECT f.id, f.value INTO previous_id, previous_value FROM comparisons_feedback f
    WHERE f.inference_id = NEW.inference_id AND f.metric = NEW.metric ORDER BY f.id DESC LIMIT 1;
    IF previous_id IS NOT NULL AND previous_id > NEW.id THEN
        RETURN NEW;  -- an older feedback arriving late changes no winner
    END IF;
    INSERT INTO comparisons_runmetricsummary AS s (run_id, metric, n, total, total_sq)
    VALUES (run, NEW.metric, CASE WHEN previous_id IS NULL THEN 1 ELSE 0 END,
            NEW.value - coalesce(previous_value, 0), NEW.value * NEW.value - coalesce(previous_value ^ 2, 0))
    ON CONFLICT (run_id, metric) DO UPDATE
        SET n = s.n + excluded.n, total = s.total + excluded.total, total_sq = s.total_sq + excluded.total_sq;
    RETURN NEW;
END $$;

CREATE TRIGGER comparisons_feedback_summary BEFORE INSERT ON comparisons_feedback
FOR EACH ROW EXECUTE FUNCTION comparisons_feedback_summarise();

CREATE FUNCTION comparisons_datapoint_restale() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run uuid;
BEGIN
    FOR run IN
        SELECT DISTINCT i.run_id FROM comparisons_inference i WHERE i.datapoint_id = NEW.id
        AND comparisons_in_window(NEW.id, OLD.staled_at, i.run_id)
            <> comparisons_in_window(NEW.id, NEW.staled_at, i.run_id)
    LOOP
        PERFORM comparisons_refresh_run_summary(run);
    END LOOP;
    RETURN NEW;
END $$;

CREATE TRIGGER comparisons_datapoint_restale AFTER UPDATE OF staled_at ON comparisons_datapoint
FOR EACH ROW WHEN (OLD.staled_at IS DISTINCT FROM NEW.staled_at) EXECUTE FUNCTION comparisons_datapoint_restale();

SELECT comparisons_refresh_all_run_summaries();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS comparisons_datapoint_restale ON comparisons_datapoint;
DROP FUNCTION IF EXISTS comparisons_datapoint_restale();
DROP TRIGGER IF EXISTS comparisons_feedback_summary ON comparisons_feedback;
DROP FUNCTION IF EXISTS comparisons_feedback_summarise();
DROP FUNCTION IF EXISTS comparisons_refresh_all_run_summaries();
DROP FUNCTION IF EXISTS comparisons_refresh_run_summary(uuid);
DROP FUNCTION IF EXISTS comparisons_in_window(uuid, timestamptz, uuid);
DROP FUNCTION IF EXISTS comparisons_uuid7_ms(uuid);
"""


class Migration(migrations.Migration):
    dependencies = [("comparisons", "0003_run_metric_summary")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
