"""The approval gate, alerts and the current-segment view against a real Airflow (api-server, scheduler,
dag-processor, triggerer, LocalExecutor) on the embedded warehouse, with a real SMTP server (aiosmtpd)
on 127.0.0.1 that receives the mails.

Runs, one after another, with ``approval: on_change``:

1. 2013-11, k=4: the first month, written without asking;
2. 2013-12, k=3: k changed, so it waits in "Required actions" (holding no worker slot) and a mail
   asks for approval; approved through the REST API: written;
3. 2014-01, k=2: asks again; rejected: nothing written, 2013-12 stays current;
4. 2014-01, k=3: the same k as 2013-12, most markets keep their SegmentID: written without asking;
5. 2015-06: after the data ends: fails, and the failure mail arrives.
"""

from __future__ import annotations

import email
import html
import json
import re
import time
from dataclasses import dataclass, field
from email import policy
from urllib.parse import quote

import pandas as pd
import pytest

from include.segmentation.adapters.warehouse import connect
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.emulator import connection_json
from tests.processes import ROOT, airflow_api, free_port, running_airflow, served_warehouse

pytestmark = pytest.mark.integration
DAG = "/dags/market_segmentation"
#: 12 synthetic markets, 2012-01 to 2014-01 (``demo_data.synthetic_star``).
STAR = {"n_markets": 12, "start": "2012-01", "end": "2014-01", "seed": 5}
CONFIG = {
    "sequences": {"seq_len": 6, "history_months": 24},
    "model": {"epochs": 1, "min_steps": 40, "hidden_dim": 16, "cpu_threads": 1},
    "clustering": {"k_max": 6},
    # k is set per run below; the kept share is not what this test is about
    "approval": {"mode": "on_change", "min_kept_share": 0.5},
    "alerts": {"email_to": ["analyst@example.com"], "ui_url": "http://airflow.example.com"},
}


