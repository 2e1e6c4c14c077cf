"""The warehouse contract (``adapters.contract``): shapes real teams have fail once, named, before any query."""

from __future__ import annotations

import pandas as pd
import pytest

from include.segmentation import steps
from include.segmentation.adapters.contract import (
    WarehouseContractError,
    check_contract,
    column_problems,
    found_types,
    mapped_columns,
)
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.demo_data import load_star

W = SegmentationConfig().warehouse
MONTH = pd.Period("2013-12", "M")


def _retype(conn, table: str, column: str, expression: str) -> None:
    """Rebuild ``table`` with ``column`` computed by ``expression`` (e.g. a cast to VARCHAR), or dropped (None)."""
    cur = conn.cursor()
    keep = "" if expression is None else f", {expression} AS {column}"
    cur.execute(f"CREATE TABLE RETYPED AS SELECT * EXCLUDE ({column}){keep} FROM {table}")
    cur.execute(f"DROP TABLE {table}")
    cur.execute(f"ALTER TABLE RETYPED RENAME TO {table}")


def _problems(conn, warehouse=W) -> list[str]:
    with pytest.raises(WarehouseContractError) as err:
        check_contract(conn, warehouse)
    assert "nothing was read" in str(err.value)
    return err.value.problems


def test_the_demo_star_schema_meets_the_contract(fake_conn, tiny_star):
    load_star(fake_conn, tiny_star, W)
    types = check_contract(fake_conn, W)
    assert types["FACT_SALE"]["ORDER_DATE"] == "DATE"
    assert types["FACT_SALE"]["SALES_AMOUNT"] == "FLOAT"
    assert types["DIM_CUSTOMER"]["CUSTOMER_KEY"] == "NUMBER"
    assert set(types) == {"FACT_SALE", "DIM_TERRITORY", "DIM_CUSTOMER", "DIM_PRODUCT", "DIM_DATE"}


def test_a_missing_column_is_named_by_config_field_table_and_column(fake_conn, tiny_star):
    load_star(fake_conn, tiny_star, W)
    _retype(fake_conn, "DIM_PRODUCT", "SUBCATEGORY", None)
    assert _problems(fake_conn) == [
        "warehouse.product.subcategory: column DIM_PRODUCT.SUBCATEGORY does not exist",
    ]


def test_a_missing_table_is_named_once(fake_conn, tiny_star):
    load_star(fake_conn, tiny_star, W)
    fake_conn.cursor().execute("DROP TABLE DIM_PRODUCT")
    assert _problems(fake_conn) == ["warehouse.product.name: table DIM_PRODUCT does not exist"]


def test_text_measures_and_dates_are_refused_with_what_would_be_lost(fake_conn, tiny_star):
    load_star(fake_conn, tiny_star, W)
    _retype(fake_conn, "FACT_SALE", "DISCOUNT_PCT", "CAST(DISCOUNT_PCT AS VARCHAR)")
    # an amount as text, the way a CSV export writes thousands: TRY_CAST would drop it silently
    _retype(
        fake_conn,
        "FACT_SALE",
        "SALES_AMOUNT",
        "CASE WHEN SALES_AMOUNT = 300 THEN '1,234.50' WHEN SALES_AMOUNT = 50 THEN 'n/a' "
        "ELSE CAST(SALES_AMOUNT AS VARCHAR) END",
    )
    _retype(fake_conn, "FACT_SALE", "ORDER_DATE", "CAST(ORDER_DATE AS VARCHAR)")
    problems = _problems(fake_conn)
    assert problems == [
        "warehouse.fact_sale.order_date: FACT_SALE.ORDER_DATE is TEXT; it must be a DATE or TIMESTAMP_NTZ",
        "warehouse.fact_sale.sales_amount: FACT_SALE.SALES_AMOUNT is TEXT; it must be a number (NUMBER or FLOAT) "
        "(2 of 6 values do not parse as numbers, e.g. '1,234.50', 'n/a')",
        "warehouse.fact_sale.discount: FACT_SALE.DISCOUNT_PCT is TEXT; it must be a number (NUMBER or FLOAT) "
        "(6 values, all parse as numbers: cast the column to NUMBER in a view)",
    ]


def test_a_zoned_order_date_is_refused_with_the_wall_clock_rule(fake_conn, tiny_star):
    load_star(fake_conn, tiny_star, W)
    _retype(fake_conn, "FACT_SALE", "ORDER_DATE", "CAST(ORDER_DATE AS TIMESTAMP_TZ)")
    (problem,) = _problems(fake_conn)
    assert problem.startswith("warehouse.fact_sale.order_date: FACT_SALE.ORDER_DATE is TIMESTAMP_TZ;")
    assert "wall-clock months" in problem
    assert "CONVERT_TIMEZONE" in problem
    # a naive timestamp is a wall clock: accepted
    _retype(fake_conn, "FACT_SALE", "ORDER_DATE", "CAST(ORDER_DATE AS TIMESTAMP_NTZ)")
    assert check_contract(fake_conn, W)["FACT_SALE"]["ORDER_DATE"] == "TIMESTAMP_NTZ"


