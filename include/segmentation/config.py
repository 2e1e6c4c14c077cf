"""One validated configuration object for the whole pipeline.

Every physical table and column name, every model and clustering setting, lives here so a user
maps their own warehouse by writing one YAML/JSON file (``SEGMENTATION_CONFIG``) instead of
editing SQL or code. Names are validated as Snowflake identifiers because they are rendered into
SQL text (values never are: they are bound parameters).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

#: A target month: YYYY-MM, ASCII digits, years 1900-2199 (pandas timestamps end in 2262).
MONTH_PATTERN = r"^(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])$"

# Unquoted Snowflake identifier: ASCII letter or underscore first, then letters, digits, _ or $.
# 249 rather than 255 characters so that derived names (the "_STAGE" table) stay within the limit.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,248}$", re.ASCII)

# Snowflake's reserved keywords (docs: "Reserved & limited keywords"): unquoted, they break SQL.
_RESERVED = frozenset(
    """ACCOUNT ALL ALTER AND ANY AS BETWEEN BY CASE CAST CHECK COLUMN CONNECT CONNECTION CONSTRAINT CREATE
    CROSS CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DATABASE DELETE DISTINCT DROP
    ELSE EXISTS FALSE FOLLOWING FOR FROM FULL GRANT GROUP GSCLUSTER HAVING ILIKE IN INCREMENT INNER
    INSERT INTERSECT INTO IS ISSUE JOIN LATERAL LEFT LIKE LOCALTIME LOCALTIMESTAMP MINUS NATURAL NOT
    NULL OF ON OR ORDER ORGANIZATION QUALIFY REGEXP REVOKE RIGHT RLIKE ROW ROWS SAMPLE SCHEMA SELECT SET
    SOME START TABLE TABLESAMPLE THEN TO TRIGGER TRUE TRY_CAST UNION UNIQUE UPDATE USING VALUES VIEW
    WHEN WHENEVER WHERE WINDOW WITH""".split()
)


def check_identifier(value: str) -> str:
    """``value`` upper-cased when it is a plain, unreserved Snowflake identifier; else ``ValueError`` saying why."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain Snowflake identifier (ASCII letters, digits, _ and $, starting "
            "with a letter or _, at most 249 characters); quoted or dotted names are not accepted"
        )
    if value.upper() in _RESERVED:
        raise ValueError(f"{value!r} is a reserved Snowflake keyword and cannot be used as a plain identifier")
    return value.upper()