@dataclass
class Inbox:
    """What the test SMTP server received: (subject, plain text of the body, recipients)."""

    mails: list[tuple[str, str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler name
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        body = message.get_body(preferencelist=("html", "plain"))
        # As a reader sees it: each link's text, then its address in brackets.
        linked = re.sub(r'<a href="([^"]+)">([^<]*)</a>', r"\2 (\1)", body.get_content()) if body else ""
        text = html.unescape(re.sub(r"<[^>]+>", "", linked))
        self.mails.append((str(message["subject"]), text, list(envelope.rcpt_tos)))
        return "250 OK"

    def wait_for(self, subject_part: str, timeout: float = 120) -> tuple[str, str, list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.mails if subject_part in m[0]]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no mail with {subject_part!r}; got {[m[0] for m in self.mails]}"
            time.sleep(1)


def _star_warehouse(db) -> None:
    import fakesnow
    import snowflake.connector

    from include.segmentation.local.demo_data import load_star, synthetic_star

    warehouse = SegmentationConfig().warehouse
    with fakesnow.patch(db_path=db):
        conn = snowflake.connector.connect(database=warehouse.database, schema=warehouse.schema_)
        try:
            load_star(conn, synthetic_star(**STAR), warehouse)
        finally:
            conn.close()


def _trigger(port: int, conf: dict) -> str:
    return airflow_api(port, "POST", f"{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]


def _run(port: int, run_id: str) -> dict:
    return airflow_api(port, "GET", f"{DAG}/dagRuns/{run_id}")


def _task(port: int, run_id: str, task_id: str) -> dict:
    return airflow_api(port, "GET", f"{DAG}/dagRuns/{run_id}/taskInstances/{task_id}")


def _until(what: str, check, processes, timeout: float = 900):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout:.0f} s"
        dead = [name for name, p in processes.items() if p.poll() is not None]
        assert not dead, f"Airflow component(s) {dead} died"
        time.sleep(3)
    return value


def _finished(port, run_id, processes) -> dict:
    return _until(
        f"run {run_id} finishing", lambda: (r := _run(port, run_id))["state"] in ("success", "failed") and r, processes
    )


def _awaiting(port, run_id, processes) -> dict:
    def waiting():
        task = _task(port, run_id, "approve_segments")
        assert _run(port, run_id)["state"] not in ("success", "failed"), "the run ended without asking"
        return task["state"] == "awaiting_input" and task

    return _until(f"run {run_id} asking for approval", waiting, processes)


def _answer(port: int, run_id: str, option: str) -> dict:
    path = f"{DAG}/dagRuns/{run_id}/taskInstances/approve_segments/-1/hitlDetails"
    return airflow_api(port, "PATCH", path, {"chosen_options": [option], "params_input": {}})


def _query(sql: str) -> pd.DataFrame:
    with connect(SegmentationConfig().warehouse) as conn:
        cur = conn.cursor()
        cur.execute(sql)
        frame = cur.fetch_pandas_all()
    return frame


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """Run the five runs of the module docstring; return what each left (states, notes, mails, tables)."""
    from aiosmtpd.controller import Controller

    home = tmp_path_factory.mktemp("airflow-approval")
    config_file = home / "segmentation.json"
    config_file.write_text(json.dumps(CONFIG | {"artifacts_dir": str(home / "artifacts")}))
    db = tmp_path_factory.mktemp("warehouse-approval")
    _star_warehouse(db)
    inbox, smtp_port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "segments@example.com"},
    }
    result: dict = {"inbox": inbox}
    try:
        with served_warehouse(db) as wh_port, pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(wh_port))
            env = {
                "AIRFLOW__CORE__PARALLELISM": "2",
                # the project's plugin: run notes (a listener in the scheduler) and the report pages
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": connection_json(wh_port),
                "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
                "SEGMENTATION_CONFIG": str(config_file),
            }
            triggerer = {"triggerer": (["triggerer"], {})}
            with running_airflow(home, env, extra=triggerer) as (port, processes):
                airflow_api(port, "PATCH", DAG, {"is_paused": False})
                # 1. the first month: nothing to compare with, written without asking
                first = _trigger(port, {"target_month": "2013-11", "n_clusters": 4})
                result["first"] = _finished(port, first, processes)
                result["first_answer"] = _task(port, first, "approve_segments")
                # 2. k 4 -> 3: asks; approved
                changed = _trigger(port, {"target_month": "2013-12", "n_clusters": 3})
                result["waiting"] = _awaiting(port, changed, processes)
                result["pool"] = airflow_api(port, "GET", "/pools/default_pool")
                result["hitl"] = airflow_api(
                    port, "GET", f"{DAG}/dagRuns/{changed}/taskInstances/approve_segments/-1/hitlDetails"
                )
                result["request_mail"] = inbox.wait_for("Approve the market segments of 2013-12")
                result["approved"] = _answer(port, changed, "Approve")
                result["changed"] = _finished(port, changed, processes)
                result["december"] = _query("SELECT MARKET_KEY, SEGMENT_ID, RUN_ID FROM MARKET_SEGMENT ORDER BY 1")
                # 3. k 3 -> 2 in January: asks; rejected
                rejected = _trigger(port, {"target_month": "2014-01", "n_clusters": 2})
                _awaiting(port, rejected, processes)
                _answer(port, rejected, "Reject")
                result["rejected"] = _finished(port, rejected, processes)
                result["rejected_write"] = _task(port, rejected, "write_segments")
                result["after_reject"] = _query("SELECT DISTINCT SEGMENT_MONTH FROM MARKET_SEGMENT ORDER BY 1")
                result["view_after_reject"] = _query("SELECT * FROM CURRENT_MARKET_SEGMENT ORDER BY MARKET_KEY")
                # 4. January with December's k: written without asking
                same = _trigger(port, {"target_month": "2014-01", "n_clusters": 3})
                result["same"] = _finished(port, same, processes)
                result["same_answer"] = _task(port, same, "approve_segments")
                result["view"] = _query("SELECT * FROM CURRENT_MARKET_SEGMENT ORDER BY MARKET_KEY")
                # 5. a month after the data: fails, and says so by mail
                failing = _trigger(port, {"target_month": "2015-06"})
                result["failing"] = _finished(port, failing, processes)
                result["failure_mail"] = inbox.wait_for("Market segmentation 2015-06 failed")
                result["ids"] = {"first": first, "changed": changed, "rejected": rejected, "same": same}
    finally:
        controller.stop()
    return result


