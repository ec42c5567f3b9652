-- The truth the kept WindowScore must equal, recomputed from the raw rows: per inference inside its
-- run's window, the winning feedback (greatest id) of each metric. `runs` NULL means every run
-- (one sort of all feedback); otherwise only those runs (index descents per inference).
CREATE OR REPLACE FUNCTION comparisons_true_window_scores(runs uuid[])
RETURNS TABLE (run_id uuid, metric text, datapoint_id uuid, value double precision, human boolean)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF runs IS NULL THEN
        RETURN QUERY
        SELECT i.run_id, w.metric::text, i.datapoint_id, w.value, w.source = 'human'
        FROM (
            SELECT DISTINCT ON (f.inference_id, f.metric) f.inference_id, f.metric, f.value, f.source
            FROM comparisons_feedback f ORDER BY f.inference_id, f.metric, f.id DESC
        ) w
        JOIN comparisons_inference i ON i.id = w.inference_id
        JOIN comparisons_datapoint d ON d.id = i.datapoint_id
        WHERE comparisons_in_window(d.id, d.staled_at, i.run_id);
    ELSE
        RETURN QUERY
        SELECT i.run_id, w.metric::text, i.datapoint_id, w.value, w.source = 'human'
        FROM comparisons_inference i
        JOIN comparisons_datapoint d ON d.id = i.datapoint_id
        CROSS JOIN LATERAL (
            SELECT DISTINCT ON (f.metric) f.metric, f.value, f.source FROM comparisons_feedback f
            WHERE f.inference_id = i.id ORDER BY f.metric, f.id DESC
        ) w
        WHERE i.run_id = ANY(runs) AND comparisons_in_window(d.id, d.staled_at, i.run_id);
    END IF;
END $$;
