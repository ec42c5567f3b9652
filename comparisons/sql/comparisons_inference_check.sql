-- An inference's datapoint must be in the dataset and function of its run's evaluation, and an
-- inference keeps its run and datapoint (its scores are kept under that key).
CREATE OR REPLACE FUNCTION comparisons_inference_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.run_id, NEW.datapoint_id) IS DISTINCT FROM (OLD.run_id, OLD.datapoint_id) THEN
        RAISE EXCEPTION 'inference %: its run and datapoint cannot change; record a new inference instead', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (
        SELECT 1
        FROM comparisons_evaluationrun r
        JOIN comparisons_evaluation e ON e.id = r.evaluation_id
        JOIN comparisons_datapoint d ON d.id = NEW.datapoint_id
        WHERE r.id = NEW.run_id AND d.dataset_id = e.dataset_id AND d.function_id = e.function_id
    ) THEN
        RAISE EXCEPTION 'inference %: datapoint % is not in the dataset and function of run %''s evaluation',
            NEW.id, NEW.datapoint_id, NEW.run_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS comparisons_inference_check ON comparisons_inference;
CREATE TRIGGER comparisons_inference_check BEFORE INSERT OR UPDATE OF run_id, datapoint_id
ON comparisons_inference FOR EACH ROW EXECUTE FUNCTION comparisons_inference_check();
