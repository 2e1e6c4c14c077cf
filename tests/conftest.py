"""Shared fixtures. Airflow is pointed at a throw-away home before anything imports it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration at import time: give the test session its own home, DAG folder
# and no example DAGs, whatever the developer's environment says.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"


@pytest.fixture(scope="session")
def adventureworks_dir() -> Path:
    """The AdventureWorksDW parquet folder. Missing data skips locally but fails under CI=true."""
    from include.segmentation.demo_data import adventureworks_dir

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 90) -> None:
    """Wait until ``port`` accepts connections; fail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"{what} exited while starting"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not open port {port} in {timeout:.0f} s"
            time.sleep(0.2)


@contextmanager
def emulator(db: Path, adventureworks_dir: Path) -> Generator[int, None, None]:
    """Load AdventureWorks into ``db``, serve it on a free port, and stop the server (by PID) after."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADVENTUREWORKS_DIR": str(adventureworks_dir)}
    command = [sys.executable, "-m", "include.segmentation.emulator"]
    subprocess.run(
        [*command, "load", "--db-path", str(db), "--source", "adventureworks"],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen([*command, "serve", "--db-path", str(db), "--port", str(port)], env=env, cwd=ROOT)
    try:
        wait_for_port(port, server, "the embedded warehouse", timeout=60)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
