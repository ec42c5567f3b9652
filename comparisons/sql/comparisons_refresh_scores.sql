-- Rebuild the kept tables of `runs` (NULL: all) from the truth, set-based: after bulk loads with
-- triggers off, and for `verify_scores --repair`. Cached pairs that involve the runs are dropped;
-- the next comparison that needs one fills it again (queries.paired_summaries).
CREATE OR REPLACE FUNCTION comparisons_refresh_scores(runs uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM comparisons_lock_dataset(s.dataset_id) FROM (
        SELECT DISTINCT e.dataset_id FROM comparisons_evaluationrun r
        JOIN comparisons_evaluation e ON e.id = r.evaluation_id
        WHERE runs IS NULL OR r.id = ANY(runs) ORDER BY 1
    ) s;
    DELETE FROM comparisons_pairedsummary p WHERE runs IS NULL OR p.run_id = ANY(runs) OR p.baseline_id = ANY(runs);
    DELETE FROM comparisons_windowscore w WHERE runs IS NULL OR w.run_id = ANY(runs);
    INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value, human)
    SELECT t.run_id, t.metric, t.datapoint_id, t.value, t.human FROM comparisons_true_window_scores(runs) t;
    DELETE FROM comparisons_runmetricsummary s WHERE runs IS NULL OR s.run_id = ANY(runs);
    INSERT INTO comparisons_runmetricsummary (run_id, metric, n, total, total_sq, overrides)
    SELECT t.run_id, t.metric, t.n, t.total, t.total_sq, t.overrides FROM comparisons_true_run_summaries(runs) t;
    DELETE FROM comparisons_runcoverage c WHERE runs IS NULL OR c.run_id = ANY(runs);
    INSERT INTO comparisons_runcoverage (run_id, inferences, errors, pinned)
    SELECT t.run_id, t.inferences, t.errors, t.pinned FROM comparisons_true_run_coverage(runs) t;
END $$;
