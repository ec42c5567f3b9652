-- The last line of defence for every writer (runner COPY, corrections, import, admin, raw SQL):
-- the metric is an evaluator of the run's evaluation, the value is finite (a CHECK constraint too),
-- a boolean metric takes 0 or 1, and the value lies in the evaluator's declared range. Inserts are
-- checked once per statement, set-based; an update of the inference, metric or value, per row. The
-- first offending row, in the statement's order, is named.
CREATE OR REPLACE FUNCTION comparisons_feedback_check() RETURNS trigger LANGUAGE plpgsql
-- Index lookups per row, whatever the statistics say (they lag behind a run being written).
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    ids uuid[];
    inferences uuid[];
    metrics text[];
    vals double precision[];
    problem text;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        ids := ARRAY[NEW.id];
        inferences := ARRAY[NEW.inference_id];
        metrics := ARRAY[NEW.metric::text];
        vals := ARRAY[NEW.value];
    ELSE
        SELECT array_agg(n.id), array_agg(n.inference_id), array_agg(n.metric::text), array_agg(n.value)
        INTO ids, inferences, metrics, vals FROM new_rows n;
    END IF;
    SELECT p.message INTO problem FROM (
        SELECT c.k, CASE
            WHEN ev.value_type IS NULL THEN
                format('feedback %s: metric %s is not an evaluator of the evaluation of inference %s',
                       c.id, c.metric, c.inference_id)
            WHEN c.value = 'NaN'::float8 OR c.value IN ('Infinity'::float8, '-Infinity'::float8) THEN
                format('feedback %s: metric %s takes a finite number, not %s', c.id, c.metric, c.value)
            WHEN ev.value_type = 'boolean' AND c.value NOT IN (0, 1) THEN
                format('feedback %s: boolean metric %s takes 0 or 1, not %s', c.id, c.metric, c.value)
            WHEN c.value < ev.min_value OR c.value > ev.max_value THEN
                format('feedback %s: metric %s takes values from %s to %s, not %s', c.id, c.metric,
                       coalesce(ev.min_value::text, '-∞'), coalesce(ev.max_value::text, '∞'), c.value)
        END AS message
        FROM unnest(ids, inferences, metrics, vals) WITH ORDINALITY AS c(id, inference_id, metric, value, k)
        LEFT JOIN comparisons_inference i ON i.id = c.inference_id
        LEFT JOIN comparisons_evaluationrun r ON r.id = i.run_id
        LEFT JOIN comparisons_evaluator ev ON ev.evaluation_id = r.evaluation_id AND ev.name = c.metric
    ) p
    WHERE p.message IS NOT NULL
    ORDER BY p.k
    LIMIT 1;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    RETURN CASE WHEN TG_LEVEL = 'ROW' THEN NEW END;
END $$;

DROP TRIGGER IF EXISTS comparisons_feedback_check ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_check BEFORE UPDATE OF inference_id, metric, value
ON comparisons_feedback FOR EACH ROW EXECUTE FUNCTION comparisons_feedback_check();
DROP TRIGGER IF EXISTS comparisons_feedback_check_insert ON comparisons_feedback;
CREATE TRIGGER comparisons_feedback_check_insert AFTER INSERT ON comparisons_feedback
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION comparisons_feedback_check();
