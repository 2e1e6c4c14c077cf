"""Feature names shared by the SQL, the steps, the result tables and the report: one place for each contract.

Every tuple is ordered: it is the column order of the frames and arrays that carry the features.
"""

from __future__ import annotations

#: Static features from ``sql/static_features.sql``: discount rate (0-1), loyalty shares (0-1),
#: average customer lifetime value (currency), distinct product lines and subcategories (counts).
STATIC_FEATURES = (
    "avg_discount",
    "platinum_share",
    "gold_share",
    "silver_share",
    "avg_ltv",
    "total_product_lines",
    "total_subcategories",
)

#: Raw monthly measures from ``sql/monthly_sales.sql`` (lower-case columns).
MONTHLY_COLUMNS = ("revenue", "quantity", "n_lines", "n_customers")

#: Per-month features fed to the autoencoder, in this order (the last axis of the sequence arrays).
SEQUENCE_FEATURES = ("log_revenue", "revenue_growth", "log_customers", "log_quantity")

#: The sequence features that measure a level (how big), not a movement: ``sequences.shape_windows``
#: removes each window's mean from them so the encoder sees shape, not size.
LEVEL_FEATURES = ("log_revenue", "log_customers", "log_quantity")

#: Temporal statistics per market (``profiles.market_trends``); all unit-free. Written to the profile table.
TREND_FEATURES = ("trend_slope", "recent_growth", "volatility", "seasonality")

#: Market size per market (``profiles.market_trends``): mean monthly net revenue over the window, in currency.
#: In ``trends.parquet`` and ``profiles.parquet`` (segment median) and the descriptions, not in the
#: warehouse's profile table, whose columns are fixed (``sql/create_result_tables.sql``).
SIZE_FEATURES = ("avg_monthly_revenue",)
