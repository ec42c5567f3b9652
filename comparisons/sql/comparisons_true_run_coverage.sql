-- The truth the kept RunCoverage must equal: per run, its inferences inside its window, how many
-- failed and how many had the variant pinned (zeros for a run with none).
CREATE OR REPLACE FUNCTION comparisons_true_run_coverage(runs uuid[])
RETURNS TABLE (run_id uuid, inferences integer, errors integer, pinned integer)
LANGUAGE sql STABLE AS $$
    SELECT r.id, count(i.id)::int, (count(i.id) FILTER (WHERE i.error IS NOT NULL))::int,
           (count(i.id) FILTER (WHERE i.variant_pinned))::int
    FROM comparisons_evaluationrun r
    LEFT JOIN (comparisons_inference i JOIN comparisons_datapoint d ON d.id = i.datapoint_id)
        ON i.run_id = r.id AND comparisons_in_window(d.id, d.staled_at, i.run_id)
    WHERE runs IS NULL OR r.id = ANY(runs)
    GROUP BY r.id
$$;