def test_a_first_and_an_unchanged_month_are_written_without_asking(gated):
    assert gated["first"]["state"] == "success"
    assert gated["first_answer"]["state"] == "success"  # approved at once, nobody asked
    assert "written to the warehouse" in gated["first"]["note"]
    assert gated["same"]["state"] == "success"
    assert gated["same_answer"]["state"] == "success"
    assert gated["same"]["note"].startswith("**2014-01**: written to the warehouse (k=3")


def test_a_changed_month_waits_for_approval_without_holding_a_worker_slot(gated):
    assert gated["waiting"]["state"] == "awaiting_input"
    assert gated["pool"]["running_slots"] == 0  # the waiting task occupies no worker slot
    assert gated["hitl"]["subject"] == "Approve the market segments of 2013-12?"
    assert "k changed from 4 to 3" in gated["hitl"]["body"]
    assert "- k: 4 -> 3" in gated["hitl"]["body"]
    assert gated["hitl"]["options"] == ["Approve", "Reject"]
    # approved through the REST API: the month is written by this run
    assert gated["approved"]["chosen_options"] == ["Approve"]
    assert gated["changed"]["state"] == "success"
    assert set(gated["december"]["RUN_ID"]) >= {gated["ids"]["changed"]}
    assert "Approved in review" in gated["changed"]["note"]


def test_a_rejected_month_writes_nothing_and_the_previous_month_stays_current(gated):
    assert gated["rejected"]["state"] == "success"  # the run did its job: it asked and was answered
    assert gated["rejected_write"]["state"] == "skipped"
    months = pd.to_datetime(gated["after_reject"]["SEGMENT_MONTH"]).dt.strftime("%Y-%m").tolist()
    assert months == ["2013-11", "2013-12"]  # no 2014-01 rows
    view = gated["view_after_reject"]
    assert len(view) == 12  # one row per market
    assert set(pd.to_datetime(view["SEGMENT_MONTH"]).dt.strftime("%Y-%m")) == {"2013-12"}
    assert gated["rejected"]["note"].startswith(
        "**2014-01**: rejected in review: nothing written; 2013-12 stays current"
    )


def test_current_segment_view_follows_the_newest_month(gated):
    view = gated["view"]
    assert view["MARKET_KEY"].is_unique
    assert len(view) == 12
    assert set(pd.to_datetime(view["SEGMENT_MONTH"]).dt.strftime("%Y-%m")) == {"2014-01"}
    assert set(view["RUN_ID"]) == {gated["ids"]["same"]}
    assert view["SEGMENT_DESCRIPTION"].str.len().min() > 0


def test_the_approval_and_the_failure_mails_arrive(gated):
    subject, body, to = gated["request_mail"]
    assert to == ["analyst@example.com"]
    assert "2013-12" in subject
    assert "k changed from 4 to 3" in body
    run = gated["ids"]["changed"]
    assert "http://airflow.example.com/segments/by-run?run_id=" in body  # the report
    assert f"/dags/market_segmentation/runs/{quote(run, safe='')}/required_actions" in body
    subject, body, to = gated["failure_mail"]
    assert gated["failing"]["state"] == "failed"
    assert subject.startswith("Market segmentation 2015-06 failed at ")
    assert "Task log: http://airflow.example.com/dags/market_segmentation/runs/" in body
    assert "Report: http://airflow.example.com/segments/by-run?run_id=" in body
    assert gated["failing"]["note"].startswith("**2015-06**: failed, nothing written")
