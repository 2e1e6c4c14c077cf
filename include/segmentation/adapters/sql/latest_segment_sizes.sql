-- Markets per SegmentID in the newest month written (NULL: unassigned).
SELECT s.SEGMENT_ID, COUNT(*) AS N_MARKETS
FROM {{ w.market_segment_table }} AS s
WHERE s.SEGMENT_MONTH = (SELECT MAX(SEGMENT_MONTH) FROM {{ w.market_segment_table }})
GROUP BY s.SEGMENT_ID
ORDER BY s.SEGMENT_ID
