"""The .sql files, run on the emulator against a tiny star schema with hand-computed results."""

from datetime import date

import pandas as pd
import pytest

from include.segmentation.adapters.warehouse import feature_params, query_frame, render_sql
from include.segmentation.config import DEFAULT_FEATURES, SegmentationConfig
from include.segmentation.local.demo_data import load_star

WINDOW = {"window_start": date(2013, 11, 1), "window_end": date(2014, 1, 1)} | feature_params(DEFAULT_FEATURES)


def test_static_features_exact_values(fake_conn, tiny_star):
    w = SegmentationConfig().warehouse
    load_star(fake_conn, tiny_star, w)
    got = query_frame(fake_conn, render_sql("static_features.sql", w), WINDOW).set_index("market_key")
    # A: lines of 11-05, 11-20, 12-01 (10-31 is before the window); customers 1 (Platinum, 1000) and 2 (Gold, 500)
    assert got.loc["A", "avg_discount"] == pytest.approx(0.1)
    assert (got.loc["A", "platinum_share"], got.loc["A", "gold_share"], got.loc["A", "silver_share"]) == (0.5, 0.5, 0.0)
    assert got.loc["A", "avg_ltv"] == pytest.approx(750.0)
    assert (got.loc["A", "total_product_lines"], got.loc["A", "total_subcategories"]) == (2, 3)
    assert got.loc["A", "n_customers"] == 2
    # B: only the 12-31 line; the 2014-01-01 line is after the window and must not leak in
    assert got.loc["B", "avg_discount"] == 0.0
    assert got.loc["B", "silver_share"] == 1.0
    assert got.loc["B", "platinum_share"] == 0.0
    assert got.loc["B", "avg_ltv"] == pytest.approx(100.0)
    assert (got.loc["B", "total_product_lines"], got.loc["B", "total_subcategories"]) == (1, 1)


def test_monthly_sales_exact_values(fake_conn, tiny_star):
    w = SegmentationConfig().warehouse
    load_star(fake_conn, tiny_star, w)
    got = query_frame(
        fake_conn,
        render_sql("monthly_sales.sql", w),
        {"history_start": date(2013, 10, 1), "window_end": date(2014, 1, 1)},
    )
    got["month_start"] = pd.to_datetime(got["month_start"]).dt.strftime("%Y-%m")
    rows = [
        tuple(r) for r in got[["market_key", "month_start", "revenue", "quantity", "n_lines", "n_customers"]].values
    ]
    assert rows == [
        ("A", "2013-10", 70.0, 1, 1, 1),
        ("A", "2013-11", 300.0, 3, 2, 1),
        ("A", "2013-12", 300.0, 1, 1, 1),
        ("B", "2013-12", 50.0, 5, 1, 1),
    ]


def test_a_mapped_warehouse_with_discount_amounts(fake_conn, tiny_star):
    """A user's own names and a discount stored as an amount, through the same SQL files."""
    config = SegmentationConfig.model_validate(
        {
            "warehouse": {
                "fact_sale": {
                    "name": "sales_lines",
                    "sales_amount": "amount_usd",
                    "discount": "discount_usd",
                    "discount_kind": "amount",
                },
                "customer": {"name": "clients", "loyalty_status": "tier"},
            }
        }
    )
    w = config.warehouse
    star = dict(tiny_star)
    star["fact_sale"] = tiny_star["fact_sale"].assign(DISCOUNT_PCT=[10.0, 0.0, 50.0, 0.0, 0.0, 0.0])
    load_star(fake_conn, star, w)
    got = query_frame(fake_conn, render_sql("static_features.sql", w), WINDOW).set_index("market_key")
    # discount share of gross: (10 + 0 + 50) / (110 + 200 + 350)
    assert got.loc["A", "avg_discount"] == pytest.approx(60 / 660)
    assert got.loc["A", "platinum_share"] == 0.5


def test_type2_customer_attributes_are_taken_as_of_the_month_end(fake_conn, tiny_star):
    """Customer 1 was Silver until 2013-12-01 and Platinum from then on (valid_to is exclusive)."""
    config = SegmentationConfig.model_validate(
        {"warehouse": {"customer": {"valid_from": "VALID_FROM", "valid_to": "VALID_TO"}}}
    )
    w = config.warehouse
    load_star(fake_conn, {k: v for k, v in tiny_star.items() if k != "customer"}, w)
    cur = fake_conn.cursor()
    cur.execute("ALTER TABLE DIM_CUSTOMER ADD COLUMN VALID_FROM DATE")
    cur.execute("ALTER TABLE DIM_CUSTOMER ADD COLUMN VALID_TO DATE")
    cur.executemany(
        "INSERT INTO DIM_CUSTOMER (CUSTOMER_KEY, CUSTOMER_TYPE, LOYALTY_STATUS, LIFETIME_VALUE, VALID_FROM, VALID_TO) "
        "VALUES (%s, 'Individual', %s, %s, %s, %s)",
        [
            (1, "Silver", 100.0, date(2010, 1, 1), date(2013, 12, 1)),
            (1, "Platinum", 1000.0, date(2013, 12, 1), None),
            (2, "Gold", 500.0, date(2010, 1, 1), None),
        ],
    )
    november = {"window_start": date(2013, 11, 1), "window_end": date(2013, 12, 1)} | feature_params(DEFAULT_FEATURES)
    december = WINDOW
    nov = query_frame(fake_conn, render_sql("static_features.sql", w), november).set_index("market_key")
    dec = query_frame(fake_conn, render_sql("static_features.sql", w), december).set_index("market_key")
    # November: only customer 1 bought in A, and was Silver with LTV 100 then
    assert (nov.loc["A", "silver_share"], nov.loc["A", "platinum_share"], nov.loc["A", "avg_ltv"]) == (1.0, 0.0, 100.0)
    # December: customers 1 (now Platinum, 1000) and 2 (Gold, 500); one row per customer, no duplicates
    assert (dec.loc["A", "platinum_share"], dec.loc["A", "gold_share"], dec.loc["A", "avg_ltv"]) == (0.5, 0.5, 750.0)
    assert dec.loc["A", "n_customers"] == 2
