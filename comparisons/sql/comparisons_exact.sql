-- A score as an exact numeric: the shortest decimal that reads back as the same float8 (so a mean of
-- one value is that value, even at ±1.8e308). float8::numeric would keep only 15 digits. Every sum of
-- scores goes through here. The text form is shortest-precise whenever extra_float_digits > 0 (the
-- default, and what pg_dump uses); the kept-table writers set it back to 1 if a client lowered it.
CREATE OR REPLACE FUNCTION comparisons_exact(v double precision) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT v::text::numeric
$$;
