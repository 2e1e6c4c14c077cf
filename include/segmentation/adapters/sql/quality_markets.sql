-- Data-quality counts per market (quality.py): fact lines over the history
-- [%(history_start)s, %(window_end)s), customers over the window [%(window_start)s, %(window_end)s)
-- as static_features.sql sees them. Lines with a NULL market key are counted by quality_table.sql.
-- outlier_lines: robust z-score of a line's log amount against every line of the history (median and
-- MAD scaled by 1.4826, Iglewicz & Hoaglin 1993), above %(outlier_z)s; LINE_LIMIT is the amount that z means.
WITH history AS (
    SELECT
        f.{{ w.fact_sale.market_key }}   AS market_key,
        f.{{ w.fact_sale.customer_key }} AS customer_key,
        f.{{ w.fact_sale.product_key }}  AS product_key,
        f.{{ w.fact_sale.order_date }}   AS order_date,
        f.{{ w.fact_sale.sales_amount }} AS sales_amount,
        f.{{ w.fact_sale.discount }}     AS discount,
        -- lines in a group of equal line keys (or, without a line key, of equal mapped columns)
        COUNT(*) OVER (PARTITION BY
{%- if w.fact_sale.line_key %}
            {% for c in w.fact_sale.line_key %}f.{{ c }}{{ ", " if not loop.last }}{% endfor %}
{%- else %}
            f.{{ w.fact_sale.order_date }}, f.{{ w.fact_sale.market_key }}, f.{{ w.fact_sale.customer_key }},
            f.{{ w.fact_sale.product_key }}, f.{{ w.fact_sale.sales_amount }}, f.{{ w.fact_sale.discount }},
            f.{{ w.fact_sale.quantity }}
{%- endif %}
        ) AS copies
    FROM {{ w.fact_sale.name }} AS f
    WHERE f.{{ w.fact_sale.order_date }} >= %(history_start)s
      AND f.{{ w.fact_sale.order_date }} <  %(window_end)s
      AND f.{{ w.fact_sale.market_key }} IS NOT NULL
),
log_amounts AS (
    SELECT LN(NULLIF(ABS(sales_amount), 0)) AS x FROM history
),
line_scale AS (
    SELECT c.center, MEDIAN(ABS(l.x - c.center)) * 1.4826 AS spread
    FROM log_amounts AS l
    CROSS JOIN (SELECT MEDIAN(x) AS center FROM log_amounts) AS c
    GROUP BY c.center
),
lines AS (
    SELECT
        h.market_key,
        SUM(CASE WHEN h.customer_key IS NULL OR h.product_key IS NULL OR h.sales_amount IS NULL
                 THEN 1 ELSE 0 END)                                                      AS null_keys,
        SUM(CASE WHEN h.copies > 1 THEN 1 ELSE 0 END)                                    AS duplicate_lines,
        SUM(CASE WHEN h.product_key IS NOT NULL AND p.product_key IS NULL THEN 1 ELSE 0 END) AS unknown_products,
        SUM(CASE WHEN LN(NULLIF(ABS(h.sales_amount), 0)) - ls.center > %(outlier_z)s * NULLIF(ls.spread, 0)
                 THEN 1 ELSE 0 END)                                                      AS outlier_lines,
        MAX(EXP(ls.center + %(outlier_z)s * ls.spread))                                  AS line_limit,
{%- if w.fact_sale.discount_kind == "fraction" %}
        SUM(CASE WHEN h.discount < 0 OR h.discount > 1 THEN 1 ELSE 0 END)                AS discount_range
{%- else %}
        SUM(CASE WHEN h.discount < 0 THEN 1 ELSE 0 END)                                  AS discount_range
{%- endif %}
    FROM history AS h
    LEFT JOIN (SELECT DISTINCT {{ w.product.product_key }} AS product_key FROM {{ w.product.name }}) AS p
        ON p.product_key = h.product_key
    CROSS JOIN line_scale AS ls
    GROUP BY h.market_key
),
market_customers AS (
    SELECT DISTINCT market_key, customer_key
    FROM history
    WHERE order_date >= %(window_start)s AND customer_key IS NOT NULL
),
customers AS (
    SELECT
        mc.market_key,
        SUM(CASE WHEN c.{{ w.customer.customer_key }} IS NOT NULL
                  AND (c.{{ w.customer.loyalty_status }} IS NULL
                       OR c.{{ w.customer.loyalty_status }} NOT IN (
                           {%- for i in range(n_loyalty) %}%(loyalty_{{ i }})s{{ ", " if not loop.last }}{% endfor -%}
                       ))
                 THEN 1 ELSE 0 END) AS unknown_loyalty,
        SUM(CASE WHEN c.{{ w.customer.customer_key }} IS NOT NULL
                  AND (c.{{ w.customer.lifetime_value }} IS NULL OR c.{{ w.customer.lifetime_value }} < 0)
                 THEN 1 ELSE 0 END) AS bad_lifetime_value
    FROM market_customers AS mc
    LEFT JOIN {{ w.customer.name }} AS c
        ON c.{{ w.customer.customer_key }} = mc.customer_key
{%- include "_customer_as_of.sql" %}
    GROUP BY mc.market_key
)
SELECT
    l.market_key,
    l.null_keys,
    l.duplicate_lines,
    l.unknown_products,
    l.discount_range,
    l.outlier_lines,
    l.line_limit,
    COALESCE(c.unknown_loyalty, 0)    AS unknown_loyalty,
    COALESCE(c.bad_lifetime_value, 0) AS bad_lifetime_value
FROM lines AS l
LEFT JOIN customers AS c ON c.market_key = l.market_key
ORDER BY l.market_key
