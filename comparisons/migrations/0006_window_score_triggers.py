"""Keep WindowScore and PairedSummary exact for every writer, and fill WindowScore for existing data.

- comparisons_score_changed(run, metric, datapoint, old, new): one in-window winning score appears
  (old NULL), changes, or goes (new NULL). It writes WindowScore and adjusts every cached
  PairedSummary the run takes part in, as the compared run or as the baseline.
- The feedback BEFORE INSERT trigger (migration 0004) calls it when a new winner arrives in the window.
- The datapoint restale trigger calls it when a stale time moves across a run's time.
- BEFORE DELETE on inferences: the inference's scores leave the run's sums and the pairs.
- comparisons_refresh_all_scores(): a set-based rebuild after bulk loads with triggers off.

Locking: a PairedSummary is filled on first use by `queries.paired_summaries`, which takes exclusive
advisory locks (class 7301, hashtext of each run id) before it reads WindowScore; a writer takes the
shared lock of its run before it reads PairedSummary. So either the fill sees the writer's committed
score, or the writer sees the filled row and adjusts it — a score is never lost or counted twice.
"""

from django.db import migrations

from comparisons.migrations._sql import previous_definition

FORWARD = """
CREATE FUNCTION comparisons_score_changed(r uuid, m text, d uuid, old double precision, new double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF new IS NULL THEN
        DELETE FROM comparisons_windowscore WHERE run_id = r AND metric = m AND datapoint_id = d;
    ELSE
        INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value) VALUES (r, m, d, new)
        ON CONFLICT (run_id, metric, datapoint_id) DO UPDATE SET value = excluded.value;
    END IF;
    IF old IS NOT DISTINCT FROM new THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(7301, hashtext(r::text));
    -- r as the compared run: its value minus each cached baseline's value on d.
    UPDATE comparisons_pairedsummary p SET
        n = p.n + (new IS NOT NULL)::int - (old IS NOT NULL)::int,
        total = p.total + coalesce(new - b.value, 0) - coalesce(old - b.value, 0),
        total_sq = p.total_sq + coalesce((new - b.value) ^ 2, 0) - coalesce((old - b.value) ^ 2, 0),
        higher = p.higher + coalesce((new > b.value)::int, 0) - coalesce((old > b.value)::int, 0),
        lower = p.lower + coalesce((new < b.value)::int, 0) - coalesce((old < b.value)::int, 0),
        same = p.same + coalesce((new = b.value)::int, 0) - coalesce((old = b.value)::int, 0)
    FROM comparisons_windowscore b
    WHERE p.run_id = r AND p.metric = m AND b.run_id = p.baseline_id AND b.metric = m AND b.datapoint_id = d;
    -- r as the baseline: each cached run's value on d minus r's.
    UPDATE comparisons_pairedsummary p SET
        n = p.n + (new IS NOT NULL)::int - (old IS NOT NULL)::int,
        total = p.total + coalesce(s.value - new, 0) - coalesce(s.value - old, 0),
        total_sq = p.total_sq + coalesce((s.value - new) ^ 2, 0) - coalesce((s.value - old) ^ 2, 0),
        higher = p.higher + coalesce((s.value > new)::int, 0) - coalesce((s.value > old)::int, 0),
        lower = p.lower + coalesce((s.value < new)::int, 0) - coalesce((s.value < old)::int, 0),
        same = p.same + coalesce((s.value = new)::int, 0) - coalesce((s.value = old)::int, 0)
    FROM comparisons_windowscore s
    WHERE p.baseline_id = r AND p.metric = m AND s.run_id = p.run_id AND s.metric = m AND s.datapoint_id = d;
END $$;

CREATE OR REPLACE FUNCTION comparisons_feedback_summarise() RETURNS trigger LANGUAGE plpgsql AS $$
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
    PERFORM comparisons_score_changed(run, NEW.metric, datapoint, previous_value, NEW.value);
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION comparisons_datapoint_restale() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run uuid;
    inference uuid;
    was_in boolean;
    now_in boolean;
    score record;
BEGIN
    FOR run, inference, was_in, now_in IN
        SELECT i.run_id, i.id, comparisons_in_window(NEW.id, OLD.staled_at, i.run_id),
               comparisons_in_window(NEW.id, NEW.staled_at, i.run_id)
        FROM comparisons_inference i WHERE i.datapoint_id = NEW.id
    LOOP
        CONTINUE WHEN was_in = now_in;
        PERFORM comparisons_refresh_run_summary(run);
        FOR score IN
            SELECT DISTINCT ON (f.metric) f.metric, f.value FROM comparisons_feedback f
            WHERE f.inference_id = inference ORDER BY f.metric, f.id DESC
        LOOP
            PERFORM comparisons_score_changed(run, score.metric, NEW.id,
                                              CASE WHEN was_in THEN score.value END,
                                              CASE WHEN now_in THEN score.value END);
        END LOOP;
    END LOOP;
    RETURN NEW;
END $$;

CREATE FUNCTION comparisons_inference_forget() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    score record;
BEGIN
    FOR score IN
        SELECT w.metric, w.value FROM comparisons_windowscore w
        WHERE w.run_id = OLD.run_id AND w.datapoint_id = OLD.datapoint_id
    LOOP
        UPDATE comparisons_runmetricsummary s
        SET n = s.n - 1, total = s.total - score.value, total_sq = s.total_sq - score.value ^ 2
        WHERE s.run_id = OLD.run_id AND s.metric = score.metric;
        PERFORM comparisons_score_changed(OLD.run_id, score.metric, OLD.datapoint_id, score.value, NULL);
    END LOOP;
    RETURN OLD;
END $$;

CREATE TRIGGER comparisons_inference_forget BEFORE DELETE ON comparisons_inference
FOR EACH ROW EXECUTE FUNCTION comparisons_inference_forget();

CREATE FUNCTION comparisons_refresh_all_scores() RETURNS void LANGUAGE sql AS $$
    DELETE FROM comparisons_pairedsummary;
    DELETE FROM comparisons_windowscore;
    INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value)
    SELECT i.run_id, w.metric, i.datapoint_id, w.value
    FROM (
        SELECT DISTINCT ON (f.inference_id, f.metric) f.inference_id, f.metric, f.value
        FROM comparisons_feedback f ORDER BY f.inference_id, f.metric, f.id DESC
    ) w
    JOIN comparisons_inference i ON i.id = w.inference_id
    JOIN comparisons_datapoint d ON d.id = i.datapoint_id
    WHERE comparisons_in_window(d.id, d.staled_at, i.run_id);
    DELETE FROM comparisons_runmetricsummary;
    INSERT INTO comparisons_runmetricsummary (run_id, metric, n, total, total_sq)
    SELECT run_id, metric, count(*), sum(value), sum(value * value)
    FROM comparisons_windowscore GROUP BY run_id, metric;
$$;

SELECT comparisons_refresh_all_scores();
"""

BACKWARD = f"""
DROP FUNCTION IF EXISTS comparisons_refresh_all_scores();
DROP TRIGGER IF EXISTS comparisons_inference_forget ON comparisons_inference;
DROP FUNCTION IF EXISTS comparisons_inference_forget();
{previous_definition("0004_run_metric_summary_triggers", "comparisons_datapoint_restale")}
{previous_definition("0004_run_metric_summary_triggers", "comparisons_feedback_summarise")}
DROP FUNCTION IF EXISTS comparisons_score_changed(uuid, text, uuid, double precision, double precision);
"""


class Migration(migrations.Migration):
    dependencies = [("comparisons", "0005_window_scores")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
