-- Run records of a month, the one that wrote the current rows first.
SELECT r.*
FROM {{ w.run_table }} AS r
WHERE r.SEGMENT_MONTH = %(segment_month)s
ORDER BY (r.RUN_ID IN (SELECT RUN_ID FROM {{ w.market_segment_table }} WHERE SEGMENT_MONTH = %(segment_month)s)) DESC,
         r.RUN_ID DESC
