-- The latest month before the run's month that has segments, with its SegmentIDs, and the highest
-- SegmentID ever used before the run's month (so a new segment never reuses an old id).
-- RUN_ID: the run that wrote that month (its artifacts hold the model a warm start continues from).
SELECT s.MARKET_KEY, s.SEGMENT_ID, s.SEGMENT_MONTH, s.RUN_ID,
       (SELECT MAX(SEGMENT_ID) FROM {{ w.market_segment_table }} WHERE SEGMENT_MONTH < %(segment_month)s) AS MAX_ID
FROM {{ w.market_segment_table }} AS s
WHERE s.SEGMENT_MONTH = (
    SELECT MAX(SEGMENT_MONTH) FROM {{ w.market_segment_table }} WHERE SEGMENT_MONTH < %(segment_month)s
)
ORDER BY s.MARKET_KEY
