-- Each market's latest SegmentID: its row in the newest month it was segmented (NULL SEGMENT_ID:
-- unassigned), with the market's names and its segment's description that month. Markets whose key
-- or name matches %(pattern)s (ILIKE) and, unless %(segment_id)s is NULL, in that segment (-1:
-- unassigned); one page of %(limit)s rows from %(offset)s, by segment or (by_name) by market name;
-- N_TOTAL is the number of matching markets.
SELECT s.MARKET_KEY,
       t.{{ w.territory.market_name }}     AS MARKET_NAME,
       t.{{ w.territory.country }}         AS COUNTRY,
       t.{{ w.territory.territory_group }} AS TERRITORY_GROUP,
       s.SEGMENT_MONTH, s.SEGMENT_ID, s.MODEL_VERSION, s.ALGORITHM, s.RUN_ID,
       p.DESCRIPTION,
       COUNT(*) OVER () AS N_TOTAL
FROM {{ w.market_segment_table }} AS s
JOIN (
    SELECT MARKET_KEY, MAX(SEGMENT_MONTH) AS SEGMENT_MONTH
    FROM {{ w.market_segment_table }}
    GROUP BY MARKET_KEY
) AS latest ON latest.MARKET_KEY = s.MARKET_KEY AND latest.SEGMENT_MONTH = s.SEGMENT_MONTH
LEFT JOIN {{ w.territory.name }} AS t ON t.{{ w.territory.market_key }} = s.MARKET_KEY
LEFT JOIN {{ w.profile_table }} AS p
    ON p.SEGMENT_MONTH = s.SEGMENT_MONTH AND p.SEGMENT_ID IS NOT DISTINCT FROM s.SEGMENT_ID
WHERE (s.MARKET_KEY ILIKE %(pattern)s OR t.{{ w.territory.market_name }} ILIKE %(pattern)s)
  AND (%(segment_id)s IS NULL OR COALESCE(s.SEGMENT_ID, -1) = %(segment_id)s)
{% if by_name %}ORDER BY COALESCE(t.{{ w.territory.market_name }}, s.MARKET_KEY), s.MARKET_KEY
{% else %}ORDER BY s.SEGMENT_ID NULLS LAST, s.MARKET_KEY
{% endif %}
LIMIT %(limit)s OFFSET %(offset)s
