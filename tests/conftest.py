"""Shared fixtures. Airflow is pointed at a throw-away home before anything imports it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from tests.processes import ROOT

# Airflow reads its configuration at import time: give the test session its own home, DAG folder
# and no example DAGs, whatever the developer's environment says.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"


@pytest.fixture(scope="session")
def adventureworks_dir() -> Path:
    """The AdventureWorksDW parquet folder. Missing data skips locally but fails under CI=true."""
    from include.segmentation.local.demo_data import adventureworks_dir

    path = adventureworks_dir()
    if not (path / "FactInternetSales.parquet").exists():
        message = f"AdventureWorksDW parquet files not found in {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true, so tests on real data must not be skipped")
        pytest.skip(message)
    return path


@pytest.fixture
def fake_conn():
    """An in-process emulator connection (``fakesnow.patch``) in SEGMENTATION.MART, empty each test."""
    import fakesnow
    import snowflake.connector

    with fakesnow.patch():
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        try:
            yield conn
        finally:
            conn.close()


@pytest.fixture
def emulated_warehouse(monkeypatch):
    """An in-process emulator reached through the Airflow connection, as the steps reach Snowflake.

    Yields ``load(star, warehouse=WarehouseConfig())``, which loads a star (``demo_data.load_star``)
    and returns the open connection; everything is discarded after the test.
    """
    import fakesnow
    import snowflake.connector

    from include.segmentation.config import WarehouseConfig
    from include.segmentation.local.demo_data import load_star
    from include.segmentation.local.emulator import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")

        def load(star: dict[str, pd.DataFrame], warehouse: WarehouseConfig | None = None):
            load_star(conn, star, warehouse or WarehouseConfig())
            return conn

        try:
            yield load
        finally:
            conn.close()


@pytest.fixture
def tiny_star() -> dict[str, pd.DataFrame]:
    """A hand-checkable star schema: markets A and B, 4 customers, 3 products, 6 sale lines.

    Lines dated 2013-10-31 and 2014-01-01 fall outside a [2013-11-01, 2014-01-01) window.
    """
    fact = pd.DataFrame(
        [
            ("2013-11-05", "A", 1, 1, 100.0, 0.10, 1),
            ("2013-11-20", "A", 1, 2, 200.0, 0.00, 2),
            ("2013-12-01", "A", 2, 3, 300.0, 0.20, 1),
            ("2013-12-31", "B", 3, 1, 50.0, 0.00, 5),
            ("2014-01-01", "B", 4, 2, 999.0, 0.50, 1),
            ("2013-10-31", "A", 4, 3, 70.0, 0.30, 1),
        ],
        columns=["ORDER_DATE", "MARKET_KEY", "CUSTOMER_KEY", "PRODUCT_KEY", "SALES_AMOUNT", "DISCOUNT_PCT", "QUANTITY"],
    )
    fact["ORDER_DATE"] = pd.to_datetime(fact["ORDER_DATE"])
    fact.insert(0, "SALES_ORDER_NUMBER", [f"SO{i}" for i in range(len(fact))])
    fact.insert(1, "SALES_ORDER_LINE", 1)
    fact.insert(2, "CHANNEL", "Internet")
    return {
        "fact_sale": fact,
        "territory": pd.DataFrame(
            {
                "MARKET_KEY": ["A", "B"],
                "MARKET_NAME": ["Alpha", "Beta"],
                "COUNTRY": ["X", "Y"],
                "TERRITORY_GROUP": ["Europe", "Pacific"],
            }
        ),
        "customer": pd.DataFrame(
            {
                "CUSTOMER_KEY": [1, 2, 3, 4],
                "CUSTOMER_TYPE": "Individual",
                "LOYALTY_STATUS": ["Platinum", "Gold", "Silver", "Platinum"],
                "LIFETIME_VALUE": [1000.0, 500.0, 100.0, 10000.0],
            }
        ),
        "product": pd.DataFrame(
            {
                "PRODUCT_KEY": [1, 2, 3],
                "PRODUCT_NAME": ["p1", "p2", "p3"],
                "PRODUCT_LINE": ["R", "M", "R"],
                "SUBCATEGORY": ["Road Bikes", "Mountain Bikes", "Helmets"],
                "CATEGORY": ["Bikes", "Bikes", "Accessories"],
            }
        ),
    }


@pytest.fixture(scope="session")
def segmented_months(tmp_path_factory):
    """Two months (``tests.ui_helpers.MONTHS``) segmented on the synthetic warehouse, served on a free
    port for the whole session, with their artifacts and reports (``ui_helpers.SegmentedWarehouse``)."""
    from tests.ui_helpers import segmented_warehouse

    with segmented_warehouse(tmp_path_factory.mktemp("segmented")) as segmented:
        yield segmented


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (``apt-get install chromium``) for Playwright. Missing: skip, but fail under CI=true."""
    from tests.ui_helpers import CHROMIUM

    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} not found (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true, so the browser test must not be skipped")
        pytest.skip(message)
    return CHROMIUM
