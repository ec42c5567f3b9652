-- The truth each cached PairedSummary (baseline, run, metric) must equal, for the cached pairs that
-- involve `runs` (NULL: all): over datapoints both runs scored inside their windows, n, exact Σ and Σ²
-- of (run value − baseline value), and how often the run's value is higher, lower or the same.
CREATE OR REPLACE FUNCTION comparisons_true_paired_summaries(runs uuid[])
RETURNS TABLE (baseline_id uuid, run_id uuid, metric text, n integer, total numeric, total_sq numeric,
               higher integer, lower integer, same integer)
LANGUAGE sql STABLE AS $$
    WITH pairs AS (
        SELECT p.baseline_id, p.run_id, p.metric FROM comparisons_pairedsummary p
        WHERE runs IS NULL OR p.run_id = ANY(runs) OR p.baseline_id = ANY(runs)
    ), involved AS (
        SELECT run_id FROM pairs UNION SELECT baseline_id FROM pairs
    ), scores AS (
        SELECT * FROM comparisons_true_window_scores((SELECT array_agg(run_id) FROM involved))
    )
    SELECT p.baseline_id, p.run_id, p.metric::text, count(s.value)::int,
           coalesce(sum(comparisons_exact(s.value) - comparisons_exact(b.value)), 0),
           coalesce(sum((comparisons_exact(s.value) - comparisons_exact(b.value)) * (comparisons_exact(s.value) - comparisons_exact(b.value))), 0),
           (count(*) FILTER (WHERE s.value > b.value))::int, (count(*) FILTER (WHERE s.value < b.value))::int,
           (count(*) FILTER (WHERE s.value = b.value))::int
    FROM pairs p
    LEFT JOIN (scores s JOIN scores b ON b.metric = s.metric AND b.datapoint_id = s.datapoint_id)
        ON s.run_id = p.run_id AND b.run_id = p.baseline_id AND s.metric = p.metric
    GROUP BY p.baseline_id, p.run_id, p.metric
$$;
