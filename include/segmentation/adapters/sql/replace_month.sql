-- Replace one month's segments with the staged rows and record the run. writeback.py runs these
-- statements inside one transaction, so a failure at any point leaves the previous contents of this
-- month (and of every other month) intact. DELETE + INSERT rather than MERGE: the month is replaced
-- whole (markets that dropped out lose their row too), and the embedded emulator cannot run MERGE
-- inside an explicit transaction. The stage holds at most one row per (MARKET_KEY, SEGMENT_MONTH):
-- writeback.segment_rows refuses duplicates.
DELETE FROM {{ w.market_segment_table }} WHERE SEGMENT_MONTH = %(segment_month)s;
INSERT INTO {{ w.market_segment_table }} (MARKET_KEY, SEGMENT_MONTH, SEGMENT_ID, MODEL_VERSION, ALGORITHM, RUN_ID)
SELECT MARKET_KEY, SEGMENT_MONTH, SEGMENT_ID, MODEL_VERSION, ALGORITHM, RUN_ID
FROM {{ w.market_segment_table }}_STAGE_{{ token }};
DELETE FROM {{ w.migration_table }} WHERE SEGMENT_MONTH = %(segment_month)s;
INSERT INTO {{ w.migration_table }} (MARKET_KEY, SEGMENT_MONTH, PREVIOUS_MONTH, PREVIOUS_SEGMENT_ID, SEGMENT_ID, MOVED)
SELECT MARKET_KEY, SEGMENT_MONTH, PREVIOUS_MONTH, PREVIOUS_SEGMENT_ID, SEGMENT_ID, MOVED
FROM {{ w.migration_table }}_STAGE_{{ token }};
DELETE FROM {{ w.profile_table }} WHERE SEGMENT_MONTH = %(segment_month)s;
INSERT INTO {{ w.profile_table }} SELECT * FROM {{ w.profile_table }}_STAGE_{{ token }};
-- Months written before the feature table existed: their profile columns become its rows, once.
INSERT INTO {{ w.feature_table }} (SEGMENT_MONTH, SEGMENT_ID, FEATURE, STATISTIC, VALUE, KIND, RUN_ID)
{%- for column, statistic, kind in [
    ("AVG_DISCOUNT", "mean", "fraction"), ("PLATINUM_SHARE", "mean", "fraction"), ("GOLD_SHARE", "mean", "fraction"),
    ("SILVER_SHARE", "mean", "fraction"), ("AVG_LTV", "mean", "currency"), ("TOTAL_PRODUCT_LINES", "mean", "count"),
    ("TOTAL_SUBCATEGORIES", "mean", "count"), ("TREND_SLOPE", "median", "ratio"), ("RECENT_GROWTH", "median", "ratio"),
    ("VOLATILITY", "median", "ratio"), ("SEASONALITY", "median", "fraction")] %}
{{ "UNION ALL " if not loop.first }}SELECT SEGMENT_MONTH, SEGMENT_ID, '{{ column | lower }}', '{{ statistic }}', {{ column }}, '{{ kind }}', RUN_ID
FROM {{ w.profile_table }}
WHERE SEGMENT_MONTH NOT IN (SELECT DISTINCT SEGMENT_MONTH FROM {{ w.feature_table }})
{%- endfor %};
DELETE FROM {{ w.feature_table }} WHERE SEGMENT_MONTH = %(segment_month)s;
INSERT INTO {{ w.feature_table }} SELECT * FROM {{ w.feature_table }}_STAGE_{{ token }};
DELETE FROM {{ w.run_table }} WHERE RUN_ID = %(run_id)s AND SEGMENT_MONTH = %(segment_month)s;
INSERT INTO {{ w.run_table }} (
    RUN_ID, SEGMENT_MONTH, MODEL_VERSION, ALGORITHM, N_CLUSTERS, N_MARKETS, N_EXCLUDED, NOISE_FRACTION,
    SEQ_LEN, SILHOUETTE_HYBRID, SILHOUETTE_LSTM, SILHOUETTE_STATIC, FINAL_LOSS, STABILITY,
    CUSTOMER_ATTRIBUTES, QUALITY, K_REASON, TRAINING, FEATURES
) VALUES (
    %(run_id)s, %(segment_month)s, %(model_version)s, %(algorithm)s, %(n_clusters)s, %(n_markets)s,
    %(n_excluded)s, %(noise_fraction)s, %(seq_len)s, %(silhouette_hybrid)s, %(silhouette_lstm)s,
    %(silhouette_static)s, %(final_loss)s, %(stability)s,
    %(customer_attributes)s, %(quality)s, %(k_reason)s, %(training)s, %(features)s
);
