"""Generated markets for the benchmarks, and the DAG's steps run on them.

Markets at any size (``benchmarks.scale``): a star schema to load into the warehouse
(``synthetic_star``), or the answers of the steps' source queries made directly (``generated_answers``,
``SOURCE_QUERIES``) where loading would take longer than the run. They fall into four archetypes
(``ARCHETYPES``: growing, declining, seasonal, flat) with their own discount, loyalty mix, lifetime
value and product range; 15% open during the history. Vectorised: no loop over markets.
``planted_answers`` gives the same answers for ``benchmarks.planted``'s markets.

``run_steps`` runs ``steps.STEPS`` on a run, as the DAG does; ``Warehouse`` wraps the steps'
``render_sql`` / ``query_frame`` to time each query and to answer some from generated frames, and
``offline_run`` runs the steps on generated answers with no warehouse at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

from include.segmentation import steps
from include.segmentation.adapters import contract
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.warehouse import query_frame, render_sql
from include.segmentation.config import SegmentationConfig
from include.segmentation.core.features import MONTHLY_COLUMNS, STATIC_FEATURES

#: The run's month and the months of history before it (``SequenceConfig.history_months``' default).
MONTH = pd.Period("2013-12", "M")
HISTORY = 36

#: The steps' queries of the source tables: run on the warehouse up to ``--sql-max`` markets, generated above.
SOURCE_QUERIES = ("static_features", "markets", "monthly_sales", "quality_markets", "quality_table")

#: Per-market columns of ``sql/quality_markets.sql``, in its order (all 0 in generated answers: clean data).
QUALITY_COUNTS = (
    "null_keys",
    "duplicate_lines",
    "unknown_products",
    "discount_range",
    "outlier_lines",
    "line_limit",  # not a count: the amount above which a line is an outlier (0: none in clean data)
    "unknown_loyalty",
    "bad_lifetime_value",
)

#: Market archetypes of the generated warehouse: discount, loyalty mix (Platinum, Gold, Silver),
#: LTV median and product lines used (of 5); the monthly revenue shapes are in ``_monthly_arrays``.
ARCHETYPES = (
    ("growing", 0.03, (0.25, 0.30, 0.25), 6000.0, 5),
    ("declining", 0.11, (0.06, 0.20, 0.34), 1500.0, 2),
    ("seasonal", 0.06, (0.14, 0.26, 0.30), 3000.0, 4),
    ("flat", 0.08, (0.10, 0.20, 0.30), 2500.0, 3),
)
CUSTOMERS_PER_MARKET = 8
N_PRODUCTS = 200


def _archetype(column: int, kind: np.ndarray) -> np.ndarray:
    return np.array([a[column] for a in ARCHETYPES])[kind]


def market_keys(n: int) -> np.ndarray:
    """``M0000000``, ``M0000001``, ... as an array of str."""
    return np.char.add("M", np.char.zfill(np.arange(n).astype(str), 7)).astype(object)


def _monthly_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """Per market and month ``(n, HISTORY)``: expected revenue, lines (0 before a market opens), and
    the market's archetype ``(n,)``."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(ARCHETYPES), n)
    t = np.arange(HISTORY, dtype=np.float64)
    shapes = np.stack(
        [
            np.exp(0.04 * (t - HISTORY + 6)),
            np.exp(-0.04 * (t - HISTORY + 6)),
            1.0 + 0.5 * np.sin(2 * np.pi * t / 12),
            np.ones(HISTORY),
        ]
    )
    size = 20_000.0 * rng.lognormal(0.0, 1.0, (n, 1))
    revenue = size * shapes[kind] * rng.lognormal(0.0, 0.15, (n, HISTORY))
    opened = np.where(rng.random(n) < 0.85, 0, rng.integers(0, HISTORY - 6, n))
    lines = np.where(t[None, :] >= opened[:, None], 1 + (rng.random((n, HISTORY)) < 0.5), 0).astype(np.int64)
    return {"kind": kind, "revenue": np.round(revenue, 2), "lines": lines}