Identifier = Annotated[str, AfterValidator(check_identifier)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FactSaleTable(_Strict):
    name: Identifier = "FACT_SALE"
    order_date: Identifier = "ORDER_DATE"
    market_key: Identifier = "MARKET_KEY"
    customer_key: Identifier = "CUSTOMER_KEY"
    product_key: Identifier = "PRODUCT_KEY"
    sales_amount: Identifier = "SALES_AMOUNT"
    discount: Identifier = "DISCOUNT_PCT"
    quantity: Identifier = "QUANTITY"
    profit: Identifier | None = Field(
        None, description="Optional: the line's profit (currency), for features such as margin (profit / sales)."
    )
    cost: Identifier | None = Field(None, description="Optional: the line's cost (currency).")
    discount_kind: Literal["fraction", "amount"] = Field(
        "fraction",
        description="'fraction': the discount column is a rate 0-1 per line; "
        "'amount': it is a currency amount taken off the line (AvgDiscount = discount / gross).",
    )
    line_key: tuple[Identifier, ...] = Field(
        ("SALES_ORDER_NUMBER", "SALES_ORDER_LINE"),
        description="Columns that identify one fact line, for the duplicate_lines check; empty: lines equal "
        "in every mapped column count as duplicates.",
    )


class TerritoryTable(_Strict):
    name: Identifier = "DIM_TERRITORY"
    market_key: Identifier = "MARKET_KEY"
    market_name: Identifier = "MARKET_NAME"
    country: Identifier = "COUNTRY"
    territory_group: Identifier = "TERRITORY_GROUP"


class CustomerTable(_Strict):
    name: Identifier = "DIM_CUSTOMER"
    customer_key: Identifier = "CUSTOMER_KEY"
    loyalty_status: Identifier = "LOYALTY_STATUS"
    lifetime_value: Identifier = "LIFETIME_VALUE"
    valid_from: Identifier | None = Field(
        None,
        description="Type-2 dimension: first day a row is valid (inclusive). With valid_to, attributes "
        "are taken as of the run's month end; without, current values are used (and the run record says so).",
    )
    valid_to: Identifier | None = Field(
        None, description="Type-2 dimension: day a row stops being valid (exclusive; NULL = current)."
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> CustomerTable:
        if (self.valid_from is None) != (self.valid_to is None):
            raise ValueError("set both valid_from and valid_to (a type-2 customer dimension) or neither")
        return self

    @property
    def is_type2(self) -> bool:
        """Whether attributes can be read as of a date."""
        return self.valid_from is not None


class ProductTable(_Strict):
    name: Identifier = "DIM_PRODUCT"
    product_key: Identifier = "PRODUCT_KEY"
    product_line: Identifier = "PRODUCT_LINE"
    subcategory: Identifier = "SUBCATEGORY"


class DateTable(_Strict):
    name: Identifier = "DIM_DATE"
    date_key: Identifier = "DATE_KEY"
    full_date: Identifier = "FULL_DATE"


class WarehouseConfig(_Strict):
    """Where the star schema lives and where results are written (same database and schema)."""

    conn_id: str = "snowflake_default"
    account: str = Field(
        "fakesnow",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Snowflake account identifier, used only to name the result tables as Airflow Assets "
        "(snowflake://<account>/<db>/<schema>/<table>); the connection carries its own.",
    )
    database: Identifier = "SEGMENTATION"
    schema_: Identifier = Field("MART", alias="schema")
    fact_sale: FactSaleTable = FactSaleTable()
    territory: TerritoryTable = TerritoryTable()
    customer: CustomerTable = CustomerTable()
    product: ProductTable = ProductTable()
    date: DateTable = DateTable()
    market_segment_table: Identifier = "MARKET_SEGMENT"
    run_table: Identifier = "SEGMENTATION_RUN"
    migration_table: Identifier = "SEGMENT_MIGRATION"
    profile_table: Identifier = "SEGMENT_PROFILE"
    feature_table: Identifier = Field(
        "SEGMENT_FEATURE", description="Segment profiles, long: one row per month, SegmentID and feature."
    )
    derived_columns_table: Identifier = Field(
        "DERIVED_COLUMNS",
        description="Where a loader records columns it made up (TABLE_NAME, COLUMN_NAME, HOW); read if present.",
    )
    current_segment_view: Identifier = Field(
        "CURRENT_MARKET_SEGMENT",
        description="View for BI tools: each market's SegmentID in the newest month it was written, with the "
        "segment's description, the month and the model version (created with the result tables).",
    )

    @model_validator(mode="after")
    def _result_tables_are_new(self) -> WarehouseConfig:
        inputs = {self.fact_sale.name, self.territory.name, self.customer.name, self.product.name, self.date.name}
        results = [self.market_segment_table, self.run_table, self.migration_table, self.profile_table]
        results += [self.feature_table, self.derived_columns_table, self.current_segment_view]
        staged = (self.market_segment_table, self.migration_table, self.profile_table, self.feature_table)
        results += [f"{t}_STAGE" for t in staged]
        if len(set(results)) < len(results) or inputs & set(results):
            raise ValueError(
                f"market_segment_table ({self.market_segment_table}), run_table ({self.run_table}), "
                f"migration_table ({self.migration_table}), profile_table ({self.profile_table}) and feature_table "
                f"({self.feature_table}) must "
                "differ from each other, their _STAGE tables and the star schema's tables"
            )
        return self


class SequenceConfig(_Strict):
    seq_len: int = Field(12, ge=6, le=24, description="Window length in months, ending at the run's month.")
    history_months: int = Field(
        36, ge=6, le=240, description="Months of history (ending at the run's month) whose windows train the model."
    )
    min_active_months: int = Field(
        3, ge=1, description="A market needs sales in at least this many months of its latest window."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SequenceConfig:
        if self.history_months < self.seq_len:
            raise ValueError(f"history_months ({self.history_months}) must be at least seq_len ({self.seq_len})")
        if self.min_active_months > self.seq_len:
            raise ValueError(f"min_active_months ({self.min_active_months}) cannot exceed seq_len ({self.seq_len})")
        return self


class ModelConfig(_Strict):
    embedding_dim: int = Field(32, ge=2, le=512)
    hidden_dim: int = Field(64, ge=4, le=2048)
    num_layers: int = Field(1, ge=1, le=4)
    epochs: int = Field(
        200,
        ge=1,
        le=10_000,
        description="At most this many passes over the training windows; training normally stops earlier, when the "
        "loss stops improving (patience, min_delta) or at max_steps.",
    )
    min_steps: int = Field(
        300,
        ge=0,
        description="Train from scratch at least this many optimizer steps, so small warehouses still train "
        "(a warm start from last month's model has no floor).",
    )
    validation_share: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Share of markets (at least 10 needed) whose windows are held out of training; early stopping "
        "watches their reconstruction loss, which stops improving once the model learns only noise. 0: watch the "
        "training loss.",
    )
    patience: int = Field(
        8, ge=1, le=1000, description="Early stopping: rounds (epochs, or 100 steps) without improvement."
    )
    min_delta: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Early stopping: a round improves when its loss is this much (relative) below the best.",
    )
    batch_size: int = Field(64, ge=1, description="Windows per optimizer step on CPU.")
    gpu_batch_size: int = Field(
        4096, ge=1, description="Windows per optimizer step on CUDA (large batches keep the GPU busy)."
    )
    max_steps: int | None = Field(
        3000,
        ge=1,
        description="Stop after this many optimizer steps: training cost is bounded by this budget, not by the "
        "number of markets (None: no bound).",
    )
    max_train_windows: int = Field(
        200_000,
        ge=1,
        description="Train on a seeded random sample of at most this many windows (bounds memory on large warehouses).",
    )
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    collapse_threshold: float = Field(
        1e-3, ge=0, description="Warn when the embedding spread (autoencoder.embedding_spread) falls below this."
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads on CPU; default: the cores this process may use. Measured on 2 cores with "
        "the default 64-window batches: 2 threads train at ~14,000 windows/s on an idle machine but 250-4,000 "
        "when other processes share the cores; 1 thread at ~10,000 either way. Set 1 on shared CPU workers.",
    )


class ClusterConfig(_Strict):
    algorithm: Literal["kmeans", "dbscan", "hdbscan"] = "kmeans"
    n_clusters: int | None = Field(
        None, ge=2, le=50, description="None: choose k by the gap statistic (k_selection), kept across months."
    )
    k_min: int = Field(2, ge=2)
    k_max: int = Field(10, ge=2, le=50)
    k_fallback: int = Field(
        4,
        ge=2,
        le=50,
        description="k when the gap statistic finds no cluster structure (markets form a continuum): a readable "
        "number of segments, the same for every seed, instead of a k picked from noise.",
    )
    min_segment_share: float = Field(
        0.04,
        ge=0,
        le=0.5,
        description="A k is admissible only if every segment holds at least this share (0-1) of the markets "
        "(AdventureWorks: 3 of 67 markets); no single-market segments.",
    )
    min_segment_size: int = Field(2, ge=1, description="... and at least this many markets (1: singletons allowed).")
    static_weight: float = Field(
        0.5, ge=0, le=1, description="Share of total variance given to the static block (the rest to the embedding)."
    )
    size_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of total variance given to market size (log mean monthly revenue), taken from the "
        "embedding's share. 0 by default: the planted benchmarks draw size independently of the segments, and any "
        "weight on it splits segments by size; set it when size itself should segment (profiles always show it).",
    )
    dbscan_eps: float | None = Field(None, gt=0, description="None: from the k-distance curve.")
    min_samples: int = Field(3, ge=2)
    selection_sample: int = Field(
        20_000,
        ge=100,
        description="Choose k, and score the LSTM-only and static-only views, on a seeded random sample of at most "
        "this many markets (K-Means with 10 inits per k); with fewer markets, on all of them.",
    )
    minibatch_threshold: int = Field(
        100_000,
        ge=1_000,
        description="Above this many markets the final K-Means is MiniBatchKMeans over all markets, started from the "
        "sample's K-Means centroids (cost linear in markets); at or below it, KMeans on all markets (the k curve's own "
        "solution when k was chosen on all of them).",
    )
    density_max_markets: int = Field(
        50_000,
        ge=100,
        description="DBSCAN and HDBSCAN are refused above this many markets: their neighbour searches in the "
        "hybrid space grow about quadratically (measured on 2 cores: HDBSCAN 20 s at 20k markets, DBSCAN 5 s; "
        "hours at 1M). Use kmeans, or raise this knowingly.",
    )

    @model_validator(mode="after")
    def _k_range(self) -> ClusterConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        if self.static_weight + self.size_weight > 1:
            raise ValueError(
                f"static_weight ({self.static_weight}) + size_weight ({self.size_weight}) must not exceed 1"
            )
        return self


