-- One market's SegmentID in every month written (NULL: unassigned), with its segment's description
-- that month; oldest month first.
SELECT s.SEGMENT_MONTH, s.SEGMENT_ID, s.MODEL_VERSION, s.RUN_ID, p.DESCRIPTION
FROM {{ w.market_segment_table }} AS s
LEFT JOIN {{ w.profile_table }} AS p
    ON p.SEGMENT_MONTH = s.SEGMENT_MONTH AND p.SEGMENT_ID IS NOT DISTINCT FROM s.SEGMENT_ID
WHERE s.MARKET_KEY = %(market_key)s
ORDER BY s.SEGMENT_MONTH