def _month_starts(n_months: int) -> np.ndarray:
    first = pd.Timestamp((MONTH - n_months + 1).start_time)
    return pd.date_range(first, periods=n_months, freq="MS").to_numpy().astype("datetime64[us]")


def _fact_sale(m: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """The fact table: 1-2 lines per market and month with sales, splitting the month's revenue."""
    market, month = np.nonzero(m["lines"])
    per_cell = m["lines"][market, month]
    line_market, line_month = np.repeat(market, per_cell), np.repeat(month, per_cell)
    n_lines = len(line_market)
    kind = m["kind"][line_market]
    amount = m["revenue"][line_market, line_month] * rng.uniform(0.5, 1.5, n_lines) / np.repeat(per_cell, per_cell)
    order_date = _month_starts(HISTORY).astype("datetime64[D]")[line_month]
    product = rng.integers(0, 40, n_lines) * 5 + rng.integers(0, _archetype(4, kind))  # product line = key % 5
    return pd.DataFrame(
        {
            "SALES_ORDER_NUMBER": pd.Series(np.arange(n_lines)).astype(str).radd("SO").to_numpy(),
            "SALES_ORDER_LINE": np.arange(n_lines) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell) + 1,
            "CHANNEL": "Internet",
            "ORDER_DATE": pd.to_datetime(order_date + rng.integers(0, 28, n_lines).astype("timedelta64[D]")),
            "MARKET_KEY": market_keys(len(m["kind"]))[line_market],
            "CUSTOMER_KEY": line_market * CUSTOMERS_PER_MARKET + rng.integers(0, CUSTOMERS_PER_MARKET, n_lines),
            "PRODUCT_KEY": product,
            "SALES_AMOUNT": np.round(amount, 2),
            "DISCOUNT_PCT": np.round(np.clip(rng.normal(_archetype(1, kind), 0.02), 0.0, 0.5), 4),
            "QUANTITY": rng.integers(1, 6, n_lines),
        }
    )


