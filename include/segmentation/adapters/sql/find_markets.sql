-- Markets of the market dimension whose key or name matches %(pattern)s (ILIKE), or, when %(key)s is not
-- NULL, whose key is %(key)s; at most %(limit)s.
SELECT t.{{ w.territory.market_key }} AS MARKET_KEY, t.{{ w.territory.market_name }} AS MARKET_NAME
FROM {{ w.territory.name }} AS t
WHERE CASE WHEN %(key)s IS NULL
           THEN t.{{ w.territory.market_key }} ILIKE %(pattern)s OR t.{{ w.territory.market_name }} ILIKE %(pattern)s
           ELSE t.{{ w.territory.market_key }} = %(key)s END
ORDER BY 1
LIMIT %(limit)s
