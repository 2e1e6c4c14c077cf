-- A month's segment profiles and descriptions, largest segment first (unassigned last).
SELECT *
FROM {{ w.profile_table }}
WHERE SEGMENT_MONTH = %(segment_month)s
ORDER BY SEGMENT_ID NULLS LAST
