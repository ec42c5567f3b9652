-- Every writer of the kept tables (WindowScore, RunMetricSummary, PairedSummary, RunCoverage) takes
-- this lock for the dataset it touches before it reads what it adjusts, and holds it to commit: the
-- read-then-adjust steps of two transactions never interleave, so no update is lost. One lock per
-- dataset (not per cell) keeps a transaction at one lock, so writers cannot deadlock on each other.
CREATE OR REPLACE FUNCTION comparisons_lock_dataset(dataset bigint) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(7301, (dataset % 2147483647)::int)
$$;
