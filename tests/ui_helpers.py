"""Helpers for the report and UI-plugin tests: real segmentation runs on a served embedded warehouse,
and Airflow's api-server with the project's plugins and a password login (SimpleAuthManager)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tests.processes import ROOT, free_port, served_warehouse, wait_for_port

#: Two months, so the second has a previous month to compare with (migrations, stability).
MONTHS = (pd.Period("2013-11", "M"), pd.Period("2013-12", "M"))
#: A small, fast model on the synthetic warehouse, as in tests/emulator/test_pipeline.py.
CONFIG = {
    "sequences": {"seq_len": 6, "history_months": 24},
    "model": {"epochs": 1, "min_steps": 40, "hidden_dim": 16, "cpu_threads": 1},
    "clustering": {"k_max": 6},
}
#: The synthetic star schema the runs segment (``demo_data.synthetic_star``): 12 markets, 2012-01 to 2013-12.
STAR = {"n_markets": 12, "start": "2012-01", "end": "2013-12", "seed": 5}
#: SimpleAuthManager users of the test api-server: name -> (role, password).
USERS = {"admin": ("admin", "admin-test-password"), "viewer": ("viewer", "viewer-test-password")}
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class SegmentedWarehouse:
    """Months segmented on a served emulator: the config used, its port, the artifact folder, and per
    month the run id and run folder (``steps.run_month``'s ``folder``) of its published run."""

    config: object  # SegmentationConfig
    port: int
    conn_json: str
    artifacts: Path
    months: tuple[pd.Period, ...]
    run_ids: tuple[str, ...]
    folders: tuple[str, ...]


def run_config(artifacts: Path, n_clusters: int | None = None):
    """``CONFIG`` with ``artifacts`` as the artifact store, and ``n_clusters`` (the Param) when given."""
    from include.segmentation.config import SegmentationConfig

    clustering = CONFIG["clustering"] | ({"n_clusters": n_clusters} if n_clusters is not None else {})
    return SegmentationConfig.model_validate({**CONFIG, "clustering": clustering, "artifacts_dir": str(artifacts)})


def segment(
    artifacts: Path,
    month: pd.Period,
    run_id: str,
    *,
    started_at: str,
    dry_run: bool = False,
    n_clusters: int | None = None,
) -> dict:
    """One run of ``month`` through ``steps.run_month`` (every step, for real) with ``run_config``, on the
    warehouse that ``AIRFLOW_CONN_SNOWFLAKE_DEFAULT`` names. ``run.json`` records what the DAG records
    (``run_context.run_info``): the Params, the start time (``started_at``, ISO UTC), run type, DAG id.
    Returns ``run_month``'s result (``folder``, then each step's)."""
    from include.segmentation.steps import run_month

    params = {"target_month": str(month), "n_clusters": n_clusters, "dry_run": dry_run, "force_retrain": False}
    info = {
        "params": params,
        "started_at": started_at,
        "logical_date": None,
        "run_type": "manual",
        "dag_id": "market_segmentation",
    }
    return run_month(run_config(artifacts, n_clusters), month, run_id, dry_run=dry_run, info=info)


@contextmanager
def segmented_warehouse(base: Path) -> Generator[SegmentedWarehouse, None, None]:
    """The synthetic star schema in an emulator served on a free port, ``MONTHS`` segmented through it
    with ``steps.run_month`` (``segment``: so results are in ``MARKET_SEGMENT``), one run each, each
    with its run folder and report.

    Sets ``AIRFLOW_CONN_SNOWFLAKE_DEFAULT`` in this process only while the months run (``conn_json``
    has it for other processes); stops the server after.
    """
    import fakesnow
    import pytest
    import snowflake.connector

    from include.segmentation.local.demo_data import load_star, synthetic_star
    from include.segmentation.local.emulator import connection_json

    db, artifacts = base / "warehouse", base / "artifacts"
    config = run_config(artifacts)
    star = synthetic_star(**STAR)
    db.mkdir(parents=True, exist_ok=True)
    with fakesnow.patch(db_path=db):
        conn = snowflake.connector.connect(database=config.warehouse.database, schema=config.warehouse.schema_)
        try:
            load_star(conn, star, config.warehouse)
        finally:
            conn.close()
    with served_warehouse(db) as port:
        # The connection only while the months run: other tests define their own.
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(port))
            run_ids = tuple(f"ui-test-{i}" for i in range(len(MONTHS)))
            folders = tuple(
                segment(artifacts, month, run_id, started_at=f"{month + 1}-01T06:00:00+00:00")["folder"]
                for month, run_id in zip(MONTHS, run_ids, strict=True)
            )
        yield SegmentedWarehouse(config, port, connection_json(port), artifacts, MONTHS, run_ids, folders)


def ui_env(home: Path, env: dict[str, str], port: int | None = None) -> dict[str, str]:
    """The environment of the test Airflow in ``home`` (its api-server on ``port``, and CLI calls):
    ``plugins/``, SimpleAuthManager's password login for ``USERS`` (passwords file in ``home``,
    all-admins off), plus ``env`` (warehouse connection, artifacts)."""
    passwords = home / "simple_auth_manager_passwords.json.generated"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, (r, _p) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "ui-test-secret-not-for-production",
        "PYTHONPATH": str(ROOT),
    }
    if port is not None:
        base |= {"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port)}
    return base | env


def airflow_cli(home: Path, env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``airflow *args`` against the test Airflow in ``home`` (``ui_env``); output captured as text."""
    airflow = str(Path(sys.executable).parent / "airflow")
    return subprocess.run(
        [airflow, *args], env=ui_env(home, env), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def api_server(home: Path, env: dict[str, str]) -> Generator[int, None, None]:
    """Airflow's api-server alone (metadata DB migrated), with ``plugins/`` and SimpleAuthManager's
    password login for ``USERS`` (``ui_env``). Yields its port; stops it (by process group) after."""
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json.generated"
    passwords.write_text(json.dumps({user: password for user, (_role, password) in USERS.items()}))
    port = free_port()
    env = ui_env(home, env, port)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    with open(home / "api-server.log", "w") as log:
        process = subprocess.Popen(
            [airflow, "api-server", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, "the api-server", timeout=120)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def get(port: int, path: str, token: str | None = None, cookie: str | None = None) -> tuple[int, str]:
    """GET ``path`` on 127.0.0.1:``port`` with an optional bearer token or ``_token`` cookie: (status, body)."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def login_token(port: int, username: str) -> str:
    """A JWT for ``username`` from SimpleAuthManager's ``POST /auth/token`` (its password from ``USERS``)."""
    body = json.dumps({"username": username, "password": USERS[username][1]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]
