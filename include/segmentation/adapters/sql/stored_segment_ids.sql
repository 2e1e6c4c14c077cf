-- The SegmentIDs stored for the run's month (none when it was never written).
SELECT MARKET_KEY, SEGMENT_ID FROM {{ w.market_segment_table }}
WHERE SEGMENT_MONTH = %(segment_month)s
