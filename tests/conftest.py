"""Shared fixtures. Airflow is pointed at a throw-away home before anything imports it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    command = [sys.executable, "-m", "include.segmentation.local.emulator"]
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


def airflow_api(port: int, method: str, path: str, body: dict | None = None) -> dict:
    """Call Airflow's REST API (``/api/v2``) on 127.0.0.1 and return the JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def running_airflow(
    home: Path, env: dict[str, str], extra: dict[str, tuple[list[str], dict[str, str]]] | None = None
) -> Generator[tuple[int, dict[str, subprocess.Popen]], None, None]:
    """A real Airflow: metadata DB migrated, api-server, scheduler, dag-processor and ``extra``
    components (name -> (airflow arguments, extra environment)), each in a session of its own so that
    stopping it also stops the task processes it forked. Yields once the DAG is parsed; stops all."""
    api_port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # local test server, loopback only
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "PYTHONPATH": str(ROOT),
        }
        | env
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    components = {
        "api-server": (["api-server", "--port", str(api_port)], {}),
        "scheduler": (["scheduler"], {}),
        "dag-processor": (["dag-processor"], {}),
    } | (extra or {})
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, (args, extra_env) in components.items():
            log = open(home / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
            processes[name] = subprocess.Popen(
                [airflow, *args],
                env=env | extra_env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(api_port, processes["api-server"], "the api-server")
        deadline = time.monotonic() + 180
        while not any(d["dag_id"] == "market_segmentation" for d in airflow_api(api_port, "GET", "/dags")["dags"]):
            assert time.monotonic() < deadline, "the DAG was not parsed in 3 minutes"
            time.sleep(2)
        yield api_port, processes
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def wait_for_runs(port: int, run_ids: list[str], timeout: float, processes: dict[str, subprocess.Popen]) -> list[str]:
    """Poll until every DAG run has finished; fail early if an Airflow component dies. Returns the states."""
    deadline = time.monotonic() + timeout
    while True:
        states = [airflow_api(port, "GET", f"/dags/market_segmentation/dagRuns/{r}")["state"] for r in run_ids]
        if all(state in ("success", "failed") for state in states):
            return states
        assert time.monotonic() < deadline, f"DAG runs {run_ids} did not finish in {timeout:.0f} s"
        dead = [name for name, p in processes.items() if p.poll() is not None]
        assert not dead, f"Airflow component(s) {dead} died"
        time.sleep(3)


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
