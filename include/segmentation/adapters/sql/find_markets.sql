-- Markets of the market dimension whose key or name matches %(pattern)s (ILIKE), at most %(limit)s.
SELECT t.{{ w.territory.market_key }} AS MARKET_KEY, t.{{ w.territory.market_name }} AS MARKET_NAME
FROM {{ w.territory.name }} AS t
WHERE t.{{ w.territory.market_key }} ILIKE %(pattern)s OR t.{{ w.territory.market_name }} ILIKE %(pattern)s
ORDER BY 1
LIMIT %(limit)s
