-- Make the kept state of one (inference, metric) equal to the truth: the winning feedback (greatest
-- id) when the inference's datapoint is inside its run's window, nothing otherwise. Every change of
-- feedback or of a window goes through here, so there is one rule for what a kept score is.
-- The dataset lock comes before the reads, so a concurrent writer's committed change is seen.
CREATE OR REPLACE FUNCTION comparisons_rescore(target uuid, m text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    dataset bigint;
    run uuid;
    datapoint uuid;
    inside boolean;
    winner_value double precision;
    winner_human boolean;
    kept_value double precision;
    kept_human boolean;
BEGIN
    SELECT i.run_id, i.datapoint_id, d.dataset_id INTO run, datapoint, dataset
    FROM comparisons_inference i JOIN comparisons_datapoint d ON d.id = i.datapoint_id WHERE i.id = target;
    IF NOT FOUND THEN
        RETURN;  -- the inference is gone: its delete trigger took its scores out
    END IF;
    PERFORM comparisons_lock_dataset(dataset);
    -- An inference keeps its run and datapoint; only the datapoint's stale time can have moved meanwhile.
    SELECT comparisons_in_window(d.id, d.staled_at, run) INTO inside FROM comparisons_datapoint d WHERE d.id = datapoint;
    IF inside THEN
        SELECT f.value, f.source = 'human' INTO winner_value, winner_human FROM comparisons_feedback f
        WHERE f.inference_id = target AND f.metric = m ORDER BY f.id DESC LIMIT 1;
    END IF;
    SELECT w.value, w.human INTO kept_value, kept_human FROM comparisons_windowscore w
    WHERE w.run_id = run AND w.metric = m AND w.datapoint_id = datapoint;
    PERFORM comparisons_score_changed(run, m, datapoint, kept_value, winner_value, kept_human, winner_human);
END $$;
