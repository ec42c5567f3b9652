-- An inference deleted: its scores leave the run's sums and the cached pairs.
CREATE OR REPLACE FUNCTION comparisons_inference_forget() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    score record;
BEGIN
    PERFORM comparisons_lock_dataset(d.dataset_id) FROM comparisons_datapoint d WHERE d.id = OLD.datapoint_id;
    FOR score IN
        SELECT w.metric, w.value, w.human FROM comparisons_windowscore w
        WHERE w.run_id = OLD.run_id AND w.datapoint_id = OLD.datapoint_id
    LOOP
        PERFORM comparisons_score_changed(OLD.run_id, score.metric, OLD.datapoint_id, score.value, NULL,
                                          score.human, NULL);
    END LOOP;
    RETURN OLD;
END $$;

DROP TRIGGER IF EXISTS comparisons_inference_forget ON comparisons_inference;
CREATE TRIGGER comparisons_inference_forget BEFORE DELETE ON comparisons_inference
FOR EACH ROW EXECUTE FUNCTION comparisons_inference_forget();
