-- The Unix milliseconds in the first 48 bits of a UUIDv7 (ids.py writes them).
CREATE OR REPLACE FUNCTION comparisons_uuid7_ms(u uuid) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ('x' || left(replace(u::text, '-', ''), 12))::bit(48)::bigint
$$;
