-- Data-quality counts over the whole fact table that belong to no market (quality.py): lines with
-- a NULL or blank market key or a NULL order date, and lines dated outside the calendar dimension
-- (after its last day, or on a day it lacks: future-dated or mistyped).
SELECT
    SUM(CASE WHEN f.{{ w.fact_sale.market_key }} IS NULL OR TRIM(f.{{ w.fact_sale.market_key }}) = ''
                  OR f.{{ w.fact_sale.order_date }} IS NULL
             THEN 1 ELSE 0 END) AS null_keys,
    SUM(CASE WHEN f.{{ w.fact_sale.order_date }} IS NOT NULL AND d.{{ w.date.full_date }} IS NULL
             THEN 1 ELSE 0 END) AS undated,
    MAX(CASE WHEN d.{{ w.date.full_date }} IS NULL THEN f.{{ w.fact_sale.order_date }} END) AS latest_undated
FROM {{ w.fact_sale.name }} AS f
LEFT JOIN {{ w.date.name }} AS d
    ON d.{{ w.date.full_date }} = CAST(f.{{ w.fact_sale.order_date }} AS DATE)
