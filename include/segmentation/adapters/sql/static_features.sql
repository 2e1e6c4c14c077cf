-- Static features per market over the run's window [%(window_start)s, %(window_end)s), one column per
-- configured feature (config.static_features; the templates are listed in config.TEMPLATES).
-- Identifiers come from the validated SegmentationConfig (w = warehouse config; a feature's column is
-- the identifier its config field maps); feature names are checked lower-case identifiers; values,
-- such as the loyalty status a share counts, are bound (feature_NAME, warehouse.feature_params).
-- Shares and customer averages are per distinct customer who bought in the market in the window, not
-- per fact row, so a customer with many order lines does not outweigh one with a single order.
{%- set customer_templates = ("customer_share", "customer_average") %}
WITH sales AS (
    SELECT
        f.{{ w.fact_sale.market_key }}   AS market_key,
        f.{{ w.fact_sale.customer_key }} AS customer_key,
        f.{{ w.fact_sale.product_key }}  AS product_key,
        f.{{ w.fact_sale.sales_amount }} AS sales_amount,
        f.{{ w.fact_sale.discount }}     AS discount,
        f.{{ w.fact_sale.quantity }}     AS quantity
{%- for role in ("profit", "cost") if w.fact_sale[role] %},
        f.{{ w.fact_sale[role] }} AS {{ role }}
{%- endfor %}
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
        -- customers found in the customer dimension
        COUNT(c.{{ w.customer.customer_key }}) AS n_known_customers
{%- for f in features if f.template in customer_templates %},
{%- if f.template == "customer_share" %}
        AVG(CASE WHEN c.{{ w.customer[f.column] }} = %(feature_{{ f.name }})s THEN 1.0 ELSE 0.0 END) AS {{ f.name }}
{%- else %}
        AVG(c.{{ w.customer[f.column] }}) AS {{ f.name }}
{%- endif %}
{%- endfor %}
    FROM market_customers AS mc
    LEFT JOIN {{ w.customer.name }} AS c
        ON c.{{ w.customer.customer_key }} = mc.customer_key
{%- include "_customer_as_of.sql" %}
    GROUP BY mc.market_key
),
product_mix AS (
    SELECT
        s.market_key
{%- for f in features if f.template not in customer_templates %},
{%- if f.template == "discount_rate" and w.fact_sale.discount_kind == "fraction" %}
        AVG(s.discount) AS {{ f.name }}
{%- elif f.template == "discount_rate" %}
        SUM(s.discount) / NULLIF(SUM(s.sales_amount + s.discount), 0) AS {{ f.name }}
{%- elif f.template == "line_average" %}
        AVG(s.{{ f.column }}) AS {{ f.name }}
{%- elif f.template == "line_ratio" %}
        SUM(s.{{ f.column }}) / NULLIF(SUM(s.{{ f.denominator }}), 0) AS {{ f.name }}
{%- elif f.template == "distinct_count" %}
        COUNT(DISTINCT p.{{ w.product[f.column] }}) AS {{ f.name }}
{%- endif %}
{%- endfor %}
    FROM sales AS s
    LEFT JOIN {{ w.product.name }} AS p
        ON p.{{ w.product.product_key }} = s.product_key
    GROUP BY s.market_key
)
SELECT
    pm.market_key,
{%- for f in features %}
    {{ "cm" if f.template in customer_templates else "pm" }}.{{ f.name }},
{%- endfor %}
    cm.n_customers,
    cm.n_known_customers
FROM product_mix AS pm
JOIN customer_mix AS cm ON cm.market_key = pm.market_key
ORDER BY pm.market_key