#: What a data-quality check does when it finds something: stop the run before training, drop the
#: offending markets (named in the log and the run record), or only log and record it.
FailOrExclude = Literal["fail", "exclude"]
AnyPolicy = Literal["fail", "exclude", "warn"]
FailOrWarn = Literal["fail", "warn"]


class QualityConfig(_Strict):
    """Data-quality checks run before training (``quality.py``) and the policy of each.

    Market-level checks may ``exclude`` the offending markets; checks on rows that belong to no
    market can only ``fail`` or ``warn``.
    """

    loyalty_values: tuple[str, ...] = Field(
        ("Platinum", "Gold", "Silver", "Standard"),
        min_length=1,
        description="Every loyalty status the customer dimension may hold; anything else (or NULL) is flagged.",
    )
    null_keys: FailOrWarn = Field(
        "fail", description="Fact lines with a NULL (or blank) market key, or a NULL customer, product, date or amount."
    )
    empty_month: FailOrWarn = Field("fail", description="No sales at all in the run's month (not loaded yet?).")
    undated: FailOrWarn = Field(
        "warn", description="Fact lines dated after the calendar dimension's last day or missing from it."
    )
    duplicate_lines: AnyPolicy = Field("fail", description="Fact lines whose line_key appears more than once.")
    unknown_products: AnyPolicy = Field("exclude", description="Fact lines whose product is not in the dimension.")
    discount_range: AnyPolicy = Field(
        "exclude", description="Discounts outside 0-1 (discount_kind fraction) or below 0 (amount)."
    )
    outlier_lines: AnyPolicy = Field(
        "exclude",
        description="Fact lines whose amount is an outlier: robust z-score of the log amount above outlier_z "
        "(one sale of 1e15 would otherwise become a segment of its own).",
    )
    outlier_z: float = Field(
        5.0,
        gt=0,
        description="Robust z-score (median and MAD of log line amounts over the history) above which a line is an "
        "outlier. AdventureWorks 2013-12: 81,341 lines, median 48.59, largest z 2.4 (a limit of about 30 million "
        "at 5); Northwind: largest z 3.46.",
    )
    max_excluded_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Fail the run when the checks exclude more than this share (0-1) of the markets: segments of "
        "what is left would not describe the business.",
    )
    unknown_loyalty: AnyPolicy = Field("exclude", description="Customers with a loyalty status outside the set.")
    bad_lifetime_value: AnyPolicy = Field("exclude", description="Customers with a NULL or negative lifetime value.")
    negative_months: AnyPolicy = Field("warn", description="Months with negative net revenue (returns) in the window.")
    constant_series: AnyPolicy = Field("warn", description="The same revenue every month of the window.")
    inactive: AnyPolicy = Field("exclude", description="Sales in fewer than min_active_months months of the window.")
    thin: AnyPolicy = Field(
        "exclude",
        description="Too little data to describe: fewer than thin_min_lines order lines or thin_min_customers "
        "customers in the window (such a market must not form a segment of its own).",
    )
    thin_min_lines: int = Field(
        10,
        ge=0,
        description="Order lines a market needs in the latest seq_len months (0: no minimum). AdventureWorks "
        "2013-12 (12 months, 69 markets): median 345 lines, 5th percentile 31; only US-MS and US-RI (2 lines "
        "each) fall below 10.",
    )
    thin_min_customers: int = Field(
        0,
        ge=0,
        description="Distinct customers a market needs in the latest seq_len months (0: no minimum). Off by "
        "default: in B2B data one reseller can be a whole market (AdventureWorks 2013-12: 13 of 69 markets, "
        "US states with 100-1,000 order lines, have under 5 customers).",
    )
    no_static: FailOrExclude = Field("exclude", description="Monthly sales but no static features in the window.")
    no_sequence: FailOrExclude = Field("exclude", description="Static features but no monthly sales in the history.")
    unknown_customers: FailOrExclude = Field(
        "exclude", description="None of the market's customers is in the dimension."
    )
    missing_static: FailOrExclude = Field("exclude", description="A static feature is NULL or not finite.")
    fraction_range: AnyPolicy = Field(
        "exclude", description="A static feature of kind fraction is above 1 (a share or rate over 100 %)."
    )

    @model_validator(mode="after")
    def _loyalty_values(self) -> QualityConfig:
        bad = [v for v in self.loyalty_values if not v.strip() or len(v) > 100]
        if bad:
            raise ValueError(f"loyalty_values must be non-empty strings of at most 100 characters, got {bad!r}")
        return self


