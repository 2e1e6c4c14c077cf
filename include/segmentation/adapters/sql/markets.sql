-- The market dimension, for names in reports and summaries.
SELECT
    t.{{ w.territory.market_key }}      AS market_key,
    t.{{ w.territory.market_name }}     AS market_name,
    t.{{ w.territory.country }}         AS country,
    t.{{ w.territory.territory_group }} AS territory_group
FROM {{ w.territory.name }} AS t
ORDER BY 1
