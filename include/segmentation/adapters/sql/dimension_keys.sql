-- Rows of a dimension that share their key with another row (the contract's key check): how many keys
-- are repeated, the rows they have, and one example. n.key may be two columns for a type-2 table
-- (key and valid_from): a repeated pair is still a duplicate.
SELECT COUNT(*) AS N_KEYS, COALESCE(SUM(N_ROWS), 0) AS N_ROWS, MIN(EXAMPLE) AS EXAMPLE
FROM (
    SELECT CAST({{ n.key }} AS VARCHAR) AS EXAMPLE, COUNT(*) AS N_ROWS
    FROM {{ n.table }}
    GROUP BY {{ n.key }}{% if "version" in n %}, {{ n.version }}{% endif %}
    HAVING COUNT(*) > 1
) AS repeated
