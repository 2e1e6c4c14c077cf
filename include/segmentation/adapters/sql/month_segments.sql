-- A month's SegmentIDs with the market's names.
SELECT s.MARKET_KEY, s.SEGMENT_ID, t.{{ w.territory.market_name }} AS MARKET_NAME,
       t.{{ w.territory.territory_group }} AS TERRITORY_GROUP
FROM {{ w.market_segment_table }} AS s
LEFT JOIN {{ w.territory.name }} AS t ON t.{{ w.territory.market_key }} = s.MARKET_KEY
WHERE s.SEGMENT_MONTH = %(segment_month)s
ORDER BY s.SEGMENT_ID, s.MARKET_KEY
