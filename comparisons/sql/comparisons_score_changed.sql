-- One in-window winning score of (run r, metric m, datapoint d) appears (old NULL), changes, or goes
-- (new NULL): adjust WindowScore, the run's RunMetricSummary and every cached PairedSummary the run
-- takes part in, as the compared run or as the baseline. Sums are numeric, so adding and removing
-- values never loses a digit to cancellation, whatever their magnitudes. The caller holds
-- comparisons_lock_dataset for the run's dataset.
CREATE OR REPLACE FUNCTION comparisons_score_changed(
    r uuid, m text, d uuid, old_value double precision, new_value double precision,
    old_human boolean, new_human boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_was numeric := comparisons_exact(old_value);
    v_now numeric := comparisons_exact(new_value);
BEGIN
    IF old_value IS NOT DISTINCT FROM new_value AND old_human IS NOT DISTINCT FROM new_human THEN
        RETURN;
    END IF;
    IF new_value IS NULL THEN
        DELETE FROM comparisons_windowscore WHERE run_id = r AND metric = m AND datapoint_id = d;
    ELSE
        INSERT INTO comparisons_windowscore (run_id, metric, datapoint_id, value, human)
        VALUES (r, m, d, new_value, new_human)
        ON CONFLICT (run_id, metric, datapoint_id) DO UPDATE SET value = excluded.value, human = excluded.human;
    END IF;
    INSERT INTO comparisons_runmetricsummary AS s (run_id, metric, n, total, total_sq, overrides)
    VALUES (r, m, (new_value IS NOT NULL)::int - (old_value IS NOT NULL)::int,
            coalesce(v_now, 0) - coalesce(v_was, 0), coalesce(v_now * v_now, 0) - coalesce(v_was * v_was, 0),
            coalesce(new_human::int, 0) - coalesce(old_human::int, 0))
    ON CONFLICT (run_id, metric) DO UPDATE SET n = s.n + excluded.n, total = s.total + excluded.total,
        total_sq = s.total_sq + excluded.total_sq, overrides = s.overrides + excluded.overrides;
    IF old_value IS NOT DISTINCT FROM new_value THEN
        RETURN;  -- only who scored it changed
    END IF;
    -- Every cached pair r takes part in, as the compared run (its value minus the baseline's on d) or
    -- as the baseline (the run's value minus r's), in one statement. comparisons_exact keeps the order
    -- of floats, so the sign of the exact difference says higher, lower or the same.
    UPDATE comparisons_pairedsummary p SET
        n = p.n + (c.d_now IS NOT NULL)::int - (c.d_was IS NOT NULL)::int,
        total = p.total + coalesce(c.d_now, 0) - coalesce(c.d_was, 0),
        total_sq = p.total_sq + coalesce(c.d_now * c.d_now, 0) - coalesce(c.d_was * c.d_was, 0),
        higher = p.higher + coalesce((c.d_now > 0)::int, 0) - coalesce((c.d_was > 0)::int, 0),
        lower = p.lower + coalesce((c.d_now < 0)::int, 0) - coalesce((c.d_was < 0)::int, 0),
        same = p.same + coalesce((c.d_now = 0)::int, 0) - coalesce((c.d_was = 0)::int, 0)
    FROM (
        SELECT q.id, v_now - comparisons_exact(b.value) AS d_now, v_was - comparisons_exact(b.value) AS d_was
        FROM comparisons_pairedsummary q
        JOIN comparisons_windowscore b ON b.run_id = q.baseline_id AND b.metric = m AND b.datapoint_id = d
        WHERE q.run_id = r AND q.metric = m
        UNION ALL
        SELECT q.id, comparisons_exact(s.value) - v_now, comparisons_exact(s.value) - v_was
        FROM comparisons_pairedsummary q
        JOIN comparisons_windowscore s ON s.run_id = q.run_id AND s.metric = m AND s.datapoint_id = d
        WHERE q.baseline_id = r AND q.metric = m
    ) c
    WHERE p.id = c.id;
END $$;
