"""Demo warehouses: AdventureWorksDW reshaped into the star schema, or a seeded synthetic one.

Both return frames keyed by table role (``fact_sale``, ``territory``, ``customer``, ``product``,
``date``) with the column names of the default warehouse contract; ``load_star`` maps them to the
configured physical names and loads them through any Snowflake connection.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from include.segmentation.adapters.warehouse import render_sql, split_statements

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from include.segmentation.config import WarehouseConfig

#: Loyalty tiers by lifetime-spend percentile within a customer type (individuals and resellers
#: are ranked separately: a reseller's spend dwarfs any individual's). Upper share of customers.
LOYALTY_TIERS = (("Platinum", 0.10), ("Gold", 0.30), ("Silver", 0.60))

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "adventureworks_dw"


def adventureworks_dir() -> Path:
    """Folder of the AdventureWorksDW parquet files: ``$ADVENTUREWORKS_DIR`` or ``../shared/data/adventureworks_dw``."""
    return Path(os.environ.get("ADVENTUREWORKS_DIR", DEFAULT_DATA_DIR))


def _loyalty(ltv: pd.Series, customer_type: pd.Series) -> pd.Series:
    # Percentile rank within the type: 1.0 = biggest spender. Ties share a rank (method="max").
    pct = 1.0 - ltv.groupby(customer_type).rank(pct=True, method="max") + 1e-12
    tier = pd.Series("Standard", index=ltv.index)
    for name, upper in reversed(LOYALTY_TIERS):
        tier[pct <= upper] = name
    return tier


def customers_from_sales(fact: pd.DataFrame, customer_type: pd.Series) -> pd.DataFrame:
    """Derive ``LIFETIME_VALUE`` (total SALES_AMOUNT of the customer, currency) and ``LOYALTY_STATUS``.

    AdventureWorks has neither column, so they are derived as a warehouse team would: LTV is spend
    to date; the tier is the spend percentile within the customer type: top 10% Platinum, next 20%
    Gold, next 30% Silver, the rest Standard. ``customer_type`` is indexed by CUSTOMER_KEY.
    """
    ltv = fact.groupby("CUSTOMER_KEY")["SALES_AMOUNT"].sum().reindex(customer_type.index, fill_value=0.0)
    return pd.DataFrame(
        {
            "CUSTOMER_KEY": customer_type.index.astype("int64"),
            "CUSTOMER_TYPE": customer_type.to_numpy(),
            "LOYALTY_STATUS": _loyalty(ltv, customer_type).to_numpy(),
            "LIFETIME_VALUE": ltv.to_numpy(),
        }
    )


def _table_reader(root: Path):
    # A reader of AdventureWorksDW tables under `root` that names the missing file.
    def read(table: str, columns: list[str]) -> pd.DataFrame:
        path = root / f"{table}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"AdventureWorksDW table {table} not found at {path}")
        return pd.read_parquet(path, columns=columns)

    return read


def _aw_geography(read) -> pd.DataFrame:
    # The 10 sales territories are too few markets: a market is a state/province, keyed e.g. US-WA.
    geo = read(
        "DimGeography",
        [
            "GeographyKey",
            "StateProvinceCode",
            "StateProvinceName",
            "CountryRegionCode",
            "EnglishCountryRegionName",
            "SalesTerritoryKey",
        ],
    )
    geo["MARKET_KEY"] = geo["CountryRegionCode"].str.strip() + "-" + geo["StateProvinceCode"].str.strip()
    return geo


def _aw_sales(read, geo: pd.DataFrame, customer: pd.DataFrame, reseller: pd.DataFrame) -> pd.DataFrame:
    # Internet and reseller sales lines unioned, each placed in its buyer's market.
    sale_cols = [
        "SalesOrderNumber",
        "SalesOrderLineNumber",
        "OrderDate",
        "ProductKey",
        "SalesAmount",
        "UnitPriceDiscountPct",
        "OrderQuantity",
    ]
    internet = read("FactInternetSales", [*sale_cols, "CustomerKey"]).assign(CHANNEL="Internet")
    internet["CUSTOMER_KEY"] = internet["CustomerKey"].astype("int64")
    resale = read("FactResellerSales", [*sale_cols, "ResellerKey"]).assign(CHANNEL="Reseller")
    resale["CUSTOMER_KEY"] = 1_000_000 + resale["ResellerKey"].astype("int64")
    geo_of_customer = pd.concat(
        [customer[["CUSTOMER_KEY", "GeographyKey"]], reseller[["CUSTOMER_KEY", "GeographyKey"]]]
    ).merge(geo[["GeographyKey", "MARKET_KEY"]], on="GeographyKey")[["CUSTOMER_KEY", "MARKET_KEY"]]

    sales = pd.concat([internet, resale], ignore_index=True).merge(geo_of_customer, on="CUSTOMER_KEY", how="inner")
    return pd.DataFrame(
        {
            "SALES_ORDER_NUMBER": sales["SalesOrderNumber"],
            "SALES_ORDER_LINE": sales["SalesOrderLineNumber"].astype("int64"),
            "CHANNEL": sales["CHANNEL"],
            "ORDER_DATE": pd.to_datetime(sales["OrderDate"]).dt.normalize(),
            "MARKET_KEY": sales["MARKET_KEY"],
            "CUSTOMER_KEY": sales["CUSTOMER_KEY"],
            "PRODUCT_KEY": sales["ProductKey"].astype("int64"),
            "SALES_AMOUNT": sales["SalesAmount"].astype("float64"),
            "DISCOUNT_PCT": sales["UnitPriceDiscountPct"].astype("float64"),
            "QUANTITY": sales["OrderQuantity"].astype("int64"),
        }
    ).sort_values(["ORDER_DATE", "SALES_ORDER_NUMBER", "SALES_ORDER_LINE"], ignore_index=True)


def _aw_territory(geo: pd.DataFrame, territory: pd.DataFrame, fact: pd.DataFrame) -> pd.DataFrame:
    # The markets that have sales, with their names, country and sales territory group.
    markets = (
        geo.merge(territory, on="SalesTerritoryKey", how="left")
        .drop_duplicates("MARKET_KEY")
        .loc[lambda g: g["MARKET_KEY"].isin(fact["MARKET_KEY"].unique())]
    )
    return pd.DataFrame(
        {
            "MARKET_KEY": markets["MARKET_KEY"],
            "MARKET_NAME": markets["StateProvinceName"].str.strip(),
            "COUNTRY": markets["EnglishCountryRegionName"].str.strip(),
            "TERRITORY_GROUP": markets["SalesTerritoryGroup"],
        }
    ).sort_values("MARKET_KEY", ignore_index=True)


def _aw_products(read) -> pd.DataFrame:
    # Products with their subcategory and category names; PRODUCT_LINE is nchar(2): strip its space.
    product = read("DimProduct", ["ProductKey", "EnglishProductName", "ProductLine", "ProductSubcategoryKey"])
    subcat = read(
        "DimProductSubcategory", ["ProductSubcategoryKey", "EnglishProductSubcategoryName", "ProductCategoryKey"]
    )
    category = read("DimProductCategory", ["ProductCategoryKey", "EnglishProductCategoryName"])
    product = product.merge(subcat, on="ProductSubcategoryKey", how="left").merge(
        category, on="ProductCategoryKey", how="left"
    )
    return pd.DataFrame(
        {
            "PRODUCT_KEY": product["ProductKey"].astype("int64"),
            "PRODUCT_NAME": product["EnglishProductName"],
            "PRODUCT_LINE": product["ProductLine"].str.strip().replace("", None),
            "SUBCATEGORY": product["EnglishProductSubcategoryName"],
            "CATEGORY": product["EnglishProductCategoryName"],
        }
    )


def _aw_dates(read) -> pd.DataFrame:
    dates = read("DimDate", ["DateKey", "FullDateAlternateKey", "CalendarYear", "MonthNumberOfYear"])
    return pd.DataFrame(
        {
            "DATE_KEY": dates["DateKey"].astype("int64"),
            "FULL_DATE": pd.to_datetime(dates["FullDateAlternateKey"]),
            "CALENDAR_YEAR": dates["CalendarYear"].astype("int64"),
            "CALENDAR_MONTH": dates["MonthNumberOfYear"].astype("int64"),
        }
    )


def adventureworks_star(data_dir: str | os.PathLike | None = None) -> dict[str, pd.DataFrame]:
    """Build the star schema from the AdventureWorksDW parquet tables (see its PROVENANCE.md).

    - ``FACT_SALE``: internet and reseller sales lines unioned, with ``CHANNEL`` (Internet/Reseller).
    - Market: the customer's (internet) or reseller's (reseller) state/province, keyed
      ``<country code>-<state code>`` (e.g. ``US-WA``); the 10 sales territories are too few markets.
    - ``DISCOUNT_PCT`` from ``UnitPriceDiscountPct`` (fraction 0-1); ``SALES_AMOUNT`` in USD.
    - Customers: internet ``CustomerKey``; resellers as customers keyed ``1_000_000 + ResellerKey``.
    - ``PRODUCT_LINE`` stripped of its ``nchar(2)`` trailing space (NULL stays NULL).

    Raises ``FileNotFoundError`` naming the missing file.
    """
    read = _table_reader(Path(data_dir) if data_dir else adventureworks_dir())
    # Tables are read in this order, which decides which missing file is named first.
    geo = _aw_geography(read)
    territory = read("DimSalesTerritory", ["SalesTerritoryKey", "SalesTerritoryGroup"])
    customer = read("DimCustomer", ["CustomerKey", "GeographyKey"])
    reseller = read("DimReseller", ["ResellerKey", "GeographyKey"])
    # Resellers are customers too, keyed above any internet CustomerKey.
    reseller["CUSTOMER_KEY"] = 1_000_000 + reseller["ResellerKey"].astype("int64")
    customer["CUSTOMER_KEY"] = customer["CustomerKey"].astype("int64")
    fact = _aw_sales(read, geo, customer, reseller)
    dim_territory = _aw_territory(geo, territory, fact)
    customer_type = pd.concat(
        [
            pd.Series("Individual", index=customer["CUSTOMER_KEY"].to_numpy()),
            pd.Series("Reseller", index=reseller["CUSTOMER_KEY"].to_numpy()),
        ]
    )
    dim_product = _aw_products(read)
    dim_date = _aw_dates(read)
    return {
        "fact_sale": fact,
        "territory": dim_territory,
        "customer": customers_from_sales(fact, customer_type),
        "product": dim_product,
        "date": dim_date,
    }


#: Synthetic market archetypes: (monthly trend, seasonal amplitude, base lines/month, discount, platinum prob).
_ARCHETYPES = (
    (0.03, 0.05, 30, 0.02, 0.25),
    (-0.02, 0.05, 25, 0.10, 0.05),
    (0.00, 0.60, 15, 0.05, 0.10),
    (0.01, 0.10, 8, 0.20, 0.02),
)
#: Synthetic territory groups and the country code of their markets.
_GROUPS = {"Europe": "DE", "North America": "US", "Pacific": "AU"}
_N_PRODUCTS = 120


def _synthetic_products(rng: np.random.Generator) -> pd.DataFrame:
    lines, subcats = ["R", "M", "T", "S"], [f"Subcategory {i}" for i in range(24)]
    return pd.DataFrame(
        {
            "PRODUCT_KEY": np.arange(1, _N_PRODUCTS + 1),
            "PRODUCT_NAME": [f"Product {i}" for i in range(1, _N_PRODUCTS + 1)],
            "PRODUCT_LINE": rng.choice(lines, _N_PRODUCTS),
            "SUBCATEGORY": rng.choice(subcats, _N_PRODUCTS),
            "CATEGORY": "Synthetic",
        }
    )


def _synthetic_customers(rng: np.random.Generator, cust_keys: np.ndarray, p_platinum: float) -> pd.DataFrame:
    # A market's customers: tiers drawn with the archetype's platinum share, LTV by tier with noise.
    n_cust = len(cust_keys)
    tiers = rng.choice(["Platinum", "Gold", "Silver", "Standard"], n_cust, p=[p_platinum, 0.2, 0.3, 0.5 - p_platinum])
    ltv = np.where(tiers == "Platinum", 8000.0, np.where(tiers == "Gold", 3000.0, 800.0))
    return pd.DataFrame(
        {
            "CUSTOMER_KEY": cust_keys,
            "CUSTOMER_TYPE": "Individual",
            "LOYALTY_STATUS": tiers,
            "LIFETIME_VALUE": ltv * rng.lognormal(0, 0.2, n_cust),
        }
    )


def _synthetic_sales(
    rng: np.random.Generator,
    m: int,
    key: str,
    months: pd.PeriodIndex,
    archetype: tuple,
    cust_keys: np.ndarray,
    allowed: np.ndarray,
) -> list[pd.DataFrame]:
    # Market m's sale lines, month by month: a Poisson count around the archetype's trend and Q4
    # season (months without sales add no frame).
    trend, season, base, discount, _ = archetype
    facts = []
    for t, month in enumerate(months):
        level = base * np.exp(trend * t) * (1 + season * np.cos(2 * np.pi * (month.month - 12) / 12))
        n = rng.poisson(max(level, 0.5))
        if n == 0:
            continue
        days = rng.integers(0, month.days_in_month, n)
        facts.append(
            pd.DataFrame(
                {
                    "SALES_ORDER_NUMBER": [f"SO{m:03d}{t:03d}{i:04d}" for i in range(n)],
                    "SALES_ORDER_LINE": 1,
                    "CHANNEL": "Internet",
                    "ORDER_DATE": month.start_time + pd.to_timedelta(days, unit="D"),
                    "MARKET_KEY": key,
                    "CUSTOMER_KEY": rng.choice(cust_keys, n),
                    "PRODUCT_KEY": rng.choice(allowed, n),
                    "SALES_AMOUNT": np.round(rng.lognormal(5.5, 0.6, n), 2),
                    "DISCOUNT_PCT": np.clip(rng.normal(discount, 0.02, n), 0, 0.9),
                    "QUANTITY": rng.integers(1, 4, n),
                }
            )
        )
    return facts


def synthetic_star(
    n_markets: int = 60, start: str = "2011-01", end: str = "2014-01", seed: int = 7
) -> dict[str, pd.DataFrame]:
    """A seeded synthetic warehouse of the same schema, for machines without ``../shared/data``.

    Markets fall into four planted archetypes that differ in trend (growing / declining), seasonality
    (strong Q4 peak or flat), size, discount level and customer mix, so segmentation has something
    real to find. About ``n_markets * months * 20`` fact rows; deterministic for a ``seed``.
    """
    if n_markets < 1:
        raise ValueError(f"n_markets must be >= 1, got {n_markets}")
    months = pd.period_range(start, end, freq="M")
    if len(months) == 0:
        raise ValueError(f"start ({start}) must not be after end ({end})")
    rng = np.random.default_rng(seed)
    # Every draw comes from `rng` in a fixed order (products, then market by market: customers,
    # product range, monthly sales), so a seed gives the same warehouse.
    product = _synthetic_products(rng)
    territory, facts, customer_rows = [], [], []
    next_customer = 1
    for m in range(n_markets):
        archetype = _ARCHETYPES[m % len(_ARCHETYPES)]
        group = list(_GROUPS)[m % len(_GROUPS)]
        key = f"{_GROUPS[group]}-S{m:03d}"
        territory.append((key, f"Synthetic market {m}", _GROUPS[group], group))
        n_cust = int(20 + archetype[2] * 2)  # bigger archetypes have more customers
        cust_keys = np.arange(next_customer, next_customer + n_cust)
        next_customer += n_cust
        customer_rows.append(_synthetic_customers(rng, cust_keys, archetype[4]))
        allowed = rng.choice(_N_PRODUCTS, size=10 + (m % 4) * 25, replace=False) + 1
        facts.extend(_synthetic_sales(rng, m, key, months, archetype, cust_keys, allowed))
    dates = pd.date_range(months[0].start_time, months[-1].end_time.normalize(), freq="D")
    return {
        "fact_sale": pd.concat(facts, ignore_index=True),
        "territory": pd.DataFrame(territory, columns=["MARKET_KEY", "MARKET_NAME", "COUNTRY", "TERRITORY_GROUP"]),
        "customer": pd.concat(customer_rows, ignore_index=True),
        "product": product,
        "date": pd.DataFrame(
            {
                "DATE_KEY": dates.strftime("%Y%m%d").astype("int64"),
                "FULL_DATE": dates,
                "CALENDAR_YEAR": dates.year,
                "CALENDAR_MONTH": dates.month,
            }
        ),
    }


def _physical_names(role: str, warehouse: WarehouseConfig) -> tuple[str, dict[str, str]]:
    """The configured table name for a role and the rename map from default to configured columns."""
    table = getattr(warehouse, role)
    defaults = type(table)()
    # Column-name fields only: not the table name, the discount's kind or the (multi-column) line key.
    fields = [f for f in type(table).model_fields if f not in ("name", "discount_kind", "line_key")]
    # Optional columns (profit, cost) have no default name: the loaders call them PROFIT and COST.
    return table.name, {getattr(defaults, f) or f.upper(): getattr(table, f) or f.upper() for f in fields}


def load_star(conn: SnowflakeConnection, tables: dict[str, pd.DataFrame], warehouse: WarehouseConfig) -> dict[str, int]:
    """Create the star schema tables (replacing existing ones) and bulk-load ``tables`` into them.

    Uses the connector's ``write_pandas`` (stage + COPY on Snowflake; a direct DuckDB insert when the
    emulator runs in-process). Columns a frame lists in ``frame.attrs["derived"]`` (column -> how it
    was made up, e.g. loyalty tiers from spend) are recorded in ``warehouse.derived_columns_table``,
    which the pipeline reads (``contract.derived_columns``). Returns rows loaded per table.
    """
    from snowflake.connector.pandas_tools import write_pandas

    cur = conn.cursor()
    for stmt in split_statements(render_sql("create_star_schema.sql", warehouse)):
        cur.execute(stmt)
    unknown = set(tables) - {"fact_sale", "territory", "customer", "product", "date"}
    if unknown:
        raise ValueError(
            f"unknown table role(s) {sorted(unknown)}; expected fact_sale, territory, customer, product, date"
        )
    loaded, derived = {}, []
    for role, frame in tables.items():
        name, renames = _physical_names(role, warehouse)
        frame = frame.rename(columns=renames)
        for col in frame.columns:
            # DATE columns: write dates, not timestamps, so DATE comparisons behave in both warehouses.
            if pd.api.types.is_datetime64_any_dtype(frame[col]):
                frame[col] = frame[col].dt.date
        write_pandas(conn, frame, name, quote_identifiers=False)
        loaded[name] = len(frame)
        derived += [(name, renames.get(c, c), how) for c, how in frame.attrs.get("derived", {}).items()]
    if derived:
        cur.executemany(render_sql("insert_derived_column.sql", warehouse), derived)
    return loaded
