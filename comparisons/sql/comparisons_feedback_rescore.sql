-- Feedback changed or deleted, by any writer, in any statement: rescore its cell, row by row
-- (inserts are rescored per statement, set-based: comparisons_feedback_inserted).
CREATE OR REPLACE FUNCTION comparisons_feedback_rescore() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM comparisons_rescore(OLD.inference_id, OLD.metric);
    IF TG_OP = 'UPDATE' AND (NEW.inference_id, NEW.metric) <> (OLD.inference_id, OLD.metric) THEN
        PERFORM comparisons_rescore(NEW.inference_id, NEW.metric);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS comparisons_feedback_rescore ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_rescore AFTER UPDATE OR DELETE ON comparisons_feedback
FOR EACH ROW EXECUTE FUNCTION comparisons_feedback_rescore();
