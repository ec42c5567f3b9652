-- The run-time window of DESIGN.md: the datapoint existed at the run's time (to the millisecond) and
-- was not yet staled then. models.window_q and models.in_window state the same rule for the ORM and
-- Python; tests/test_window_rule.py proves the three agree.
CREATE OR REPLACE FUNCTION comparisons_in_window(datapoint uuid, staled timestamptz, run uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT comparisons_uuid7_ms(datapoint) <= comparisons_uuid7_ms(run)
       AND (staled IS NULL OR staled > timestamptz 'epoch' + comparisons_uuid7_ms(run) * interval '1 millisecond')
$$;
