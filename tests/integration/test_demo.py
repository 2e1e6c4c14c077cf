"""`make load` then `make demo` as a new user runs them: the demo segments the user's file, never
replaces it with AdventureWorks unless told, and prints no Airflow noise (``scripts/demo.sh``)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from tests.processes import ROOT, free_port
from tests.retail import retail_file

pytestmark = pytest.mark.integration
#: A tiny model: the test is about which data and month the demo takes, not about the segments.
SMALL = {
    "sequences": {"seq_len": 6, "history_months": 12},
    "model": {"epochs": 1, "min_steps": 20, "hidden_dim": 8, "cpu_threads": 1},
    "clustering": {"k_max": 4},
}


def _env(tmp_path) -> dict[str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return env | {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "WAREHOUSE_DIR": str(tmp_path / "warehouse"),
        "WAREHOUSE_PORT": str(free_port()),
        "SEGMENTATION_ARTIFACTS": str(tmp_path / "artifacts"),
        "SEGMENTATION_CONFIG": str(config),
    }


def _run(command: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_demo_segments_the_loaded_file_and_keeps_it(tmp_path):
    env = _env(tmp_path)
    path = tmp_path / "sales.csv"
    retail_file(path, start="2018-07", end="2019-12", n_markets=12)
    load = _run(["scripts/warehouse.sh", "load-file", str(path)], env)
    assert load.returncode == 0, load.stdout + load.stderr
    # Both State (12 values) and Region (3) look like markets: the finer one is taken, and said.
    assert "market <- 'State'" in load.stdout
    assert "'State' (12 values) chosen over 'Region' (3 values)" in load.stdout
    assert "`make demo` now segments this data (2019-12" in load.stdout
    # Region groups the states: it names the markets' group in descriptions (not "Unknown markets").
    assert "territory_group <- 'Region'" in load.stdout
    assert "made up (the file has no such columns): LIFETIME_VALUE:" in load.stdout

    demo = _run(["scripts/demo.sh"], env)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-5000:]
    assert f"keeping your data loaded from {path}" in out
    assert "running DAG market_segmentation for 2019-12 (logical date 2019-12-01)" in out
    assert "2019-12: 12 markets in MARKET_SEGMENT" in out
    assert "Skipping masking" not in out
    # The summary's profile table prints the report's units: shares and trends in %.
    header = next(line for line in out.splitlines() if line.lstrip().startswith("segment") and "markets" in line)
    assert "avg discount" in header
    assert "trend (/month)" in header
    assert re.search(r"\d+\.\d%", out.split(header)[1].splitlines()[1])
    record = json.loads((tmp_path / "warehouse" / "dataset.json").read_text())
    assert record == {"source": "file", "name": str(path), "latest_month": "2019-12"}
    assert not (tmp_path / "airflow" / "dags-test.log").read_text().count("AdventureWorks")


def test_an_unreadable_record_of_the_loaded_data_is_not_replaced(tmp_path):
    env = _env(tmp_path)
    (tmp_path / "warehouse").mkdir()
    (tmp_path / "warehouse" / "dataset.json").write_text('{"source": "file", "name": "my.csv"')  # cut short
    demo = _run(["scripts/demo.sh"], env, timeout=120)
    assert demo.returncode == 2
    assert "dataset.json cannot be read, so what the warehouse holds is unknown" in demo.stdout
    assert not (tmp_path / "warehouse" / "server.pid").exists()  # nothing loaded, nothing started


def test_keep_on_an_empty_warehouse_says_what_to_do(tmp_path):
    demo = _run(["scripts/demo.sh"], _env(tmp_path) | {"DEMO_SOURCE": "keep"}, timeout=120)
    assert demo.returncode == 2
    assert "has no data loaded; run make load FILE=... or make demo" in demo.stdout
