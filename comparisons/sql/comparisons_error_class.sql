-- The class of an inference's error, for the comparison's failure analysis and its
-- `filter=error:<class>`: 'timeout', 'rate limit', 'malformed judge answer', 'scorer error', the
-- exception's type name ('APIError', 'ValueError', …) when the text starts with one, else 'other'.
-- NULL for no error. Immutable: the same text always has the same class.
CREATE OR REPLACE FUNCTION comparisons_error_class(error text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN error IS NULL THEN NULL
        WHEN error ~* '^\s*(\w+\.)*TimeoutError|did not (finish|answer) within|timed out' THEN 'timeout'
        WHEN error ~* 'rate.?limit|\m429\M' THEN 'rate limit'
        WHEN error ~* 'judge' AND error ~* 'answer|pars|json|malformed' THEN 'malformed judge answer'
        WHEN error ~* 'in scorer ''' THEN 'scorer error'
        WHEN error ~ '^\s*(\w+\.)*\w*(Error|Exception|Exit|Interrupt)\M'
            THEN substring(error FROM '^\s*(?:\w+\.)*(\w*(?:Error|Exception|Exit|Interrupt))\M')
        ELSE 'other'
    END
$$;
