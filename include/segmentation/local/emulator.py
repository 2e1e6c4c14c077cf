"""The embedded warehouse: fakesnow (Snowflake on DuckDB) served over the Snowflake protocol.

Every task process talks to it through the Snowflake connector and an ordinary Airflow connection,
exactly as it would to Snowflake. Tables persist under ``--db-path`` (one DuckDB file per database).

    python -m include.segmentation.local.emulator load  --db-path DIR [--source auto|adventureworks|synthetic]
    python -m include.segmentation.local.emulator serve --db-path DIR --port 8765
    python -m include.segmentation.local.emulator conn-uri --port 8765
    python -m include.segmentation.local.emulator dataset --db-path DIR [--field source]

``load`` opens the files in-process, so run it while no server holds them (the Makefile does).
Every load records what it loaded in ``DIR/dataset.json`` (``record_dataset``), so ``make demo``
can tell the user's own file from the demo data and never replaces the former without being told.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: The repository root: the child process runs ``python -m`` from here.
ROOT = Path(__file__).resolve().parents[3]
#: The month ``make demo`` segments on the demo data (AdventureWorks covers 2010-12 to 2014-01).
DEMO_MONTH = "2013-12"


#: The loaded data set's record, beside the DuckDB files.
DATASET_FILE = "dataset.json"


def record_dataset(db_path: Path, source: str, name: str, latest_month: str) -> None:
    """Record what ``db_path`` holds: ``source`` (``file``, ``adventureworks`` or ``synthetic``), ``name``
    (the file loaded, or the data set's name) and ``latest_month`` (YYYY-MM, the newest complete month)."""
    record = {"source": source, "name": name, "latest_month": latest_month}
    (db_path / DATASET_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_dataset(db_path: Path) -> dict[str, str]:
    """``record_dataset``'s record for ``db_path``; {} when nothing was loaded (or by a version before it);
    ``{"source": "unreadable"}`` when the record exists but cannot be read: what the warehouse holds is
    then unknown, and ``make demo`` refuses to replace it without being told."""
    path = db_path / DATASET_FILE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"source": "unreadable", "name": str(path)}
    return record if isinstance(record, dict) and isinstance(record.get("source"), str) else {"source": "unreadable"}


def connection_json(port: int, host: str = "127.0.0.1") -> str:
    """The ``AIRFLOW_CONN_SNOWFLAKE_DEFAULT`` value (JSON form) for an emulator on ``host:port``.

    The credentials are the emulator's fixed placeholders, not secrets; ``protocol`` is honoured by
    ``warehouse.get_hook``.
    """
    return json.dumps(
        {
            "conn_type": "snowflake",
            "login": "fakesnow",
            "password": "fakesnow-local",
            "extra": {
                "account": "fakesnow",
                "host": host,
                "port": port,
                "protocol": "http",
                # The emulator answers an unsupported statement with HTTP 500, which the connector
                # would retry for minutes; fail at once instead (as fakesnow's own helper does).
                "network_timeout": 1,
                "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
            },
        }
    )


def load(db_path: Path, source: str) -> dict[str, int]:
    """Load the demo star schema into the emulator files under ``db_path`` (in-process)."""
    import warnings

    import fakesnow
    import snowflake.connector

    from include.segmentation.config import load_config
    from include.segmentation.local import demo_data

    # fakesnow's in-process write path warns about an extra Arrow copy: irrelevant for a one-off load.
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")

    if source == "auto":
        source = "adventureworks" if demo_data.adventureworks_dir().is_dir() else "synthetic"
        if source == "synthetic":
            print(f"{demo_data.adventureworks_dir()} not found: loading the synthetic generator instead")
    tables = demo_data.adventureworks_star() if source == "adventureworks" else demo_data.synthetic_star()
    warehouse = load_config().warehouse
    db_path.mkdir(parents=True, exist_ok=True)
    with fakesnow.patch(db_path=db_path):
        conn = snowflake.connector.connect(database=warehouse.database, schema=warehouse.schema_)
        try:
            loaded = demo_data.load_star(conn, tables, warehouse)
        finally:
            conn.close()
    # The demo's default month (scripts/demo.sh): the last December both data sets cover in full.
    record_dataset(db_path, source, source, DEMO_MONTH)
    print(f"loaded {source} into {warehouse.database}.{warehouse.schema_}: {loaded}")
    return loaded


def serve(db_path: Path, port: int, host: str = "127.0.0.1") -> None:
    """Serve the persisted emulator over HTTP until interrupted."""
    import fakesnow.server
    import uvicorn
    from fakesnow.instance import FakeSnow

    db_path.mkdir(parents=True, exist_ok=True)
    # `fakesnow -s` ignores its db-path flag; replacing the server's shared instance persists tables.
    fakesnow.server.shared_fs = FakeSnow(db_path=str(db_path))
    uvicorn.run(fakesnow.server.app, host=host, port=port, log_level="warning")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def served(
    db_path: Path, log: Path | None = None, env: Mapping[str, str] | None = None
) -> Generator[subprocess.Popen, None, None]:
    """``serve`` ``db_path`` in a child process on a free port of 127.0.0.1, for tests and benchmarks.

    Yields the server process, its port in ``server.port``; stops it afterwards. ``log``: where its
    output goes (default: inherited). Raises ``RuntimeError`` when the server exits or does not listen
    within 120 s.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", __name__, "serve", "--db-path", str(db_path), "--port", str(port)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    out = open(log, "w") if log else None  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=out, stderr=out and subprocess.STDOUT)
    server.port = port  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                where = f"; see {log}" if log else ""
                raise RuntimeError(f"the embedded warehouse did not start on port {port}{where}")
            time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if out:
            out.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.segmentation.local.emulator", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_load = sub.add_parser("load", help="load the demo star schema (server must be stopped)")
    p_load.add_argument("--db-path", type=Path, required=True)
    p_load.add_argument("--source", choices=["auto", "adventureworks", "synthetic"], default="auto")
    p_serve = sub.add_parser("serve", help="serve the emulator on 127.0.0.1")
    p_serve.add_argument("--db-path", type=Path, required=True)
    port = int(os.environ.get("WAREHOUSE_PORT", "8765"))  # scripts/env.sh's, so every command agrees
    p_serve.add_argument("--port", type=int, default=port)
    p_uri = sub.add_parser("conn-uri", help="print the Airflow connection (JSON) for the emulator")
    p_uri.add_argument("--port", type=int, default=port)
    p_data = sub.add_parser("dataset", help="print what the warehouse files hold (dataset.json), {} if unknown")
    p_data.add_argument("--db-path", type=Path, required=True)
    p_data.add_argument("--field", choices=["source", "name", "latest_month"], help="print only this field")
    args = parser.parse_args(argv)
    if args.command == "load":
        load(args.db_path, args.source)
    elif args.command == "serve":
        serve(args.db_path, args.port)
    elif args.command == "dataset":
        record = read_dataset(args.db_path)
        print(record.get(args.field, "") if args.field else json.dumps(record))
    else:
        print(connection_json(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
