-- Each month's published run: the run whose rows MARKET_SEGMENT holds. A write replaces its month
-- whole, so all rows of a month share one RUN_ID (MIN only picks it). Months never written: no row.
SELECT SEGMENT_MONTH, MIN(RUN_ID) AS RUN_ID
FROM {{ w.market_segment_table }}
WHERE RUN_ID IS NOT NULL
GROUP BY SEGMENT_MONTH
ORDER BY SEGMENT_MONTH
