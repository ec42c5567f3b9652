-- An inference's datapoint must be in the dataset and function of its run's evaluation, and an
-- inference keeps its run and datapoint (its scores are kept under that key). Inserts are checked
-- once per statement, set-based (a runner's COPY batch, an import); an update of the key, per row.
CREATE OR REPLACE FUNCTION comparisons_inference_check() RETURNS trigger LANGUAGE plpgsql
-- Index lookups per row, whatever the statistics say (they lag behind a run being written).
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    bad record;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        IF (NEW.run_id, NEW.datapoint_id) IS DISTINCT FROM (OLD.run_id, OLD.datapoint_id) THEN
            RAISE EXCEPTION 'inference %: its run and datapoint cannot change; record a new inference instead',
                NEW.id USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    SELECT n.id, n.datapoint_id, n.run_id INTO bad
    FROM new_rows n
    WHERE NOT EXISTS (
        SELECT 1
        FROM comparisons_evaluationrun r
        JOIN comparisons_evaluation e ON e.id = r.evaluation_id
        JOIN comparisons_datapoint d ON d.id = n.datapoint_id
        WHERE r.id = n.run_id AND d.dataset_id = e.dataset_id AND d.function_id = e.function_id
    )
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'inference %: datapoint % is not in the dataset and function of run %''s evaluation',
            bad.id, bad.datapoint_id, bad.run_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS comparisons_inference_check ON comparisons_inference;
CREATE TRIGGER comparisons_inference_check BEFORE UPDATE OF run_id, datapoint_id
ON comparisons_inference FOR EACH ROW EXECUTE FUNCTION comparisons_inference_check();
DROP TRIGGER IF EXISTS comparisons_inference_check_insert ON comparisons_inference;
CREATE TRIGGER comparisons_inference_check_insert AFTER INSERT ON comparisons_inference
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_inference_check();
