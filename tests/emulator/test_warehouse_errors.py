"""Errors that retrying cannot fix are not retried: refused logins and rejected statements.

A refused login is answered by a stand-in for Snowflake's login endpoint (HTTP on 127.0.0.1, the
same JSON Snowflake returns: ``success: false`` and a 390xxx code), reached through the real Airflow
connection, SnowflakeHook and connector; rejected statements by the embedded emulator.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from include.segmentation import steps
from include.segmentation.adapters.warehouse import WarehouseAccessError, connect, query_frame
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.emulator import connection_json

W = SegmentationConfig().warehouse


class _Refusing(BaseHTTPRequestHandler):
    """Answers every login request as Snowflake does for ``code`` (counted in ``logins``)."""

    code, message, logins = "390100", "Incorrect username or password was specified.", 0

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        if self.path.startswith("/session/v1/login-request"):
            type(self).logins += 1
        body = json.dumps({"success": False, "code": self.code, "message": self.message, "data": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_login(monkeypatch):
    def serve(code: str, message: str):
        handler = type("Handler", (_Refusing,), {"code": code, "message": message, "logins": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(server.server_address[1]))
        servers.append(server)
        return handler

    servers: list[ThreadingHTTPServer] = []
    yield serve
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("390100", "Incorrect username or password was specified."),
        ("390102", "User temporarily locked."),
    ],
)
def test_a_refused_login_fails_at_once_with_one_attempt(refusing_login, code, message):
    handler = refusing_login(code, message)
    with pytest.raises(WarehouseAccessError) as err, connect(W):
        pass
    text = str(err.value)
    assert "refused the login of Airflow connection 'snowflake_default' (warehouse.conn_id)" in text
    assert message in text
    assert f"errno {code}" in text
    assert handler.logins == 1  # one failed login, not one per retry


def test_a_refused_login_fails_the_task_without_retry(refusing_login, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from dags.market_segmentation import _call

    handler = refusing_login("390100", "Incorrect username or password was specified.")
    run = steps.start_run(SegmentationConfig(artifacts_dir=str(tmp_path)), pd.Period("2013-12", "M"), "login")
    with pytest.raises(AirflowFailException, match="check_warehouse: the warehouse refused the login"):
        _call(steps.check_warehouse, run)
    assert handler.logins == 1


def test_a_statement_the_warehouse_rejects_is_named_and_not_retried(emulated_warehouse, tiny_star):
    emulated_warehouse(tiny_star)
    refused = pytest.raises(WarehouseAccessError, match=r"refused a statement in SEGMENTATION.MART .*NO_SUCH_TABLE")
    with refused, connect(W) as conn:
        query_frame(conn, "SELECT * FROM NO_SUCH_TABLE")
