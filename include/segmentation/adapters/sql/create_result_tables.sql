-- Result tables, created on first write. Re-running is a no-op.
CREATE TABLE IF NOT EXISTS {{ w.market_segment_table }} (
    MARKET_KEY     VARCHAR       NOT NULL,
    SEGMENT_MONTH  DATE          NOT NULL,  -- first day of the month the segment describes
    SEGMENT_ID     NUMBER(4, 0),            -- NULL: unassigned (DBSCAN/HDBSCAN noise)
    MODEL_VERSION  VARCHAR       NOT NULL,  -- lstm_hybrid_v2.0_YYYYMMDD (month end)
    ALGORITHM      VARCHAR       NOT NULL,
    RUN_ID         VARCHAR       NOT NULL
);
CREATE TABLE IF NOT EXISTS {{ w.run_table }} (
    RUN_ID             VARCHAR       NOT NULL,
    SEGMENT_MONTH      DATE          NOT NULL,
    MODEL_VERSION      VARCHAR       NOT NULL,
    ALGORITHM          VARCHAR       NOT NULL,
    N_CLUSTERS         NUMBER(4, 0)  NOT NULL,
    N_MARKETS          NUMBER(10, 0) NOT NULL,
    N_EXCLUDED         NUMBER(10, 0) NOT NULL,
    NOISE_FRACTION     FLOAT         NOT NULL,
    SEQ_LEN            NUMBER(4, 0)  NOT NULL,
    SILHOUETTE_HYBRID  FLOAT,
    SILHOUETTE_LSTM    FLOAT,
    SILHOUETTE_STATIC  FLOAT,
    FINAL_LOSS         FLOAT,
    STABILITY          FLOAT,                 -- share 0-1 of markets keeping last month's SegmentID
    CUSTOMER_ATTRIBUTES VARCHAR,              -- 'as of month end' (type-2 DIM_CUSTOMER) or 'current'
    QUALITY            VARCHAR,               -- JSON: per data-quality check its policy, count, examples
    K_REASON           VARCHAR,               -- why this k: the gap rule, kept from last month, or n_clusters
    TRAINING           VARCHAR                -- how training ended: converged / at its budget, steps, warm start
);
-- Columns added after the first release: tables created by an earlier version gain them here.
ALTER TABLE {{ w.run_table }} ADD COLUMN IF NOT EXISTS QUALITY VARCHAR;
ALTER TABLE {{ w.run_table }} ADD COLUMN IF NOT EXISTS K_REASON VARCHAR;
ALTER TABLE {{ w.run_table }} ADD COLUMN IF NOT EXISTS TRAINING VARCHAR;
ALTER TABLE {{ w.run_table }} ADD COLUMN IF NOT EXISTS FEATURES VARCHAR;  -- JSON: static features, kinds, weights
CREATE TABLE IF NOT EXISTS {{ w.migration_table }} (
    MARKET_KEY           VARCHAR NOT NULL,
    SEGMENT_MONTH        DATE    NOT NULL,
    PREVIOUS_MONTH       DATE,              -- the latest earlier month with segments (NULL: none)
    PREVIOUS_SEGMENT_ID  NUMBER(4, 0),      -- NULL: the market was not segmented then
    SEGMENT_ID           NUMBER(4, 0),
    MOVED                BOOLEAN NOT NULL   -- segmented in both months, under different SegmentIDs
);
CREATE TABLE IF NOT EXISTS {{ w.profile_table }} (
    SEGMENT_MONTH        DATE          NOT NULL,
    SEGMENT_ID           NUMBER(4, 0),            -- NULL: the unassigned (noise) markets
    N_MARKETS            NUMBER(10, 0) NOT NULL,
    SHARE                FLOAT         NOT NULL,  -- share 0-1 of the month's segmented markets
    AVG_DISCOUNT         FLOAT,                   -- means over the segment's markets (units as in the
    PLATINUM_SHARE       FLOAT,                   -- static features: fractions 0-1, LTV in currency,
    GOLD_SHARE           FLOAT,                   -- counts of product lines and subcategories)
    SILVER_SHARE         FLOAT,
    AVG_LTV              FLOAT,
    TOTAL_PRODUCT_LINES  FLOAT,
    TOTAL_SUBCATEGORIES  FLOAT,
    TREND_SLOPE          FLOAT,                   -- medians over the segment's markets: revenue trend per
    RECENT_GROWTH        FLOAT,                   -- month over mean monthly revenue; last 3 months over
    VOLATILITY           FLOAT,                   -- the 3 before, minus 1; std / mean of monthly revenue;
    SEASONALITY          FLOAT,                   -- seasonal strength 0-1 (profiles.market_trends)
    MAIN_GROUP           VARCHAR,
    GROUP_SHARE          FLOAT,                   -- share 0-1 of the segment in MAIN_GROUP
    MAIN_COUNTRY         VARCHAR,
    EXAMPLES             VARCHAR,
    DESCRIPTION          VARCHAR       NOT NULL,
    RUN_ID               VARCHAR       NOT NULL
);
-- Segment profiles, long: every feature a row, so a changed feature set needs no new column. Months
-- written before this table existed are copied in from the profile table's columns by replace_month.sql.
CREATE TABLE IF NOT EXISTS {{ w.feature_table }} (
    SEGMENT_MONTH  DATE     NOT NULL,
    SEGMENT_ID     NUMBER(4, 0),       -- NULL: the unassigned (noise) markets
    FEATURE        VARCHAR  NOT NULL,  -- a static feature's name, a temporal statistic or avg_monthly_revenue
    STATISTIC      VARCHAR  NOT NULL,  -- 'mean' over the segment's markets (static features), else 'median'
    VALUE          FLOAT,
    KIND           VARCHAR  NOT NULL,  -- fraction (0-1), currency, count or ratio
    RUN_ID         VARCHAR  NOT NULL
);
-- For BI tools (Tableau, Power BI): each market's current SegmentID, its row in the newest month
-- written for it (months may be written out of order: the month decides, not the write time), with
-- the segment's description that month. IF NOT EXISTS: concurrent writers never replace it under
-- each other; drop it to take a changed definition.
CREATE VIEW IF NOT EXISTS {{ w.current_segment_view }} AS
SELECT s.MARKET_KEY,
       s.SEGMENT_ID,
       p.DESCRIPTION    AS SEGMENT_DESCRIPTION,
       s.SEGMENT_MONTH,
       s.MODEL_VERSION,
       s.ALGORITHM,
       s.RUN_ID
FROM {{ w.market_segment_table }} AS s
JOIN (
    SELECT MARKET_KEY, MAX(SEGMENT_MONTH) AS SEGMENT_MONTH
    FROM {{ w.market_segment_table }}
    GROUP BY MARKET_KEY
) AS latest ON latest.MARKET_KEY = s.MARKET_KEY AND latest.SEGMENT_MONTH = s.SEGMENT_MONTH
LEFT JOIN {{ w.profile_table }} AS p
    ON p.SEGMENT_MONTH = s.SEGMENT_MONTH AND p.SEGMENT_ID IS NOT DISTINCT FROM s.SEGMENT_ID;