def _dimensions(kind: np.ndarray, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Customers (``CUSTOMERS_PER_MARKET`` per market, loyalty mix of its archetype), products, dates."""
    n_customers = len(kind) * CUSTOMERS_PER_MARKET
    cust_kind = kind[np.arange(n_customers) // CUSTOMERS_PER_MARKET]
    mix = np.array([[*a[2], 1 - sum(a[2])] for a in ARCHETYPES])[cust_kind]
    status = (rng.random(n_customers)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1)
    days = pd.date_range((MONTH - HISTORY).start_time, (MONTH + 1).end_time.normalize(), freq="D")
    customer = {
        "CUSTOMER_KEY": np.arange(n_customers),
        "CUSTOMER_TYPE": "Individual",
        "LOYALTY_STATUS": np.array(["Platinum", "Gold", "Silver", "Standard"])[status],
        "LIFETIME_VALUE": np.round(_archetype(3, cust_kind) * rng.lognormal(0, 0.3), 2),
    }
    product = {
        "PRODUCT_KEY": np.arange(N_PRODUCTS),
        "PRODUCT_NAME": [f"P{i}" for i in range(N_PRODUCTS)],
        "PRODUCT_LINE": np.array(list("MRTSA"))[np.arange(N_PRODUCTS) % 5],
        "SUBCATEGORY": [f"Sub{i % 30}" for i in range(N_PRODUCTS)],
        "CATEGORY": "Bikes",
    }
    date = {
        "DATE_KEY": days.strftime("%Y%m%d").astype(int),
        "FULL_DATE": days,
        "CALENDAR_YEAR": days.year,
        "CALENDAR_MONTH": days.month,
    }
    return {"customer": pd.DataFrame(customer), "product": pd.DataFrame(product), "date": pd.DataFrame(date)}


def synthetic_star(n: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A star schema (the roles of ``demo_data.load_star``) with ``n`` markets, 36 months to 2013-12,
    1-2 fact lines per market and month (``CUSTOMERS_PER_MARKET`` customers each, ``N_PRODUCTS``
    products). Vectorised: a few seconds for 100,000 markets (5.4 million lines)."""
    rng = np.random.default_rng(seed + 1)
    m = _monthly_arrays(n, seed)
    return {"fact_sale": _fact_sale(m, rng), "territory": territory(n), **_dimensions(m["kind"], rng)}


def territory(n: int) -> pd.DataFrame:
    """The market dimension: key, name, country (50) and territory group (5)."""
    keys = market_keys(n)
    idx = np.arange(n)
    return pd.DataFrame(
        {
            "MARKET_KEY": keys,
            "MARKET_NAME": np.char.add("Market ", keys.astype(str)),
            "COUNTRY": np.char.add("C", (idx % 50).astype(str)),
            "TERRITORY_GROUP": np.array(["Europe", "North America", "Pacific", "Asia", "Latin America"])[idx % 5],
        }
    )


def monthly_sales(grid: np.ndarray) -> pd.DataFrame:
    """``sql/monthly_sales.sql``'s answer for ``(n, n_months, 4)`` aggregates (``MONTHLY_COLUMNS``) of markets
    ``market_keys(n)``: one row per market and month with order lines, in ``ORDER BY 1, 2`` order."""
    market, month = np.nonzero(grid[..., 2])
    keys = pd.array(market_keys(len(grid)).astype(str), dtype="str")
    frame = pd.DataFrame({"market_key": keys.take(market), "month_start": _month_starts(grid.shape[1])[month]})
    for i, column in enumerate(MONTHLY_COLUMNS):
        frame[column] = grid[market, month, i]
    return frame


def answers(grid: np.ndarray, static: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The source queries' answers (``SOURCE_QUERIES``) for markets ``market_keys(n)`` generated directly:
    ``grid`` their monthly aggregates, ``static`` ``static_features.sql``'s columns; clean data-quality counts."""
    markets = territory(len(grid)).rename(columns=str.lower)
    markets["market_key"] = markets["market_key"].astype("str")
    static.insert(0, "market_key", markets["market_key"])
    return {
        "static_features": static,
        "markets": markets,
        "monthly_sales": monthly_sales(grid),
        "quality_markets": pd.DataFrame({"market_key": markets["market_key"], **dict.fromkeys(QUALITY_COUNTS, 0)}),
        "quality_table": pd.DataFrame({"null_keys": [0], "undated": [0], "latest_undated": [pd.NaT]}),
    }


def generated_answers(n: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``answers`` for ``n`` markets of the generated warehouse's archetypes (sizes above ``--sql-max``)."""
    rng = np.random.default_rng(seed + 2)
    m = _monthly_arrays(n, seed)
    kind, lines = m["kind"], m["lines"]
    quantity = lines * rng.integers(1, 6, lines.shape)
    grid = np.stack([m["revenue"], quantity, lines, np.minimum(lines, CUSTOMERS_PER_MARKET)], axis=-1)
    mix = np.array([a[2] for a in ARCHETYPES])[kind] + rng.normal(0, 0.05, (n, 3))
    static = pd.DataFrame(
        {
            "avg_discount": np.clip(_archetype(1, kind) + rng.normal(0, 0.01, n), 0, 0.5),
            "platinum_share": np.clip(mix[:, 0], 0, 1),
            "gold_share": np.clip(mix[:, 1], 0, 1),
            "silver_share": np.clip(mix[:, 2], 0, 1),
            "avg_ltv": _archetype(3, kind) * rng.lognormal(0, 0.2, n),
            "total_product_lines": _archetype(4, kind),
            "total_subcategories": rng.integers(5, 30, n),
            "n_customers": np.full(n, CUSTOMERS_PER_MARKET),
            "n_known_customers": np.full(n, CUSTOMERS_PER_MARKET),
        }
    )
    return answers(grid, static)


def planted_answers(planted: Any) -> dict[str, pd.DataFrame]:
    """``answers`` for ``benchmarks.planted.PlantedMarkets``: its grid and static features as the warehouse
    would return them (customers: the busiest month's)."""
    static = pd.DataFrame(planted.static, columns=list(STATIC_FEATURES))
    static["n_customers"] = static["n_known_customers"] = planted.grid[..., 3].max(axis=1)
    return answers(planted.grid, static)


# --------------------------------------------------------------------------------------------
# The DAG's steps on them
# --------------------------------------------------------------------------------------------


class Warehouse:
    """The steps' warehouse calls, timed per query (``seconds``, ``rows``), some answered from ``answers``.

    ``answers``: query name (the SQL file's stem) -> frame, each handed out once and then dropped.
    ``offline``: there is no warehouse (the steps' ``connect`` yields ``None``): every query must be answered.
    ``names``: each SQL text the steps rendered -> its query name.
    """

    def __init__(self, answers: dict[str, pd.DataFrame] | None = None, offline: bool = False) -> None:
        self.answers = dict(answers or {})
        self.offline = offline
        self.seconds: dict[str, float] = {}
        self.rows: dict[str, int] = {}
        self.names: dict[str, str] = {}

    def render_sql(self, name: str, *args: Any, **kwargs: Any) -> str:
        sql = render_sql(name, *args, **kwargs)
        self.names[sql] = name.removesuffix(".sql")
        return sql

    def query_frame(self, conn: Any, sql: str, params: Any = None) -> pd.DataFrame:
        name = self.names.get(sql, "other")
        if name in self.answers:
            return self.answers.pop(name)
        if conn is None:
            raise RuntimeError(f"offline run: no generated answer for the query {name!r}")
        start = time.perf_counter()
        frame = query_frame(conn, sql, params)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.rows[name] = self.rows.get(name, 0) + len(frame)
        return frame

    def table_exists(self, conn: Any, warehouse: Any, table: str) -> bool:
        """``warehouse.table_exists`` through this object's queries (answered offline by ``table_exists``)."""
        found = self.query_frame(conn, self.render_sql("table_exists.sql", warehouse), {"table_name": table})
        return bool(int(found["n"].iloc[0]))

    @contextmanager
    def patched(self):
        """Route the steps' ``render_sql`` / ``query_frame`` / ``table_exists`` (and, offline, ``connect``)
        through this object."""
        with ExitStack() as stack:
            stack.enter_context(mock.patch.object(steps, "render_sql", self.render_sql))
            stack.enter_context(mock.patch.object(steps, "query_frame", self.query_frame))
            stack.enter_context(mock.patch.object(steps, "table_exists", self.table_exists))
            if self.offline:
                stack.enter_context(mock.patch.object(steps, "connect", return_value=nullcontext()))
                # no tables to check: the generated answers are the warehouse
                stack.enter_context(mock.patch.object(contract, "check_contract", return_value={}))
                stack.enter_context(mock.patch.object(contract, "derived_columns", return_value=[]))
            yield self


def run_steps(run: RunArtifacts, until: str | None = None, stage: Callable | None = None) -> dict:
    """``steps.STEPS`` in order on ``run``, up to and including ``until``; each in ``stage(its name)`` (a
    context manager, e.g. a timer) when given. Returns each step's result by name."""
    results = {}
    for step in steps.STEPS:
        with stage(step.__name__) if stage else nullcontext():
            results[step.__name__] = step(run)
        if step.__name__ == until:
            break
    return results


def offline_run(config: SegmentationConfig, answers: dict, run_id: str, until: str) -> RunArtifacts:
    """A run of the steps up to ``until`` on generated ``answers``, without a warehouse (no earlier month)."""
    source = Warehouse(answers | {"table_exists": pd.DataFrame({"n": [0]})}, offline=True)
    with source.patched():
        run = steps.start_run(config, MONTH, run_id)
        run_steps(run, until)
    return run
