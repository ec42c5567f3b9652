"""Database triggers for the rules a foreign key cannot express.

They hold for every writer, bulk loads and imports included: an inference's datapoint must belong
to its run's evaluation dataset and function; a feedback metric must be an evaluator of the run's
evaluation, and a boolean metric takes only 0 or 1.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION comparisons_inference_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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

CREATE TRIGGER comparisons_inference_check BEFORE INSERT OR UPDATE OF run_id, datapoint_id
ON comparisons_inference FOR EACH ROW EXECUTE FUNCTION comparisons_inference_check();

CREATE FUNCTION comparisons_feedback_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vtype text;
BEGIN
    SELECT ev.value_type INTO vtype
    FROM comparisons_inference i
    JOIN comparisons_evaluationrun r ON r.id = i.run_id
    JOIN comparisons_evaluator ev ON ev.evaluation_id = r.evaluation_id AND ev.name = NEW.metric
    WHERE i.id = NEW.inference_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feedback %: metric % is not an evaluator of the evaluation of inference %',
            NEW.id, NEW.metric, NEW.inference_id USING ERRCODE = 'check_violation';
    END IF;
    IF vtype = 'boolean' AND NEW.value NOT IN (0, 1) THEN
        RAISE EXCEPTION 'feedback %: boolean metric % takes 0 or 1, not %', NEW.id, NEW.metric, NEW.value
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER comparisons_feedback_check BEFORE INSERT OR UPDATE OF inference_id, metric, value
ON comparisons_feedback FOR EACH ROW EXECUTE FUNCTION comparisons_feedback_check();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS comparisons_feedback_check ON comparisons_feedback;
DROP FUNCTION IF EXISTS comparisons_feedback_check();
DROP TRIGGER IF EXISTS comparisons_inference_check ON comparisons_inference;
DROP FUNCTION IF EXISTS comparisons_inference_check();
"""


class Migration(migrations.Migration):
    dependencies = [("comparisons", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
