"""A real backfill: `POST /api/v2/backfills` against a running Airflow (api-server, scheduler,
dag-processor, LocalExecutor) on the embedded warehouse, for the 12 months of 2013. The result must
equal running those months one by one, in order, with the pipeline's functions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from include.segmentation import pipeline
from include.segmentation.config import SegmentationConfig, load_config
from include.segmentation.demo_data import adventureworks_star, load_star
from include.segmentation.emulator import connection_json
from include.segmentation.warehouse import connect
from tests.conftest import ROOT, emulator, free_port, wait_for_port

pytestmark = pytest.mark.integration
MONTHS = pd.period_range("2013-01", "2013-12", freq="M")
# A small model keeps 12 runs quick; both sides use the same configuration file.
CONFIG = {"model": {"epochs": 3, "min_steps": 60, "hidden_dim": 32, "cpu_threads": 1}}


def _api(port: int, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _segments(warehouse) -> pd.DataFrame:
    with connect(warehouse) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT MARKET_KEY, SEGMENT_MONTH, SEGMENT_ID FROM MARKET_SEGMENT ORDER BY SEGMENT_MONTH, MARKET_KEY"
        )
        frame = cur.fetch_pandas_all()
    frame["SEGMENT_MONTH"] = pd.to_datetime(frame["SEGMENT_MONTH"]).dt.strftime("%Y-%m")
    return frame


@pytest.fixture(scope="module")
def backfilled(adventureworks_dir, tmp_path_factory):
    """Run the backfill through Airflow and return the warehouse's segments; stop everything after."""
    home = tmp_path_factory.mktemp("airflow-backfill")
    config_file = home / "segmentation.json"
    config_file.write_text(json.dumps(CONFIG | {"artifacts_dir": str(home / "artifacts")}))
    api_port = free_port()
    with emulator(tmp_path_factory.mktemp("warehouse-backfill"), adventureworks_dir) as wh_port:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")} | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # local test server, loopback only
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": connection_json(wh_port),
            "SEGMENTATION_CONFIG": str(config_file),
            "PYTHONPATH": str(ROOT),
        }
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run([airflow, "db", "migrate"], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
        processes = []
        try:
            for command in (["api-server", "--port", str(api_port)], ["scheduler"], ["dag-processor"]):
                log = open(home / f"{command[0]}.log", "w")  # noqa: SIM115 - closed with the process
                processes.append(
                    subprocess.Popen(
                        [airflow, *command],
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            wait_for_port(api_port, processes[0], "the api-server")
            deadline = time.monotonic() + 180
            while not any(d["dag_id"] == "market_segmentation" for d in _api(api_port, "GET", "/dags")["dags"]):
                assert time.monotonic() < deadline, "the DAG was not parsed in 3 minutes"
                time.sleep(2)
            # Logical dates are data-interval starts: 2013-01-01 .. 2013-12-01 are the months of 2013.
            backfill = _api(
                api_port,
                "POST",
                "/backfills",
                {
                    "dag_id": "market_segmentation",
                    "from_date": "2013-01-01T00:00:00Z",
                    "to_date": "2013-12-01T00:00:00Z",
                    "max_active_runs": 1,
                    "run_backwards": False,
                    "reprocess_behavior": "none",
                    "dag_run_conf": {},
                },
            )
            _api(api_port, "PATCH", "/dags/market_segmentation", {"is_paused": False})
            deadline = time.monotonic() + 1800
            while _api(api_port, "GET", f"/backfills/{backfill['id']}")["completed_at"] is None:
                assert time.monotonic() < deadline, "the backfill did not complete in 30 minutes"
                assert all(p.poll() is None for p in processes), "an Airflow process died"
                time.sleep(5)
            runs = _api(api_port, "GET", "/dags/market_segmentation/dagRuns?run_type=backfill&limit=50")["dag_runs"]
            # Manual re-runs of an existing month, without a logical date (no "already exists" dead end)
            manual = [
                _api(
                    api_port,
                    "POST",
                    "/dags/market_segmentation/dagRuns",
                    {"logical_date": None, "conf": {"target_month": "2013-12"}},
                )["dag_run_id"]
                for _ in range(2)
            ]
            deadline = time.monotonic() + 600
            while True:
                states = [_api(api_port, "GET", f"/dags/market_segmentation/dagRuns/{r}")["state"] for r in manual]
                if all(state in ("success", "failed") for state in states):
                    break
                assert time.monotonic() < deadline, "the manual runs did not finish in 10 minutes"
                time.sleep(5)
            # A bad Param is refused before any run is created
            try:
                _api(
                    api_port,
                    "POST",
                    "/dags/market_segmentation/dagRuns",
                    {"logical_date": None, "conf": {"seq_len": 5}},
                )
                refused = None
            except urllib.error.HTTPError as err:
                refused = (err.code, err.read().decode())
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(wh_port))
            segments = _segments(load_config(config_file).warehouse)
    return {"runs": runs, "segments": segments, "processes": processes, "manual_states": states, "refused": refused}


@pytest.fixture(scope="module")
def one_by_one(adventureworks_dir, tmp_path_factory):
    """The same 12 months through the pipeline's functions, in order, on a fresh in-process warehouse."""
    import fakesnow
    import snowflake.connector

    config = SegmentationConfig.model_validate(CONFIG | {"artifacts_dir": str(tmp_path_factory.mktemp("seq"))})
    with pytest.MonkeyPatch.context() as mp, fakesnow.patch():
        mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        load_star(conn, adventureworks_star(adventureworks_dir), config.warehouse)
        for month in MONTHS:
            pipeline.run_month(config, month, run_id=f"one_by_one_{month}")
        return _segments(config.warehouse)


def test_every_backfill_run_succeeded_in_month_order(backfilled):
    runs = sorted(backfilled["runs"], key=lambda r: r["logical_date"])
    assert [r["logical_date"][:7] for r in runs] == [str(m) for m in MONTHS]
    assert {r["state"] for r in runs} == {"success"}
    # max_active_runs=1: each month started after the previous one ended (segment ids align in order)
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["start_date"] >= before["end_date"]


def test_backfill_equals_running_the_months_one_by_one(backfilled, one_by_one):
    assert sorted(backfilled["segments"]["SEGMENT_MONTH"].unique()) == [str(m) for m in MONTHS]
    pd.testing.assert_frame_equal(backfilled["segments"], one_by_one)


def test_manual_reruns_of_a_month_replace_it(backfilled, one_by_one):
    assert backfilled["manual_states"] == ["success", "success"]
    december = backfilled["segments"][backfilled["segments"]["SEGMENT_MONTH"] == "2013-12"]
    assert len(december) == (one_by_one["SEGMENT_MONTH"] == "2013-12").sum()
    assert december["MARKET_KEY"].is_unique


def test_an_invalid_param_is_refused_before_a_run_exists(backfilled):
    code, body = backfilled["refused"]
    assert code == 400
    assert "seq_len" in body


def test_every_process_was_stopped(backfilled):
    assert all(p.poll() is not None for p in backfilled["processes"])
