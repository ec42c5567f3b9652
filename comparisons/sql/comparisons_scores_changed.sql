-- A set of in-window winning scores of (run r[k], metric m[k], datapoint d[k]) appear (old NULL),
-- change, or go (new NULL), set-based: WindowScore, each run's RunMetricSummary and every cached
-- PairedSummary a changed run takes part in, as the compared run or as the baseline, in four
-- statements whatever the number of changes. The keys must be distinct; entries that change
-- nothing are ignored. When both runs of a pair change on one datapoint, the pair's difference
-- goes from (old − old) to (new − new), as if the changes were applied one after the other. Sums
-- are numeric (squares by multiplication, since numeric ^ rounds), so adding and removing values
-- never loses a digit to cancellation. The caller holds comparisons_lock_dataset for the runs'
-- datasets.
CREATE OR REPLACE FUNCTION comparisons_scores_changed(
    r uuid[], m text[], d uuid[], old_value double precision[], new_value double precision[],
    old_human boolean[], new_human boolean[]
) RETURNS void LANGUAGE plpgsql
-- Index lookups per key, whatever the statistics say: they lag behind a run that is being written,
-- and a hash join over the whole table per batch would make writing a run quadratic.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    DELETE FROM comparisons_windowscore w
    USING unnest(r, m, d, old_value, new_value) AS c(r, m, d, was, now)
    WHERE c.now IS NULL AND c.was IS NOT NULL AND w.run_id = c.r AND w.metric = c.m AND w.datapoint_id = c.d;

    INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value, human)
    SELECT c.r, c.m, c.d, c.now, c.now_human
    FROM unnest(r, m, d, old_value, new_value, old_human, new_human) AS c(r, m, d, was, now, was_human, now_human)
    WHERE c.now IS NOT NULL AND (c.was IS DISTINCT FROM c.now OR c.was_human IS DISTINCT FROM c.now_human)
    ON CONFLICT (run_id, metric, datapoint_id) DO UPDATE SET value = excluded.value, human = excluded.human;

    INSERT INTO comparisons_runmetricsummary AS s (run_id, metric, n, total, total_sq, overrides)
    SELECT c.r, c.m, sum((c.now IS NOT NULL)::int - (c.was IS NOT NULL)::int),
           sum(coalesce(comparisons_exact(c.now), 0) - coalesce(comparisons_exact(c.was), 0)),
           sum(coalesce(comparisons_exact(c.now) * comparisons_exact(c.now), 0)
               - coalesce(comparisons_exact(c.was) * comparisons_exact(c.was), 0)),
           sum(coalesce(c.now_human::int, 0) - coalesce(c.was_human::int, 0))
    FROM unnest(r, m, d, old_value, new_value, old_human, new_human) AS c(r, m, d, was, now, was_human, now_human)
    WHERE c.was IS DISTINCT FROM c.now OR c.was_human IS DISTINCT FROM c.now_human
    GROUP BY c.r, c.m
    ON CONFLICT (run_id, metric) DO UPDATE SET n = s.n + excluded.n, total = s.total + excluded.total,
        total_sq = s.total_sq + excluded.total_sq, overrides = s.overrides + excluded.overrides;

    -- Each (pair, datapoint) where either side's value changed: each side's value before and after
    -- (from the changes, else the kept score, which no change touched), then the pair's differences.
    -- comparisons_exact keeps the order of floats, so the sign of the exact difference says higher,
    -- lower or the same.
    WITH c AS (
        SELECT * FROM unnest(r, m, d, old_value, new_value) AS c(r, m, d, was, now) WHERE c.was IS DISTINCT FROM c.now
    ), touched AS (
        SELECT q.id, q.run_id, q.baseline_id, q.metric, c.d
        FROM c JOIN comparisons_pairedsummary q ON q.run_id = c.r AND q.metric = c.m
        UNION
        SELECT q.id, q.run_id, q.baseline_id, q.metric, c.d
        FROM c JOIN comparisons_pairedsummary q ON q.baseline_id = c.r AND q.metric = c.m
    ), sides AS (
        SELECT t.id,
               CASE WHEN cr.r IS NULL THEN wr.value ELSE cr.was END AS run_was,
               CASE WHEN cr.r IS NULL THEN wr.value ELSE cr.now END AS run_now,
               CASE WHEN cb.r IS NULL THEN wb.value ELSE cb.was END AS base_was,
               CASE WHEN cb.r IS NULL THEN wb.value ELSE cb.now END AS base_now
        FROM touched t
        LEFT JOIN c cr ON cr.r = t.run_id AND cr.m = t.metric AND cr.d = t.d
        LEFT JOIN c cb ON cb.r = t.baseline_id AND cb.m = t.metric AND cb.d = t.d
        LEFT JOIN comparisons_windowscore wr ON wr.run_id = t.run_id AND wr.metric = t.metric AND wr.datapoint_id = t.d
        LEFT JOIN comparisons_windowscore wb
               ON wb.run_id = t.baseline_id AND wb.metric = t.metric AND wb.datapoint_id = t.d
    ), diffs AS (
        SELECT id, comparisons_exact(run_now) - comparisons_exact(base_now) AS d_now,
               comparisons_exact(run_was) - comparisons_exact(base_was) AS d_was
        FROM sides
    ), deltas AS (
        SELECT id,
               sum((d_now IS NOT NULL)::int - (d_was IS NOT NULL)::int) AS n,
               sum(coalesce(d_now, 0) - coalesce(d_was, 0)) AS total,
               sum(coalesce(d_now * d_now, 0) - coalesce(d_was * d_was, 0)) AS total_sq,
               sum(coalesce((d_now > 0)::int, 0) - coalesce((d_was > 0)::int, 0)) AS higher,
               sum(coalesce((d_now < 0)::int, 0) - coalesce((d_was < 0)::int, 0)) AS lower,
               sum(coalesce((d_now = 0)::int, 0) - coalesce((d_was = 0)::int, 0)) AS same
        FROM diffs GROUP BY id
    )
    UPDATE comparisons_pairedsummary p SET
        n = p.n + x.n, total = p.total + x.total, total_sq = p.total_sq + x.total_sq,
        higher = p.higher + x.higher, lower = p.lower + x.lower, same = p.same + x.same
    FROM deltas x
    WHERE p.id = x.id;
END $$;
