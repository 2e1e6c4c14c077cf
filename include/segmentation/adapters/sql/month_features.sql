-- A month's segment profiles, long (one row per SegmentID and feature), in the order they were written.
SELECT SEGMENT_ID, FEATURE, STATISTIC, VALUE, KIND
FROM {{ w.feature_table }}
WHERE SEGMENT_MONTH = %(segment_month)s
