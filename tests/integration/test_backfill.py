"""A real backfill: `POST /api/v2/backfills` against a running Airflow (api-server, scheduler,
dag-processor, LocalExecutor) on the embedded warehouse, for 5 months of 2013 with 3 runs at once.
The result must equal running those months one by one, in order, with the pipeline's functions.

The same Airflow, with `default_timezone` Europe/Berlin, then starts runs every other way (CLI with a
logical date, REST with a date, with none and with "now") and each must segment the month of the rule
in `months.py`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from include.segmentation import steps as pipeline
from include.segmentation.adapters.catalog import run_key
from include.segmentation.adapters.warehouse import connect
from include.segmentation.config import SegmentationConfig, load_config
from include.segmentation.local.demo_data import adventureworks_star, load_star
from include.segmentation.local.emulator import connection_json
from tests.processes import ROOT, airflow_api, airflow_env, emulator, running_airflow, wait_for_runs

pytestmark = pytest.mark.integration
MONTHS = pd.period_range("2013-08", "2013-12", freq="M")
# A small model keeps the runs quick; both sides use the same configuration file.
CONFIG = {"model": {"epochs": 3, "min_steps": 60, "hidden_dim": 32, "cpu_threads": 1}}


def _table(warehouse, sql: str) -> pd.DataFrame:
    with connect(warehouse) as conn:
        cur = conn.cursor()
        cur.execute(sql)
        frame = cur.fetch_pandas_all()
    for column in ("SEGMENT_MONTH", "PREVIOUS_MONTH"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column]).dt.strftime("%Y-%m")
    return frame


def _results(warehouse) -> dict[str, pd.DataFrame]:
    """What a month leaves in the warehouse: SegmentIDs, migrations (alignment) and profiles."""
    return {
        "segments": _table(warehouse, "SELECT MARKET_KEY, SEGMENT_MONTH, SEGMENT_ID FROM MARKET_SEGMENT ORDER BY 2, 1"),
        "migrations": _table(
            warehouse,
            "SELECT MARKET_KEY, SEGMENT_MONTH, PREVIOUS_MONTH, PREVIOUS_SEGMENT_ID, MOVED FROM SEGMENT_MIGRATION "
            "ORDER BY 2, 1",
        ),
        "profiles": _table(
            warehouse, "SELECT SEGMENT_MONTH, SEGMENT_ID, N_MARKETS, DESCRIPTION FROM SEGMENT_PROFILE ORDER BY 1, 2"
        ),
    }


def _start_every_other_way(port: int, home: Path, env: dict, processes: dict) -> dict[str, dict]:
    """Dry runs started by the CLI and the REST API; returns each run's state and ``run.json`` by how it started."""
    dry = {"dry_run": True}
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "trigger", "market_segmentation"]
        + ["--logical-date", "2013-06-01", "--run-id", "cli_2013_06", "--conf", json.dumps(dry)],
        env=airflow_env(home, env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    now = datetime.now(UTC).isoformat()  # what the trigger form fills in as the logical date
    dates = {"rest 2013-05-01": "2013-05-01T00:00:00Z", "rest null": None, "rest now": now}
    run_ids = {"cli 2013-06-01": "cli_2013_06"} | {
        way: airflow_api(port, "POST", "/dags/market_segmentation/dagRuns", {"logical_date": date, "conf": dry})[
            "dag_run_id"
        ]
        for way, date in dates.items()
    }
    states = wait_for_runs(port, list(run_ids.values()), 900, processes)
    started = {}
    for (way, run_id), state in zip(run_ids.items(), states, strict=True):
        (info,) = (home / "artifacts").glob(f"*/{run_key(run_id)}/run.json")
        started[way] = {"state": state, **json.loads(info.read_text())}
    return started


@pytest.fixture(scope="module")
def backfilled(adventureworks_dir, tmp_path_factory):
    """Run the backfill through Airflow and return the warehouse's segments; stop everything after."""
    home = tmp_path_factory.mktemp("airflow-backfill")
    config_file = home / "segmentation.json"
    config_file.write_text(json.dumps(CONFIG | {"artifacts_dir": str(home / "artifacts")}))
    with emulator(tmp_path_factory.mktemp("warehouse-backfill"), adventureworks_dir) as wh_port:
        env = {
            "AIRFLOW__CORE__PARALLELISM": "2",
            # midnight of a month's first day here is 22:00 or 23:00 UTC of the day before
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Europe/Berlin",
            "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": connection_json(wh_port),
            "SEGMENTATION_CONFIG": str(config_file),
        }
        with running_airflow(home, env) as (port, processes):
            # Logical dates are data-interval starts: 2013-01-01 .. 2013-12-01 are the months of 2013.
            backfill = airflow_api(
                port,
                "POST",
                "/backfills",
                {
                    "dag_id": "market_segmentation",
                    "from_date": "2013-08-01T00:00:00Z",
                    "to_date": "2013-12-01T00:00:00Z",
                    "max_active_runs": 3,
                    "run_backwards": False,
                    "reprocess_behavior": "none",
                    "dag_run_conf": {},
                },
            )
            airflow_api(port, "PATCH", "/dags/market_segmentation", {"is_paused": False})
            deadline = time.monotonic() + 1800
            while airflow_api(port, "GET", f"/backfills/{backfill['id']}")["completed_at"] is None:
                assert time.monotonic() < deadline, "the backfill did not complete in 30 minutes"
                assert all(p.poll() is None for p in processes.values()), "an Airflow process died"
                time.sleep(5)
            runs = airflow_api(port, "GET", "/dags/market_segmentation/dagRuns?run_type=backfill&limit=50")["dag_runs"]
            tasks = {
                r["logical_date"][:7]: {
                    t["task_id"]: t
                    for t in airflow_api(
                        port, "GET", f"/dags/market_segmentation/dagRuns/{r['dag_run_id']}/taskInstances"
                    )["task_instances"]
                }
                for r in runs
            }
            # Manual re-runs of an existing month, without a logical date (no "already exists" dead end)
            manual = [
                airflow_api(
                    port,
                    "POST",
                    "/dags/market_segmentation/dagRuns",
                    {"logical_date": None, "conf": {"target_month": "2013-12"}},
                )["dag_run_id"]
                for _ in range(2)
            ]
            states = wait_for_runs(port, manual, 600, processes)
            # A bad Param is refused before any run is created
            try:
                airflow_api(
                    port, "POST", "/dags/market_segmentation/dagRuns", {"logical_date": None, "conf": {"seq_len": 5}}
                )
                refused = None
            except urllib.error.HTTPError as err:
                refused = (err.code, err.read().decode())
            started = _start_every_other_way(port, home, env, processes)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(wh_port))
            results = _results(load_config(config_file).warehouse)
    return {
        "runs": runs,
        "tasks": tasks,
        "results": results,
        "segments": results["segments"],
        "processes": list(processes.values()),
        "manual_states": states,
        "refused": refused,
        "started": started,
    }


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
        return _results(config.warehouse)


