-- Months written after the run's month (each aligned, directly or through the months between, to it).
SELECT DISTINCT SEGMENT_MONTH FROM {{ w.market_segment_table }}
WHERE SEGMENT_MONTH > %(segment_month)s
ORDER BY SEGMENT_MONTH
