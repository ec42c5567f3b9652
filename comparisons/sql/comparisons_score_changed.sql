-- One in-window winning score of (run r, metric m, datapoint d) appears (old NULL), changes, or goes
-- (new NULL): the one-entry case of comparisons_scores_changed, which holds the rule. The caller
-- holds comparisons_lock_dataset for the run's dataset.
CREATE OR REPLACE FUNCTION comparisons_score_changed(
    r uuid, m text, d uuid, old_value double precision, new_value double precision,
    old_human boolean, new_human boolean
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF old_value IS NOT DISTINCT FROM new_value AND old_human IS NOT DISTINCT FROM new_human THEN
        RETURN;
    END IF;
    PERFORM comparisons_scores_changed(ARRAY[r], ARRAY[m], ARRAY[d], ARRAY[old_value], ARRAY[new_value],
                                       ARRAY[old_human], ARRAY[new_human]);
END $$;
