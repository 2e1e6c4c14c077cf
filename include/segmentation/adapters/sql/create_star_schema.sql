-- The star schema the pipeline reads (demo and test loader). Existing tables are replaced.
CREATE OR REPLACE TABLE {{ w.territory.name }} (
    {{ w.territory.market_key }}      VARCHAR NOT NULL,
    {{ w.territory.market_name }}     VARCHAR,
    {{ w.territory.country }}         VARCHAR,
    {{ w.territory.territory_group }} VARCHAR
);
CREATE OR REPLACE TABLE {{ w.customer.name }} (
    {{ w.customer.customer_key }}   NUMBER(12, 0) NOT NULL,
    CUSTOMER_TYPE                   VARCHAR,
    {{ w.customer.loyalty_status }} VARCHAR,
    {{ w.customer.lifetime_value }} FLOAT
);
CREATE OR REPLACE TABLE {{ w.product.name }} (
    {{ w.product.product_key }}  NUMBER(12, 0) NOT NULL,
    PRODUCT_NAME                 VARCHAR,
    {{ w.product.product_line }} VARCHAR,
    {{ w.product.subcategory }}  VARCHAR,
    CATEGORY                     VARCHAR
);
CREATE OR REPLACE TABLE {{ w.date.name }} (
    {{ w.date.date_key }}  NUMBER(8, 0) NOT NULL,
    {{ w.date.full_date }} DATE NOT NULL,
    CALENDAR_YEAR          NUMBER(4, 0),
    CALENDAR_MONTH         NUMBER(2, 0)
);
CREATE OR REPLACE TABLE {{ w.fact_sale.name }} (
    SALES_ORDER_NUMBER              VARCHAR,
    SALES_ORDER_LINE                NUMBER(6, 0),
    CHANNEL                         VARCHAR,
    {{ w.fact_sale.order_date }}    DATE NOT NULL,
    {{ w.fact_sale.market_key }}    VARCHAR NOT NULL,
    {{ w.fact_sale.customer_key }}  NUMBER(12, 0),
    {{ w.fact_sale.product_key }}   NUMBER(12, 0),
    {{ w.fact_sale.sales_amount }}  FLOAT,
    {{ w.fact_sale.discount }}      FLOAT,
    {{ w.fact_sale.quantity }}      NUMBER(10, 0),
    -- optional measures (NULL when the source has none); the configuration maps them to use them
    {{ w.fact_sale.profit or "PROFIT" }} FLOAT,
    {{ w.fact_sale.cost or "COST" }}     FLOAT
);
-- Columns the loader made up because the source lacked them (e.g. loyalty tiers from spend): a run
-- profiles features on them but does not cluster on them unless configured to (derived features).
CREATE OR REPLACE TABLE {{ w.derived_columns_table }} (
    TABLE_NAME   VARCHAR NOT NULL,
    COLUMN_NAME  VARCHAR NOT NULL,
    HOW          VARCHAR NOT NULL
);
