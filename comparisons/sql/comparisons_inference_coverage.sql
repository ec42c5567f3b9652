-- RunCoverage per statement (transition tables: one aggregate per statement, even for COPY): what
-- the statement took out of and put into each run's in-window inferences, errors and pins.
CREATE OR REPLACE FUNCTION comparisons_inference_coverage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM comparisons_lock_dataset(s.dataset_id) FROM (
            SELECT DISTINCT d.dataset_id FROM old_rows i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
            ORDER BY 1
        ) s;
    ELSE
        PERFORM comparisons_lock_dataset(s.dataset_id) FROM (
            SELECT DISTINCT d.dataset_id FROM new_rows i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
            ORDER BY 1
        ) s;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE comparisons_runcoverage c
        SET inferences = c.inferences - o.n, errors = c.errors - o.errors, pinned = c.pinned - o.pinned
        FROM (
            SELECT i.run_id, count(*) AS n, count(*) FILTER (WHERE i.error IS NOT NULL) AS errors,
                   count(*) FILTER (WHERE i.variant_pinned) AS pinned
            FROM old_rows i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
            WHERE comparisons_in_window(d.id, d.staled_at, i.run_id) GROUP BY i.run_id
        ) o
        WHERE c.run_id = o.run_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO comparisons_runcoverage AS c (run_id, inferences, errors, pinned)
        SELECT i.run_id, count(*), count(*) FILTER (WHERE i.error IS NOT NULL), count(*) FILTER (WHERE i.variant_pinned)
        FROM new_rows i JOIN comparisons_datapoint d ON d.id = i.datapoint_id
        WHERE comparisons_in_window(d.id, d.staled_at, i.run_id) GROUP BY i.run_id
        ON CONFLICT (run_id) DO UPDATE SET inferences = c.inferences + excluded.inferences,
            errors = c.errors + excluded.errors, pinned = c.pinned + excluded.pinned;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS comparisons_inference_coverage_insert ON comparisons_inference;
CREATE TRIGGER comparisons_inference_coverage_insert AFTER INSERT ON comparisons_inference
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_inference_coverage();
DROP TRIGGER IF EXISTS comparisons_inference_coverage_update ON comparisons_inference;
CREATE TRIGGER comparisons_inference_coverage_update AFTER UPDATE ON comparisons_inference
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
EXECUTE FUNCTION comparisons_inference_coverage();
DROP TRIGGER IF EXISTS comparisons_inference_coverage_delete ON comparisons_inference;
CREATE TRIGGER comparisons_inference_coverage_delete AFTER DELETE ON comparisons_inference
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_inference_coverage();