def test_a_type2_customer_table_without_valid_from_is_refused_with_how_to_configure_it(fake_conn, tiny_star):
    load_star(fake_conn, tiny_star, W)
    # a type-2 customer table: customer 1 changed tier on 2013-12-01, so it has two rows
    cur = fake_conn.cursor()
    cur.execute("ALTER TABLE DIM_CUSTOMER ADD COLUMN VALID_FROM DATE")
    cur.execute("ALTER TABLE DIM_CUSTOMER ADD COLUMN VALID_TO DATE")
    cur.execute("UPDATE DIM_CUSTOMER SET VALID_FROM = '2013-12-01' WHERE CUSTOMER_KEY = 1")
    cur.execute("UPDATE DIM_CUSTOMER SET VALID_FROM = '2010-01-01' WHERE CUSTOMER_KEY <> 1")
    cur.execute(
        "INSERT INTO DIM_CUSTOMER (CUSTOMER_KEY, CUSTOMER_TYPE, LOYALTY_STATUS, LIFETIME_VALUE, VALID_FROM, VALID_TO) "
        "VALUES (1, 'Individual', 'Silver', 100.0, '2010-01-01', '2013-12-01')"
    )
    (problem,) = _problems(fake_conn)
    assert problem.startswith(
        "warehouse.customer: 1 CUSTOMER_KEY value(s) of DIM_CUSTOMER have more than one row (2 rows; e.g. "
        "CUSTOMER_KEY = '1')"
    )
    assert "set warehouse.customer.valid_from and valid_to" in problem
    # configured as type-2, the same table meets the contract: one row per key and valid_from
    type2 = SegmentationConfig.model_validate(
        {"warehouse": {"customer": {"valid_from": "VALID_FROM", "valid_to": "VALID_TO"}}}
    ).warehouse
    assert check_contract(fake_conn, type2)["DIM_CUSTOMER"]["VALID_FROM"] == "DATE"


def test_duplicate_dimension_keys_fail_with_table_key_and_count(fake_conn, tiny_star):
    star = dict(tiny_star, product=pd.concat([tiny_star["product"], tiny_star["product"].iloc[:2]]))
    load_star(fake_conn, star, W)
    (problem,) = _problems(fake_conn)
    assert problem.startswith(
        "warehouse.product: 2 PRODUCT_KEY value(s) of DIM_PRODUCT have more than one row "
        "(4 rows; e.g. PRODUCT_KEY = '1')"
    )
    assert "valid_from" not in problem  # only the customer table can be versioned


def test_column_problems_is_pure_and_reports_every_problem_at_once():
    found = pd.DataFrame(
        {
            "table_name": ["FACT_SALE"] * 3,
            "column_name": ["ORDER_DATE", "SALES_AMOUNT", "QUANTITY"],
            "data_type": ["TIMESTAMP_LTZ", "FLOAT", "TEXT"],
        }
    )
    problems = column_problems(mapped_columns(W), found_types(found), lambda col: " [checked]")
    assert problems[0].startswith("warehouse.fact_sale.order_date: FACT_SALE.ORDER_DATE is TIMESTAMP_LTZ")
    assert (
        "warehouse.fact_sale.quantity: FACT_SALE.QUANTITY is TEXT; it must be a number (NUMBER or FLOAT) [checked]"
        in (problems)
    )
    assert "warehouse.fact_sale.market_key: column FACT_SALE.MARKET_KEY does not exist" in problems
    assert "warehouse.territory.name: table DIM_TERRITORY does not exist" in problems
    assert sum("DIM_TERRITORY" in p for p in problems) == 1


def test_the_first_task_fails_once_and_nothing_is_read_or_written(emulated_warehouse, tiny_star, tmp_path):
    """Through the DAG's own task wrapper: a contract error is an AirflowFailException (no retry)."""
    from airflow.sdk.exceptions import AirflowFailException

    from dags.market_segmentation import _call

    conn = emulated_warehouse(tiny_star)
    _retype(conn, "FACT_SALE", "DISCOUNT_PCT", "CAST(DISCOUNT_PCT AS VARCHAR)")
    config = SegmentationConfig(artifacts_dir=str(tmp_path))
    run = steps.start_run(config, MONTH, "contract")
    with pytest.raises(AirflowFailException, match=r"check_warehouse: .*warehouse.fact_sale.discount: FACT_SALE"):
        _call(steps.check_warehouse, run)
    assert not run.contract.exists()
    tables = conn.cursor().execute("SHOW TABLES").fetchall()
    assert not any("MARKET_SEGMENT" in str(row) for row in tables)
