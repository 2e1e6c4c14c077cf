-- Monthly aggregates per market over [%(history_start)s, %(window_end)s): the warehouse does the
-- group-by so only (market, month) rows leave Snowflake, never fact rows.
SELECT
    f.{{ w.fact_sale.market_key }}                          AS market_key,
    DATE_TRUNC('MONTH', f.{{ w.fact_sale.order_date }})     AS month_start,
    SUM(f.{{ w.fact_sale.sales_amount }})                   AS revenue,
    SUM(f.{{ w.fact_sale.quantity }})                       AS quantity,
    COUNT(*)                                                AS n_lines,
    COUNT(DISTINCT f.{{ w.fact_sale.customer_key }})        AS n_customers
FROM {{ w.fact_sale.name }} AS f
WHERE f.{{ w.fact_sale.order_date }} >= %(history_start)s
  AND f.{{ w.fact_sale.order_date }} <  %(window_end)s
GROUP BY 1, 2
ORDER BY 1, 2
