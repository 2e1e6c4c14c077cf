-- A month's markets that changed SegmentID since the month before it was written (MOVED), with names.
SELECT m.MARKET_KEY, t.{{ w.territory.market_name }} AS MARKET_NAME, m.PREVIOUS_MONTH,
       m.PREVIOUS_SEGMENT_ID, m.SEGMENT_ID
FROM {{ w.migration_table }} AS m
LEFT JOIN {{ w.territory.name }} AS t ON t.{{ w.territory.market_key }} = m.MARKET_KEY
WHERE m.SEGMENT_MONTH = %(segment_month)s AND m.MOVED
ORDER BY m.MARKET_KEY