#: What a static feature measures, for profiles and descriptions: a 0-1 share or rate, an amount of
#: money, a count, or a unit-free ratio.
FeatureKind = Literal["fraction", "currency", "count", "ratio"]

#: Mapped columns a feature may aggregate, by the config field that maps them (never a raw identifier).
FACT_MEASURES = ("sales_amount", "discount", "quantity", "profit", "cost")
CUSTOMER_MEASURES = ("lifetime_value",)
CUSTOMER_ATTRIBUTES = ("loyalty_status",)
PRODUCT_ATTRIBUTES = ("product_line", "subcategory")

#: Aggregate templates: what ``column`` / ``denominator`` may name, and the SQL each renders to
#: (``sql/static_features.sql``), per market over the run's window.
TEMPLATES: dict[str, tuple[tuple[str, ...], str]] = {
    "discount_rate": ((), "the discount rate as warehouse.fact_sale.discount_kind says (fraction: mean per line)"),
    "line_average": (FACT_MEASURES, "AVG(column) over the market's fact lines"),
    "line_ratio": (FACT_MEASURES, "SUM(column) / SUM(denominator) over the market's fact lines"),
    "customer_share": (CUSTOMER_ATTRIBUTES, "share of the market's customers whose column = value"),
    "customer_average": (CUSTOMER_MEASURES, "AVG(column) over the market's customers"),
    "distinct_count": (PRODUCT_ATTRIBUTES, "COUNT(DISTINCT column) over the products the market bought"),
}

_FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$", re.ASCII)
#: Column names the steps' frames already use: a feature may not take one.
RESERVED_FEATURE_NAMES = frozenset(
    """market_key market_name country territory_group n_customers n_known_customers segment_id label
    previous_segment_id n_markets share main_group group_share main_country examples description
    trend_slope recent_growth volatility seasonality avg_monthly_revenue""".split()
)


class StaticFeature(_Strict):
    """One static feature per market: a name, an aggregate template over mapped columns, a kind and a weight.

    Definitions open no injection path: ``name`` is a lower-case identifier, ``column`` and
    ``denominator`` name config fields (the SQL renders the validated identifiers they map to), and
    ``value`` is a bound parameter.
    """

    name: str = Field(description="Lower-case identifier: the feature's column in frames, profiles and reports.")
    template: Literal[
        "discount_rate", "line_average", "line_ratio", "customer_share", "customer_average", "distinct_count"
    ]
    column: str | None = Field(None, description="The config field of the mapped column the template aggregates.")
    denominator: str | None = Field(None, description="line_ratio: the config field of the denominator's column.")
    value: str | None = Field(None, max_length=100, description="customer_share: the attribute value counted.")
    kind: FeatureKind
    weight: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Relative weight inside the static block: the feature's share of the block's variance is "
        "weight / sum of weights (0: profiled, not clustered).",
    )
    label: str | None = Field(None, max_length=60, description="Words for reports; default: the name, spaced.")

    @model_validator(mode="after")
    def _definition(self) -> StaticFeature:
        if not _FEATURE_NAME.fullmatch(self.name) or self.name in RESERVED_FEATURE_NAMES:
            raise ValueError(
                f"name {self.name!r} must be a lower-case identifier (a-z, 0-9, _; at most 63 characters) other "
                f"than the pipeline's own columns ({', '.join(sorted(RESERVED_FEATURE_NAMES))})"
            )
        allowed, _ = TEMPLATES[self.template]
        wanted = {"column": bool(allowed), "denominator": self.template == "line_ratio"}
        wanted["value"] = self.template == "customer_share"
        for field, needed in wanted.items():
            given = getattr(self, field)
            if needed and given is None:
                raise ValueError(f"feature {self.name!r}: template {self.template} needs {field}")
            if not needed and given is not None:
                raise ValueError(f"feature {self.name!r}: template {self.template} takes no {field}")
        for field in ("column", "denominator"):
            given = getattr(self, field)
            if given is not None and given not in allowed:
                raise ValueError(
                    f"feature {self.name!r}: {field} {given!r} is not a column template {self.template} can use; "
                    f"expected one of {list(allowed)}"
                )
        return self

    @property
    def words(self) -> str:
        """How reports name the feature."""
        return self.label or self.name.replace("_", " ")


