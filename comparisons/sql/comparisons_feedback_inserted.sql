-- Feedback inserted by any writer, in any statement (a runner's COPY batch, a correction, an
-- import): rescore every (inference, metric) it touched, set-based, once per statement. The rule is
-- comparisons_rescore's — the winning feedback (greatest id) when the inference's datapoint is
-- inside its run's window, nothing otherwise — applied to all the touched cells at once: the
-- datasets' locks first (in id order), then one read of the kept and winning scores, then
-- comparisons_scores_changed. Updates and deletes of feedback are rescored row by row
-- (comparisons_feedback_rescore).
CREATE OR REPLACE FUNCTION comparisons_feedback_inserted() RETURNS trigger LANGUAGE plpgsql
-- Index lookups per key, whatever the statistics say: they lag behind a run that is being written,
-- and a hash join over the whole table per batch would make writing a run quadratic.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    changes record;
BEGIN
    PERFORM comparisons_lock_dataset(x.dataset_id) FROM (
        SELECT DISTINCT dp.dataset_id
        FROM new_rows f
        JOIN comparisons_inference i ON i.id = f.inference_id
        JOIN comparisons_datapoint dp ON dp.id = i.datapoint_id
        ORDER BY dp.dataset_id
    ) x;
    SELECT array_agg(s.run_id) AS r, array_agg(s.metric) AS m, array_agg(s.datapoint_id) AS d,
           array_agg(s.was) AS was, array_agg(s.now) AS now,
           array_agg(s.was_human) AS was_human, array_agg(s.now_human) AS now_human
    INTO changes
    FROM (
        SELECT i.run_id, t.metric::text AS metric, i.datapoint_id, w.value AS was, w.human AS was_human,
               win.value AS now, win.human AS now_human
        FROM (SELECT DISTINCT f.inference_id, f.metric FROM new_rows f) t
        JOIN comparisons_inference i ON i.id = t.inference_id
        JOIN comparisons_datapoint dp ON dp.id = i.datapoint_id
        LEFT JOIN comparisons_windowscore w
               ON w.run_id = i.run_id AND w.metric = t.metric AND w.datapoint_id = i.datapoint_id
        LEFT JOIN LATERAL (
            SELECT f.value, f.source = 'human' AS human FROM comparisons_feedback f
            WHERE f.inference_id = t.inference_id AND f.metric = t.metric
            ORDER BY f.id DESC LIMIT 1
        ) win ON comparisons_in_window(dp.id, dp.staled_at, i.run_id)
    ) s
    WHERE s.was IS DISTINCT FROM s.now OR s.was_human IS DISTINCT FROM s.now_human;
    PERFORM comparisons_scores_changed(changes.r, changes.m, changes.d, changes.was, changes.now,
                                       changes.was_human, changes.now_human);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS comparisons_feedback_inserted ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_inserted AFTER INSERT ON comparisons_feedback
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_feedback_inserted();
