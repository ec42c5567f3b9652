-- Any feedback written, changed or deleted, by any writer, in any statement: rescore its cell.
CREATE OR REPLACE FUNCTION comparisons_feedback_rescore() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM comparisons_rescore(OLD.inference_id, OLD.metric);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND (NEW.inference_id, NEW.metric) <> (OLD.inference_id, OLD.metric)) THEN
        PERFORM comparisons_rescore(NEW.inference_id, NEW.metric);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS comparisons_feedback_rescore ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_rescore AFTER INSERT OR UPDATE OR DELETE ON comparisons_feedback
FOR EACH ROW EXECUTE FUNCTION comparisons_feedback_rescore();
