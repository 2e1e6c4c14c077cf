-- Static features per market over the run's window [%(window_start)s, %(window_end)s).
-- Identifiers come from the validated SegmentationConfig (w = warehouse config); values are bound.
-- Shares and LTV are per distinct customer who bought in the market in the window, not per fact row,
-- so a customer with many order lines does not outweigh one with a single order.
WITH sales AS (
    SELECT
        f.{{ w.fact_sale.market_key }}   AS market_key,
        f.{{ w.fact_sale.customer_key }} AS customer_key,
        f.{{ w.fact_sale.product_key }}  AS product_key,
        f.{{ w.fact_sale.sales_amount }} AS sales_amount,
        f.{{ w.fact_sale.discount }}     AS discount
    FROM {{ w.fact_sale.name }} AS f
    WHERE f.{{ w.fact_sale.order_date }} >= %(window_start)s
      AND f.{{ w.fact_sale.order_date }} <  %(window_end)s
),
market_customers AS (
    SELECT DISTINCT market_key, customer_key FROM sales
),
customer_mix AS (
    SELECT
        mc.market_key,
        COUNT(*) AS n_customers,
        COUNT(c.{{ w.customer.customer_key }}) AS n_known_customers,  -- found in the customer dimension
        AVG(CASE WHEN c.{{ w.customer.loyalty_status }} = 'Platinum' THEN 1.0 ELSE 0.0 END) AS platinum_share,
        AVG(CASE WHEN c.{{ w.customer.loyalty_status }} = 'Gold' THEN 1.0 ELSE 0.0 END)     AS gold_share,
        AVG(CASE WHEN c.{{ w.customer.loyalty_status }} = 'Silver' THEN 1.0 ELSE 0.0 END)   AS silver_share,
        AVG(c.{{ w.customer.lifetime_value }}) AS avg_ltv
    FROM market_customers AS mc
    LEFT JOIN {{ w.customer.name }} AS c
        ON c.{{ w.customer.customer_key }} = mc.customer_key
{%- include "_customer_as_of.sql" %}
    GROUP BY mc.market_key
),
product_mix AS (
    SELECT
        s.market_key,
{%- if w.fact_sale.discount_kind == "fraction" %}
        AVG(s.discount) AS avg_discount,
{%- else %}
        SUM(s.discount) / NULLIF(SUM(s.sales_amount + s.discount), 0) AS avg_discount,
{%- endif %}
        COUNT(DISTINCT p.{{ w.product.product_line }}) AS total_product_lines,
        COUNT(DISTINCT p.{{ w.product.subcategory }})  AS total_subcategories
    FROM sales AS s
    LEFT JOIN {{ w.product.name }} AS p
        ON p.{{ w.product.product_key }} = s.product_key
    GROUP BY s.market_key
)
SELECT
    pm.market_key,
    pm.avg_discount,
    cm.platinum_share,
    cm.gold_share,
    cm.silver_share,
    cm.avg_ltv,
    pm.total_product_lines,
    pm.total_subcategories,
    cm.n_customers,
    cm.n_known_customers
FROM product_mix AS pm
JOIN customer_mix AS cm ON cm.market_key = pm.market_key
ORDER BY pm.market_key
