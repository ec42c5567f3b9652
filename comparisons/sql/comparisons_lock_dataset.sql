-- Every writer of the kept tables (WindowScore, RunMetricSummary, PairedSummary, RunCoverage) takes
-- this lock for the dataset it touches before it reads what it adjusts, and holds it to commit: the
-- read-then-adjust steps of two transactions never interleave, so no update is lost. One lock per
-- dataset (not per cell) keeps a transaction at one lock, so writers cannot deadlock on each other.
-- It also makes sure scores convert to numeric exactly (comparisons_exact) in this transaction.
CREATE OR REPLACE FUNCTION comparisons_lock_dataset(dataset bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7301, (dataset % 2147483647)::int);
    IF current_setting('extra_float_digits')::int < 1 THEN
        PERFORM set_config('extra_float_digits', '1', true);
    END IF;
END $$;