def test_every_backfill_run_succeeded_and_months_ran_at_once(backfilled):
    runs = sorted(backfilled["runs"], key=lambda r: r["logical_date"])
    assert [r["logical_date"][:7] for r in runs] == [str(m) for m in MONTHS]
    assert {r["state"] for r in runs} == {"success"}
    # max_active_runs=3: later months started before earlier ones ended ...
    assert any(after["start_date"] < before["end_date"] for before, after in zip(runs, runs[1:], strict=False))


def test_each_month_read_the_previous_month_only_after_it_was_written(backfilled):
    # ... yet each month read its previous month (ids, model) only once that month's write had finished
    tasks = backfilled["tasks"]
    for before, after in zip(MONTHS, MONTHS[1:], strict=False):
        assert tasks[str(after)]["read_previous"]["start_date"] >= tasks[str(before)]["write_segments"]["end_date"]


def test_backfill_equals_running_the_months_one_by_one(backfilled, one_by_one):
    assert sorted(backfilled["segments"]["SEGMENT_MONTH"].unique()) == [str(m) for m in MONTHS]
    for name in ("segments", "migrations", "profiles"):
        pd.testing.assert_frame_equal(backfilled["results"][name], one_by_one[name], obj=name)
    assert sorted(backfilled["results"]["profiles"]["SEGMENT_MONTH"].unique()) == [str(m) for m in MONTHS]
    # every month after the first is aligned to the month before it
    migrations = backfilled["results"]["migrations"].drop_duplicates("SEGMENT_MONTH").set_index("SEGMENT_MONTH")
    assert migrations["PREVIOUS_MONTH"].iloc[1:].tolist() == [str(m) for m in MONTHS[:-1]]


def test_manual_reruns_of_a_month_replace_it(backfilled, one_by_one):
    assert backfilled["manual_states"] == ["success", "success"]
    december = backfilled["segments"][backfilled["segments"]["SEGMENT_MONTH"] == "2013-12"]
    assert len(december) == (one_by_one["segments"]["SEGMENT_MONTH"] == "2013-12").sum()
    assert december["MARKET_KEY"].is_unique


def test_an_invalid_param_is_refused_before_a_run_exists(backfilled):
    code, body = backfilled["refused"]
    assert code == 400
    assert "seq_len" in body


def test_every_way_of_starting_a_run_segments_the_month_of_the_rule(backfilled):
    started = backfilled["started"]
    last_complete = str(pd.Period(datetime.now(UTC).strftime("%Y-%m"), "M") - 1)
    got = {way: (run["month"], run["month_reason"]) for way, run in started.items()}
    assert got["cli 2013-06-01"] == ("2013-06", "logical date 2013-05-31T22:00:00Z")  # Berlin midnight, in UTC
    assert got["rest 2013-05-01"] == ("2013-05", "logical date 2013-05-01T00:00:00Z")
    assert got["rest null"] == (last_complete, "no logical date: last complete month before the run")
    assert got["rest now"][0] == last_complete
    assert "not over yet: last complete month" in got["rest now"][1]
    # the 2013 dry runs computed their month; the warehouse has no sales in the last complete month
    assert [started[w]["state"] for w in ("cli 2013-06-01", "rest 2013-05-01")] == ["success", "success"]
    assert all(started[w]["dry_run"] is True for w in started)  # conf from the CLI is a real boolean too
    assert "2013-06" not in set(backfilled["segments"]["SEGMENT_MONTH"])  # dry runs wrote nothing


def test_every_process_was_stopped(backfilled):
    assert all(p.poll() is not None for p in backfilled["processes"])