#: The seed's seven static features: their order is the column order of every frame that carries them.
DEFAULT_FEATURES = (
    StaticFeature(name="avg_discount", template="discount_rate", kind="fraction", label="discounts"),
    *(
        StaticFeature(
            name=f"{tier.lower()}_share",
            template="customer_share",
            column="loyalty_status",
            value=tier,
            kind="fraction",
            label=f"{tier} share",
        )
        for tier in ("Platinum", "Gold", "Silver")
    ),
    StaticFeature(
        name="avg_ltv",
        template="customer_average",
        column="lifetime_value",
        kind="currency",
        label="customer lifetime value",
    ),
    StaticFeature(
        name="total_product_lines",
        template="distinct_count",
        column="product_line",
        kind="count",
        label="product lines",
    ),
    StaticFeature(
        name="total_subcategories",
        template="distinct_count",
        column="subcategory",
        kind="count",
        label="subcategories",
    ),
)


ApprovalMode = Literal["never", "on_change", "always"]


class ApprovalConfig(_Strict):
    """When a person must approve a month's segments before they are written (``core.gate``).

    ``on_change`` asks when fewer than ``min_kept_share`` of the markets keep their SegmentID, when k
    changes, when a segment appears or disappears, or when the data-quality gate excluded more than
    ``max_excluded_share`` of the markets; an unchanged month is written without asking, as is the
    first month. The request waits in Airflow's "Required actions" without holding a worker slot.
    """

    mode: ApprovalMode = Field(
        "never", description="never: write at once; on_change: ask when the segments change; always: ask every month."
    )
    min_kept_share: float = Field(
        0.8, ge=0, le=1, description="on_change asks when fewer markets (share 0-1) keep their SegmentID."
    )
    max_excluded_share: float = Field(
        0.1, ge=0, le=1, description="on_change asks when the quality gate excluded more markets (share 0-1)."
    )
    timeout_hours: float = Field(72, gt=0, le=24 * 90, description="How long a request waits for an answer.")
    on_timeout: Literal["reject", "approve"] = Field(
        "reject", description="What an unanswered request decides when it times out (reject: nothing written)."
    )


