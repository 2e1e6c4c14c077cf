"""The whole DAG through Airflow (`airflow dags test`, a real DAG run with its own metadata DB) on
AdventureWorksDW served by the embedded warehouse over the Snowflake protocol."""

from __future__ import annotations

import html
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from include.segmentation.adapters.warehouse import connect
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.emulator import connection_json
from tests.processes import ROOT, emulator

pytestmark = pytest.mark.integration
MONTH = "2013-12-01"


@pytest.fixture(scope="module")
def warehouse_port(adventureworks_dir, tmp_path_factory):
    """AdventureWorks in a fresh embedded warehouse, with the test process's connection pointing at it."""
    with emulator(tmp_path_factory.mktemp("warehouse"), adventureworks_dir) as port, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(port))
        yield port


def _month_rows() -> pd.DataFrame:
    with connect(SegmentationConfig().warehouse) as conn:
        cur = conn.cursor()
        cur.execute("SELECT * FROM MARKET_SEGMENT WHERE SEGMENT_MONTH = %(m)s", {"m": MONTH})
        frame = cur.fetch_pandas_all()
    return frame


@pytest.fixture(scope="module")
def two_runs(warehouse_port, tmp_path_factory):
    """Run the DAG twice for 2013-12 (`dags test ... 2013-12-01`, default timezone Asia/Tokyo); return
    row counts and paths. In Tokyo that logical date is 2013-11-30 15:00 UTC: it must still segment 2013-12."""
    home = tmp_path_factory.mktemp("airflow-home")
    artifacts = tmp_path_factory.mktemp("artifacts")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Tokyo",
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": connection_json(warehouse_port),
        "SEGMENTATION_ARTIFACTS": str(artifacts),
        "PYTHONPATH": str(ROOT),
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    counts, logs = [], []
    for _ in range(2):
        run = subprocess.run(
            [airflow, "dags", "test", "market_segmentation", "2013-12-01"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        logs.append(run.stdout + run.stderr)
        assert run.returncode == 0, logs[-1][-5000:]
        assert "state=success" in logs[-1], logs[-1][-5000:]
        counts.append(len(_month_rows()))
    return {
        "counts": counts,
        "artifacts": artifacts / "2013-12",
        "logs": logs,
        "env": env,
        "airflow": airflow,
        "home": home,
    }


def _published(two_runs: dict) -> Path:
    """The artifact folder of the run whose rows the warehouse holds for the month."""
    from include.segmentation.adapters.catalog import run_key

    (run_id,) = set(_month_rows()["RUN_ID"])
    return two_runs["artifacts"] / run_key(run_id)


def _asset_events(home: Path) -> int:
    """Asset events recorded for the MARKET_SEGMENT table in the run's Airflow metadata DB."""
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
            ("snowflake://fakesnow/SEGMENTATION/MART/MARKET_SEGMENT",),
        ).fetchone()
    return count


def _dags_test(two_runs: dict, conf: dict) -> str:
    run = subprocess.run(
        [two_runs["airflow"], "dags", "test", "market_segmentation", "2013-12-01", "-c", json.dumps(conf)],
        env=two_runs["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return run.stdout + run.stderr


def test_dags_test_on_the_first_segments_that_month_in_any_timezone(two_runs):
    info = json.loads((_published(two_runs) / "run.json").read_text())
    assert info["month"] == MONTH[:7]
    assert info["month_reason"] == "logical date 2013-11-30T15:00:00Z"


def test_every_eligible_market_has_exactly_one_segment(two_runs):
    rows = _month_rows()
    eligible = pd.read_parquet(_published(two_runs) / "embeddings.parquet")["market_key"]
    excluded = pd.read_parquet(_published(two_runs) / "excluded.parquet")["market_key"]
    assert len(eligible) >= 50  # AdventureWorks has 69 state/province markets; a few lack recent sales
    assert sorted(rows["MARKET_KEY"]) == sorted(eligible)
    assert rows["MARKET_KEY"].is_unique
    assert not set(rows["MARKET_KEY"]) & set(excluded)
    assert rows["SEGMENT_ID"].notna().all()  # K-Means assigns every market


def test_rerunning_the_month_keeps_the_same_rows(two_runs):
    assert two_runs["counts"][0] == two_runs["counts"][1] > 0
    # the second run reused the stored model (same windows, settings and seed), in a folder of its own
    assert "reusing the stored model" in two_runs["logs"][1]
    assert len(list(two_runs["artifacts"].glob("*/segments.parquet"))) == 2


def test_run_record_figures(two_runs):
    with connect(SegmentationConfig().warehouse) as conn:
        cur = conn.cursor()
        cur.execute("SELECT * FROM SEGMENTATION_RUN WHERE SEGMENT_MONTH = %(m)s", {"m": MONTH})
        runs = cur.fetch_pandas_all()
    assert len(runs) == 2  # one row per DAG run
    rows = _month_rows()
    for run in runs.itertuples():
        assert re.fullmatch(r"lstm_hybrid_v2\.0_\d{8}", run.MODEL_VERSION)
        assert run.MODEL_VERSION == "lstm_hybrid_v2.0_20131231"
        assert 2 <= run.N_CLUSTERS <= 10
        assert len(rows) == run.N_MARKETS
        for score in (run.SILHOUETTE_HYBRID, run.SILHOUETTE_LSTM, run.SILHOUETTE_STATIC):
            assert math.isfinite(score)
            assert -1 <= score <= 1
        assert run.FINAL_LOSS > 0
    assert set(rows["MODEL_VERSION"]) == {"lstm_hybrid_v2.0_20131231"}
    assert rows["SEGMENT_ID"].nunique() == runs["N_CLUSTERS"].iloc[0]
    metrics = json.loads((_published(two_runs) / "metrics.json").read_text())
    assert metrics["n_clusters"] == runs["N_CLUSTERS"].iloc[0]
    run = json.loads((_published(two_runs) / "run.json").read_text())
    assert run["run_id"] == rows["RUN_ID"].iloc[0]
    assert run["dry_run"] is False
    assert run["started_at"].endswith("+00:00")  # the DAG run's start, in UTC


def test_the_demo_run_has_profiles_descriptions_and_a_report(two_runs):
    with connect(SegmentationConfig().warehouse) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT SEGMENT_ID, N_MARKETS, DESCRIPTION FROM SEGMENT_PROFILE WHERE SEGMENT_MONTH = %(m)s", {"m": MONTH}
        )
        profiles = cur.fetch_pandas_all()
    rows = _month_rows()
    assert sorted(profiles["SEGMENT_ID"]) == sorted(rows["SEGMENT_ID"].unique())
    assert profiles["N_MARKETS"].sum() == len(rows)
    report = (_published(two_runs) / "report.html").read_text()
    assert 'id="pca-plot"' in report
    assert "plotly.js v" in report  # plotly.js inlined: the page works offline
    assert "<script src=" not in report
    for description in profiles["DESCRIPTION"]:
        assert len(description) > 20
        assert html.escape(description) in report


def test_a_month_without_data_fails_at_once_and_changes_nothing(two_runs):
    before = _month_rows().sort_values("MARKET_KEY", ignore_index=True)
    started = time.monotonic()
    run = subprocess.run(
        [two_runs["airflow"], "dags", "test", "market_segmentation", "2013-12-01", "-c", '{"target_month": "2020-01"}'],
        env=two_runs["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = run.stdout + run.stderr
    assert "state=failed" in log
    assert "AirflowFailException: extract_static_features: no sales in FACT_SALE between 2019-02-01" in log
    assert time.monotonic() - started < 120  # no retries with back-off for a data error
    pd.testing.assert_frame_equal(_month_rows().sort_values("MARKET_KEY", ignore_index=True), before)
    assert _asset_events(two_runs["home"]) == 2  # a failed run does not announce new segments


def test_a_dry_run_writes_nothing_and_updates_no_asset(two_runs):
    before = _month_rows().sort_values("MARKET_KEY", ignore_index=True)
    published = {p: p.read_bytes() for p in _published(two_runs).iterdir()}
    log = _dags_test(two_runs, {"dry_run": True, "n_clusters": 3})
    assert "state=success" in log
    assert "dry run: lstm_hybrid_v2.0_20131231 computed, nothing written" in log
    pd.testing.assert_frame_equal(_month_rows().sort_values("MARKET_KEY", ignore_index=True), before)
    # the published run's files are untouched; the dry run's report says what it is
    assert {p: p.read_bytes() for p in _published(two_runs).iterdir()} == published
    dry = [p for p in two_runs["artifacts"].glob("*/run.json") if json.loads(p.read_text())["dry_run"]]
    assert len(dry) == 1
    assert "(dry run)</h1>" in (dry[0].parent / "report.html").read_text()
    assert _asset_events(two_runs["home"]) == 2
