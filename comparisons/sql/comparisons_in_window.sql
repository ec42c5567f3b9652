-- The run-time window of DESIGN.md: the datapoint existed at the run's time (to the millisecond) and
-- was not yet staled then. models.window_q and models.in_window state the same rule for the ORM and
-- Python; tests/test_window_rule.py proves the three agree. Every part is immutable, so PostgreSQL
-- inlines it into the queries that call it (a call per row would cost more than the query).
CREATE OR REPLACE FUNCTION comparisons_in_window(datapoint uuid, staled timestamptz, run uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT comparisons_uuid7_ms(datapoint) <= comparisons_uuid7_ms(run)
       AND (staled IS NULL OR staled > to_timestamp(comparisons_uuid7_ms(run) / 1000.0))
$$;
