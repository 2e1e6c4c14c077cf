"""Starting and stopping the processes the emulator and integration tests need: the embedded
warehouse, Airflow's components, and waiting for ports and DAG runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


#: The embedded warehouse's command line (``include/segmentation/local/emulator.py``).
EMULATOR = [sys.executable, "-m", "include.segmentation.local.emulator"]


@contextmanager
def served_warehouse(
    db: Path, log: Path | None = None, env: dict[str, str] | None = None
) -> Generator[int, None, None]:
    """Serve the emulator's files in ``db`` (empty, or loaded beforehand) on a free port; yields the port."""
    from include.segmentation.local.emulator import served

    with served(db, log=log, env=env) as server:
        yield server.port


@contextmanager
def emulator(db: Path, adventureworks_dir: Path) -> Generator[int, None, None]:
    """Load AdventureWorks into ``db`` and serve it on a free port (``served_warehouse``); yields the port."""
    env = {"ADVENTUREWORKS_DIR": str(adventureworks_dir)}
    subprocess.run(
        [*EMULATOR, "load", "--db-path", str(db), "--source", "adventureworks"],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    with served_warehouse(db, env=env) as port:
        yield port


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


#: SQLite's busy timeout (seconds) for a test Airflow on its default SQLite metadata DB: the api-server,
#: scheduler and task processes all write to one file, and the default 5 s let a REST call fail with
#: "database is locked" (HTTP 500) under load. Read by Airflow as ``[database] sql_alchemy_connect_args``.
SQLITE_CONNECT_ARGS = {"timeout": 60}


def airflow_env(home: Path, env: dict[str, str], api_port: int | None = None) -> dict[str, str]:
    """The environment of a test Airflow in ``home`` (plus ``env``): what its components and a CLI call share."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # local test server, loopback only
        "PYTHONPATH": str(ROOT),
    }
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env:  # SQLite, not the PostgreSQL of the Celery test
        args = f"{__name__}.SQLITE_CONNECT_ARGS"
        base |= {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": args,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": args,
        }
    if api_port is not None:
        base |= {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        }
    return base | env


@contextmanager
def running_airflow(
    home: Path, env: dict[str, str], extra: dict[str, tuple[list[str], dict[str, str]]] | None = None
) -> Generator[tuple[int, dict[str, subprocess.Popen]], None, None]:
    """A real Airflow: metadata DB migrated, api-server, scheduler, dag-processor and ``extra``
    components (name -> (airflow arguments, extra environment)), each in a session of its own so that
    stopping it also stops the task processes it forked. Yields once the DAG is parsed; stops all."""
    api_port = free_port()
    env = airflow_env(home, env, api_port)
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
