-- The last line of defence for every writer (runner COPY, corrections, import, admin, raw SQL):
-- the metric is an evaluator of the run's evaluation, the value is finite (a CHECK constraint too),
-- a boolean metric takes 0 or 1, and the value lies in the evaluator's declared range.
CREATE OR REPLACE FUNCTION comparisons_feedback_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    evaluator record;
BEGIN
    SELECT ev.value_type, ev.min_value, ev.max_value INTO evaluator
    FROM comparisons_inference i
    JOIN comparisons_evaluationrun r ON r.id = i.run_id
    JOIN comparisons_evaluator ev ON ev.evaluation_id = r.evaluation_id AND ev.name = NEW.metric
    WHERE i.id = NEW.inference_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feedback %: metric % is not an evaluator of the evaluation of inference %',
            NEW.id, NEW.metric, NEW.inference_id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.value = 'NaN'::float8 OR NEW.value IN ('Infinity'::float8, '-Infinity'::float8) THEN
        RAISE EXCEPTION 'feedback %: metric % takes a finite number, not %', NEW.id, NEW.metric, NEW.value
            USING ERRCODE = 'check_violation';
    END IF;
    IF evaluator.value_type = 'boolean' AND NEW.value NOT IN (0, 1) THEN
        RAISE EXCEPTION 'feedback %: boolean metric % takes 0 or 1, not %', NEW.id, NEW.metric, NEW.value
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.value < evaluator.min_value OR NEW.value > evaluator.max_value THEN
        RAISE EXCEPTION 'feedback %: metric % takes values from % to %, not %', NEW.id, NEW.metric,
            coalesce(evaluator.min_value::text, '-∞'), coalesce(evaluator.max_value::text, '∞'), NEW.value
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS comparisons_feedback_check ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_check BEFORE INSERT OR UPDATE OF inference_id, metric, value
ON comparisons_feedback FOR EACH ROW EXECUTE FUNCTION comparisons_feedback_check();
