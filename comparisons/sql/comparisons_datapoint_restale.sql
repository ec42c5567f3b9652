-- A stale time that moves across a run's time (a back-dated edit or delete) moves that run's
-- inference in or out of its window: adjust its coverage and rescore its metrics.
CREATE OR REPLACE FUNCTION comparisons_datapoint_restale() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inference record;
    step int;
    metric text;
BEGIN
    PERFORM comparisons_lock_dataset(NEW.dataset_id);
    FOR inference IN
        SELECT i.run_id, i.id, i.error IS NOT NULL AS failed, i.variant_pinned,
               comparisons_in_window(NEW.id, OLD.staled_at, i.run_id) AS was_in,
               comparisons_in_window(NEW.id, NEW.staled_at, i.run_id) AS now_in
        FROM comparisons_inference i WHERE i.datapoint_id = NEW.id
    LOOP
        CONTINUE WHEN inference.was_in = inference.now_in;
        step := CASE WHEN inference.now_in THEN 1 ELSE -1 END;
        INSERT INTO comparisons_runcoverage AS c (run_id, inferences, errors, pinned)
        VALUES (inference.run_id, step, step * inference.failed::int, step * inference.variant_pinned::int)
        ON CONFLICT (run_id) DO UPDATE SET inferences = c.inferences + excluded.inferences,
            errors = c.errors + excluded.errors, pinned = c.pinned + excluded.pinned;
        FOR metric IN SELECT DISTINCT f.metric FROM comparisons_feedback f WHERE f.inference_id = inference.id LOOP
            PERFORM comparisons_rescore(inference.id, metric);
        END LOOP;
    END LOOP;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS comparisons_datapoint_restale ON comparisons_datapoint;
CREATE TRIGGER comparisons_datapoint_restale AFTER UPDATE OF staled_at ON comparisons_datapoint
FOR EACH ROW WHEN (OLD.staled_at IS DISTINCT FROM NEW.staled_at) EXECUTE FUNCTION comparisons_datapoint_restale();
