-- Markets per SegmentID in every month written (NULL SEGMENT_ID: unassigned), oldest month first.
SELECT SEGMENT_MONTH, SEGMENT_ID, COUNT(*) AS N_MARKETS
FROM {{ w.market_segment_table }}
GROUP BY SEGMENT_MONTH, SEGMENT_ID
ORDER BY SEGMENT_MONTH, SEGMENT_ID NULLS LAST