class NotifierSpec(_Strict):
    """Any Airflow notifier (Slack, Teams, PagerDuty...), by class path and keyword arguments; the alert's
    text is passed as ``message_arg``, e.g. ``{"notifier": "airflow.providers.slack.notifications.slack.
    SlackNotifier", "kwargs": {"slack_conn_id": "slack", "channel": "#segments"}, "message_arg": "text"}``."""

    notifier: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
    kwargs: dict[str, object] = {}
    message_arg: str = Field("text", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class AlertsConfig(_Strict):
    """Who hears about a failed run, an approval request and a large change (``include/segmentation/alerts.py``).

    Mail goes through the SMTP connection ``smtp_conn_id`` (host, port, login in the connection, not
    here); ``notifiers`` adds any other channel. Nothing configured: no alerts.
    """

    email_to: tuple[str, ...] = Field((), description="Recipients of the alert mails; empty: no mail.")
    smtp_conn_id: str = Field("smtp_default", description="Airflow connection of the SMTP server.")
    email_from: str | None = Field(None, description="Sender; default: the SMTP connection's from_email.")
    notifiers: tuple[NotifierSpec, ...] = ()
    ui_url: str | None = Field(
        None, description="The Airflow UI's address in links (default: Airflow's [api] base_url)."
    )


class SegmentationConfig(_Strict):
    """The whole pipeline's configuration. Defaults run the demo; a user overrides any field."""

    warehouse: WarehouseConfig = WarehouseConfig()
    sequences: SequenceConfig = SequenceConfig()
    model: ModelConfig = ModelConfig()
    clustering: ClusterConfig = ClusterConfig()
    quality: QualityConfig = QualityConfig()
    approval: ApprovalConfig = ApprovalConfig()
    alerts: AlertsConfig = AlertsConfig()
    static_features: tuple[StaticFeature, ...] = Field(
        DEFAULT_FEATURES, description="The static features per market, in order; the defaults are the seed's seven."
    )
    cluster_derived_features: bool = Field(
        False,
        description="Cluster on features whose columns a loader derived (warehouse.derived_columns_table, e.g. "
        "loyalty tiers made up from spend). Off: they are profiled and described, but do not drive the segments.",
    )
    artifacts_dir: str = Field(
        "artifacts",
        min_length=1,
        description="Base of the per-month artifacts: a local folder shared by the workers, or an object-storage "
        "URL (s3://bucket/prefix, gs://...) read through Airflow's ObjectStoragePath.",
    )
    train_queue: str = Field("default", description="Celery queue of the training task ('gpu' in production).")
    model_version_prefix: str = "lstm_hybrid_v2.0"
    seed: int = 2024

    @model_validator(mode="after")
    def _features(self) -> SegmentationConfig:
        if not self.static_features:
            raise ValueError("static_features: list at least one feature")
        names = [f.name for f in self.static_features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"static_features: feature name(s) {dup} appear more than once")
        if not any(f.weight > 0 for f in self.static_features):
            raise ValueError("static_features: at least one feature needs a weight above 0 to drive clustering")
        fact = self.warehouse.fact_sale
        for f in self.static_features:
            for role in (f.column, f.denominator):
                if role in ("profit", "cost") and getattr(fact, role) is None:
                    raise ValueError(
                        f"static_features: feature {f.name!r} uses {role}, "
                        f"but warehouse.fact_sale.{role} maps no column"
                    )
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Every static feature's name, in order (the columns of ``static.parquet`` and the profiles)."""
        return tuple(f.name for f in self.static_features)

    def clustered_features(self, derived: Collection[str] = ()) -> tuple[StaticFeature, ...]:
        """The static features that drive clustering: a weight above 0, and not ``derived`` (names of
        features on columns a loader made up) unless ``cluster_derived_features``."""
        return tuple(
            f for f in self.static_features if f.weight > 0 and (self.cluster_derived_features or f.name not in derived)
        )

    def with_overrides(self, **params: object) -> SegmentationConfig:
        """Return a copy with run-level overrides (Airflow Params) applied and re-validated.

        Accepted keys: ``seq_len``, ``epochs``, ``algorithm``, ``n_clusters``, ``static_weight``,
        ``approval`` (``approval.mode``).
        Values are applied as given (``n_clusters=None`` means "choose k": ``k_selection``). Raises
        ``KeyError`` for an unknown key and ``pydantic.ValidationError`` naming the bad parameter.
        """
        data = self.model_dump(by_alias=True)
        where = {
            "seq_len": "sequences",
            "epochs": "model",
            "algorithm": "clustering",
            "n_clusters": "clustering",
            "static_weight": "clustering",
            "approval": "approval",
        }
        for key, value in params.items():
            if key not in where:
                raise KeyError(f"unknown run parameter {key!r}; expected one of {sorted(where)}")
            if key == "approval":
                if value is not None:  # a run triggered before the Param existed keeps the configured mode
                    data["approval"]["mode"] = value
            else:
                data[where[key]][key] = value
        return SegmentationConfig.model_validate(data)


def load_config(path: str | os.PathLike | None = None) -> SegmentationConfig:
    """Load the configuration from a YAML or JSON file.

    ``path`` defaults to the ``SEGMENTATION_CONFIG`` environment variable; with neither, the defaults
    are used. ``SEGMENTATION_ARTIFACTS`` overrides ``artifacts_dir``. Raises ``FileNotFoundError`` for
    a missing file and ``pydantic.ValidationError`` naming the bad field.
    """
    path = path or os.environ.get("SEGMENTATION_CONFIG")
    data: dict = {}
    if path:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    if artifacts := os.environ.get("SEGMENTATION_ARTIFACTS"):
        data["artifacts_dir"] = artifacts
    return SegmentationConfig.model_validate(data)
