-- The truth the kept RunMetricSummary must equal: n, exact Σ and Σ² (numeric) and human overrides of
-- each run's winning in-window scores per metric.
CREATE OR REPLACE FUNCTION comparisons_true_run_summaries(runs uuid[])
RETURNS TABLE (run_id uuid, metric text, n integer, total numeric, total_sq numeric, overrides integer)
LANGUAGE sql STABLE AS $$
    SELECT w.run_id, w.metric, count(*)::int, sum(comparisons_exact(w.value)), sum(comparisons_exact(w.value) * comparisons_exact(w.value)),
           (count(*) FILTER (WHERE w.human))::int
    FROM comparisons_true_window_scores(runs) w
    GROUP BY w.run_id, w.metric
$$;
