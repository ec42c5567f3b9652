-- Any statement that writes datapoints, inferences or feedback, by any writer: bump the version of
-- every dataset it touched, under that dataset's lock. The version (DatasetVersion) is part of the
-- key of the comparison's cached rows (comparisons/rows_cache.py): it is transactional, so a reader
-- sees a new version exactly when it can see the rows that changed, and a reader that cached rows
-- under an older version read them after that version (rows at least as new as their key).
CREATE OR REPLACE FUNCTION comparisons_data_changed() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    datasets bigint[];
BEGIN
    -- Migrations before 0014 apply these files too, before the table exists.
    IF to_regclass('comparisons_datasetversion') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'comparisons_datapoint' THEN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            SELECT array_agg(DISTINCT n.dataset_id) INTO datasets FROM new_rows n;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            SELECT array_agg(DISTINCT x) INTO datasets
            FROM (SELECT unnest(datasets) UNION SELECT o.dataset_id FROM old_rows o) s (x);
        END IF;
    ELSIF TG_TABLE_NAME = 'comparisons_inference' THEN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            SELECT array_agg(DISTINCT dp.dataset_id) INTO datasets
            FROM (SELECT DISTINCT n.datapoint_id FROM new_rows n) i
            JOIN comparisons_datapoint dp ON dp.id = i.datapoint_id;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            SELECT array_agg(DISTINCT x) INTO datasets FROM (
                SELECT unnest(datasets) UNION
                SELECT dp.dataset_id FROM (SELECT DISTINCT o.datapoint_id FROM old_rows o) i
                JOIN comparisons_datapoint dp ON dp.id = i.datapoint_id
            ) s (x);
        END IF;
    ELSE  -- comparisons_feedback
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            SELECT array_agg(DISTINCT dp.dataset_id) INTO datasets
            FROM (SELECT DISTINCT n.inference_id FROM new_rows n) f
            JOIN comparisons_inference i ON i.id = f.inference_id
            JOIN comparisons_datapoint dp ON dp.id = i.datapoint_id;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            SELECT array_agg(DISTINCT x) INTO datasets FROM (
                SELECT unnest(datasets) UNION
                SELECT dp.dataset_id FROM (SELECT DISTINCT o.inference_id FROM old_rows o) f
                JOIN comparisons_inference i ON i.id = f.inference_id
                JOIN comparisons_datapoint dp ON dp.id = i.datapoint_id
            ) s (x);
        END IF;
    END IF;
    -- In id order, as every writer takes these locks: no deadlock between writers of several datasets.
    PERFORM comparisons_lock_dataset(d) FROM unnest(datasets) d WHERE d IS NOT NULL ORDER BY d;
    INSERT INTO comparisons_datasetversion AS v (dataset_id, version)
    SELECT d, 1 FROM unnest(datasets) d WHERE d IS NOT NULL ORDER BY d
    ON CONFLICT (dataset_id) DO UPDATE SET version = v.version + 1;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS comparisons_datapoint_changed_insert ON comparisons_datapoint;
CREATE TRIGGER comparisons_datapoint_changed_insert AFTER INSERT ON comparisons_datapoint
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_datapoint_changed_update ON comparisons_datapoint;
CREATE TRIGGER comparisons_datapoint_changed_update AFTER UPDATE ON comparisons_datapoint
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_datapoint_changed_delete ON comparisons_datapoint;
CREATE TRIGGER comparisons_datapoint_changed_delete AFTER DELETE ON comparisons_datapoint
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_inference_changed_insert ON comparisons_inference;
CREATE TRIGGER comparisons_inference_changed_insert AFTER INSERT ON comparisons_inference
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_inference_changed_update ON comparisons_inference;
CREATE TRIGGER comparisons_inference_changed_update AFTER UPDATE ON comparisons_inference
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_inference_changed_delete ON comparisons_inference;
CREATE TRIGGER comparisons_inference_changed_delete AFTER DELETE ON comparisons_inference
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_feedback_changed_insert ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_changed_insert AFTER INSERT ON comparisons_feedback
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_feedback_changed_update ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_changed_update AFTER UPDATE ON comparisons_feedback
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
DROP TRIGGER IF EXISTS comparisons_feedback_changed_delete ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_changed_delete AFTER DELETE ON comparisons_feedback
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_data_changed();
