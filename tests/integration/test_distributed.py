"""The DAG on a real distributed Airflow: CeleryExecutor with PostgreSQL and Redis (Debian packages,
started here on 127.0.0.1), api-server, scheduler, dag-processor, and two Celery workers: one on the
default queue, one on `gpu`. The run is triggered through the REST API; the API's task-instance
records must show `train_autoencoder` on the gpu worker and every other task on the default one."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from include.segmentation.adapters.warehouse import connect
from include.segmentation.config import load_config
from include.segmentation.local.emulator import connection_json
from tests.processes import airflow_api, emulator, free_port, running_airflow, wait_for_port, wait_for_runs
from tests.unit.test_dag import TASKS

pytestmark = pytest.mark.integration


def _services_or_fail() -> tuple[Path, str]:
    """PostgreSQL's bin folder and redis-server; missing ones skip locally and fail under CI=true."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    redis = shutil.which("redis-server")
    if not initdb or not redis:
        message = "PostgreSQL or Redis is not installed: run scripts/install_services.sh (make test does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return Path(initdb[-1]).parent, redis


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, a developer may not.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres():
    pg_bin, _ = _services_or_fail()
    # Not under pytest's tmp folder: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="airflow-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = free_port()
    run = dict(check=True, capture_output=True, timeout=120)
    subprocess.run(_as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust"]), **run)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
        **run,
    )
    try:
        subprocess.run(
            _as_postgres([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"]),
            **run,
        )
        yield f"airflow@127.0.0.1:{port}/airflow"
    finally:
        subprocess.run(
            _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    _, redis_server = _services_or_fail()
    port = free_port()
    server = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path_factory.mktemp("redis"),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server, "redis-server", timeout=30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def celery_run(postgres, redis, adventureworks_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-celery")
    config_file = home / "segmentation.json"
    config_file.write_text(
        json.dumps(
            {
                "train_queue": "gpu",
                "artifacts_dir": str(home / "artifacts"),  # one folder all workers share, as the compose volume
                "model": {"epochs": 3, "min_steps": 60, "hidden_dim": 32},
            }
        )
    )
    with emulator(tmp_path_factory.mktemp("warehouse-celery"), adventureworks_dir) as wh_port:
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{postgres}",
            "AIRFLOW__CELERY__BROKER_URL": redis,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{postgres}",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.celery_identity.hostname",
            "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": connection_json(wh_port),
            "SEGMENTATION_CONFIG": str(config_file),
        }
        workers = {
            "worker-default": (
                ["celery", "worker", "-q", "default", "-c", "2", "-H", "default@localhost"],
                {"WORKER_IDENTITY": "default-worker", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
            ),
            "worker-gpu": (
                ["celery", "worker", "-q", "gpu", "-c", "1", "-H", "gpu@localhost"],
                {"WORKER_IDENTITY": "gpu-worker", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
            ),
        }
        with running_airflow(home, env, workers) as (port, processes):
            airflow_api(port, "PATCH", "/dags/market_segmentation", {"is_paused": False})
            run_id = airflow_api(
                port,
                "POST",
                "/dags/market_segmentation/dagRuns",
                {"logical_date": None, "conf": {"target_month": "2013-12"}},
            )["dag_run_id"]
            (state,) = wait_for_runs(port, [run_id], 900, processes)
            tis = airflow_api(port, "GET", f"/dags/market_segmentation/dagRuns/{run_id}/taskInstances")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(wh_port))
            with connect(load_config(config_file).warehouse) as conn:
                cur = conn.cursor()
                cur.execute("SELECT MARKET_KEY FROM MARKET_SEGMENT WHERE SEGMENT_MONTH = '2013-12-01'")
                written = sorted(r[0] for r in cur.fetchall())
    (embeddings,) = (home / "artifacts" / "2013-12").glob("*/embeddings.parquet")  # the run's own folder
    eligible = sorted(pd.read_parquet(embeddings)["market_key"])
    return {
        "state": state,
        "tis": {ti["task_id"]: ti for ti in tis["task_instances"]},
        "written": written,
        "eligible": eligible,
        "processes": processes,
        "home": home,
    }


def test_the_run_succeeds_on_celery(celery_run):
    assert celery_run["state"] == "success", f"logs in {celery_run['home']}"
    assert sorted(celery_run["tis"]) == sorted(TASKS)
    assert {ti["state"] for ti in celery_run["tis"].values()} == {"success"}


def test_training_ran_on_the_gpu_worker_and_the_rest_on_the_default_worker(celery_run):
    tis = celery_run["tis"]
    assert (tis["train_autoencoder"]["queue"], tis["train_autoencoder"]["hostname"]) == ("gpu", "gpu-worker")
    for task_id in set(TASKS) - {"train_autoencoder"}:
        assert (tis[task_id]["queue"], tis[task_id]["hostname"]) == ("default", "default-worker"), task_id


def test_the_months_segments_are_in_the_warehouse(celery_run):
    assert len(celery_run["written"]) >= 50
    assert celery_run["written"] == celery_run["eligible"]


def test_every_component_was_stopped(celery_run):
    assert all(p.poll() is not None for p in celery_run["processes"].values())
