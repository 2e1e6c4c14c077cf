"""The "Market segments" Airflow UI plugin: its pages in-process (FastAPI's TestClient), then inside
Airflow's own api-server with a password login, and in headless Chromium through Airflow's UI."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from include.segmentation.adapters.catalog import run_key
from include.segmentation.report import NAV_MARKER, external_plotly
from tests.processes import ROOT
from tests.ui_helpers import CONFIG, MONTHS, STAR, USERS, airflow_cli, api_server, get, login_token, segment

DAG_ID = "market_segmentation"
#: Every page; the run page is December's run in ``segmented_warehouse`` (run id ``ui-test-1``).
PAGES = ("/", "/runs/2013-12", f"/runs/2013-12/{run_key('ui-test-1')}", "/markets", "/about")
#: A runs-page row: month, run key, status and the cells.
ROW = re.compile(r'<tr data-month="([^"]+)" data-run-key="([^"]+)" data-status="([^"]+)">(.*?)</tr>', re.S)


@pytest.fixture(scope="module")
def plugin():
    """The plugin module, loaded from its file as Airflow's plugin manager loads it."""
    spec = importlib.util.spec_from_file_location("market_segments", ROOT / "plugins" / "market_segments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _client(plugin, signed_in: bool = True):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    app = plugin.create_app()
    if signed_in:
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="viewer", role="viewer")
        app.dependency_overrides[app.state.can_read_runs] = lambda: None
    return TestClient(app)


def test_plugin_adds_a_nav_entry_and_mounts_its_app(plugin):
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.plugins_manager import is_valid_plugin

    assert is_valid_plugin(plugin.MarketSegmentsPlugin)
    (app,) = plugin.MarketSegmentsPlugin.fastapi_apps
    assert app["url_prefix"] == "/segments"
    assert not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    (view,) = plugin.MarketSegmentsPlugin.external_views
    assert view["name"] == "Segments"  # the navigation shows about 10 characters
    assert view["destination"] == "nav"
    assert view["url_route"]  # without it the entry opens nothing
    assert view["href"] == "/segments/"  # without the slash Airflow's 404 page loads in the iframe


def test_plugin_module_loads_nothing_heavy():
    """Airflow imports plugins in every process (task processes too): loading this one imports no
    module beyond what Airflow's plugin manager has already loaded (no FastAPI app, pandas, project code)."""
    code = f"""
import importlib.util, json, sys
import airflow.plugins_manager
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("market_segments", {str(ROOT / "plugins" / "market_segments.py")!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True
    )
    # The "Segment report" extra link's base class (a few lines over attrs) is all it adds,
    # and the listener's hook marker (run notes).
    added = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(added) <= {"airflow.sdk.bases.operatorlink", "airflow.listeners", "airflow._shared.listeners"}


def test_every_page_refuses_anonymous_requests(plugin):
    client = _client(plugin, signed_in=False)
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 401, page
        assert "segment" not in response.text.lower()


def _run_folder(root: Path, month: str, run_id: str, started_at: str, **info) -> Path:
    """A run folder as ``RunArtifacts.start`` writes it, with ``metrics`` and ``report`` (text) when given."""
    metrics, report = info.pop("metrics", None), info.pop("report", None)
    folder = root / month / run_key(run_id)
    folder.mkdir(parents=True)
    run = {"run_id": run_id, "month": month, "dry_run": False, "fresh": False, "params": {}, "started_at": started_at}
    (folder / "run.json").write_text(json.dumps(run | info))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if report is not None:
        (folder / "report.html").write_text(f"<html><body>{NAV_MARKER}<main>{report}</main></body></html>")
    return folder


#: The hand-made store's published runs (``published_runs``): run "r" in both months.
PUBLISHED = {"2013-11": "r", "2013-12": "r"}


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A hand-made artifact store. 2013-11: run "r" (report, a NaN silhouette). 2013-12: run "r"
    (metrics, no report), a dry run "d" (report), an older run "o" (report) and a newer one "n" (nothing
    but ``run.json``: failed or still running); plus folders that
    are no run (unreadable or no ``run.json``), the old layout's month report and a non-month folder.
    Runs "r" are published (``PUBLISHED``)."""
    metrics = {"algorithm": "kmeans", "n_clusters": 3, "silhouette_hybrid": 0.41, "silhouette_lstm": 0.2}
    nov = metrics | {"silhouette_static": float("nan")}
    _run_folder(tmp_path, "2013-11", "r", "2013-12-01T06:00:00+00:00", metrics=nov, report="the November report")
    _run_folder(
        tmp_path, "2013-12", "r", "2014-01-01T06:00:00+00:00", metrics=metrics | {"n_clusters": 4, "stability": 0.75}
    )
    params = {"target_month": "2013-12", "n_clusters": 5, "dry_run": True, "epochs": None}
    dry = metrics | {"n_clusters": 5}
    _run_folder(
        tmp_path,
        "2013-12",
        "d",
        "2014-01-02T06:00:00+00:00",
        dry_run=True,
        params=params,
        metrics=dry,
        report="the dry run",
    )
    _run_folder(tmp_path, "2013-12", "o", "2013-12-31T23:00:00+00:00", report="an older December run")
    _run_folder(tmp_path, "2013-12", "n", "2014-01-05T06:00:00+00:00")  # started after "r": failed or running
    (tmp_path / "2013-12" / "broken").mkdir()
    (tmp_path / "2013-12" / "broken" / "run.json").write_text("{not json")
    (tmp_path / "2013-12" / "empty").mkdir()
    (tmp_path / "2013-12" / "report.html").write_text("the old layout's report")
    (tmp_path / "notes").mkdir()
    monkeypatch.setenv("SEGMENTATION_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("SEGMENTATION_CONFIG", raising=False)
    return tmp_path


def _unreachable(*_args):
    raise ConnectionError("no route to host")


def test_list_runs_reads_every_run_folder(plugin, artifacts, monkeypatch, caplog):
    from include.segmentation.config import load_config

    monkeypatch.setattr(plugin, "published_runs", lambda _config: PUBLISHED)
    with caplog.at_level(logging.WARNING):
        runs, error = plugin.list_runs(load_config())
    assert error is None
    assert [(r["month"], r["run_id"], r["status"]) for r in runs] == [
        ("2013-12", "r", "published"),  # the published run first, though it started after the others
        ("2013-12", "n", "not-published"),
        ("2013-12", "d", "dry-run"),
        ("2013-12", "o", "superseded"),
        ("2013-11", "r", "published"),
    ]
    assert runs[2] == {
        "month": "2013-12",
        "run_id": "d",
        "run_key": run_key("d"),
        "dry_run": True,
        "started_at": "2014-01-02T06:00:00+00:00",
        "params": {"target_month": "2013-12", "n_clusters": 5, "dry_run": True, "epochs": None},
        "published": False,
        "status": "dry-run",
        "has_report": True,
        "outcome": None,  # no outcome.json: the hand-made run did not record one
        "algorithm": "kmeans",
        "n_clusters": 5,
        "previous_month": None,
        "previous_k": None,
        "airflow": None,  # this process has no Airflow metadata DB with the DAG's runs
        "changed": {"dry_run": True, "n_clusters": 5, "target_month": "2013-12"},  # epochs None: left out
        "silhouette_hybrid": 0.41,
        "silhouette_lstm": 0.2,
        "silhouette_static": None,
        "stability": None,
        "noise_fraction": None,
    }
    assert runs[0]["has_report"] is False
    assert runs[3]["n_clusters"] is None  # no metrics.json yet
    assert runs[4]["silhouette_static"] is None  # NaN
    assert "broken" in caplog.text  # unreadable run.json: skipped, logged
    assert "empty" in caplog.text

    monkeypatch.setattr(plugin, "published_runs", _unreachable)
    runs, error = plugin.list_runs(load_config())
    assert [(r["run_id"], r["published"], r["status"]) for r in runs] == [
        ("n", None, "unknown"),  # without the warehouse: by start time
        ("d", None, "dry-run"),
        ("r", None, "unknown"),
        ("o", None, "unknown"),
        ("r", None, "unknown"),
    ]
    assert error.startswith("The warehouse could not be read (ConnectionError)")


def test_runs_page_lists_runs_newest_month_first(plugin, artifacts, monkeypatch):
    monkeypatch.setattr(plugin, "published_runs", lambda _config: PUBLISHED)
    page = _client(plugin).get("/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    rows = ROW.findall(page.text)
    assert [(month, key, status) for month, key, status, _ in rows] == [
        ("2013-12", run_key("r"), "published"),
        ("2013-12", run_key("n"), "not-published"),
        ("2013-12", run_key("d"), "dry-run"),
        ("2013-12", run_key("o"), "superseded"),
        ("2013-11", run_key("r"), "published"),
    ]
    published, newer, dry, older, november = (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for *_, row in rows)
    assert published[:3] == ["2013-12", "<code>r</code>", "2014-01-01 06:00:00+00:00"]  # no report: no link
    assert "no report (run incomplete)" in published[-2]
    assert "not in Airflow" in published[-1]
    assert published[10] == "75%"
    assert ">not published</span>" in newer[3]
    assert ">dry run</span>" in dry[3]
    assert dry[4] == "dry_run=True, n_clusters=5, target_month=2013-12"  # unset Params left out
    assert dry[6] == "5"
    assert ">not published (superseded)</span>" in older[3]
    assert "defaults" in older[4]
    assert november[0] == '<a href="./runs/2013-11">2013-11</a>'  # the month's published report
    assert november[-2] == f'<a href="./runs/2013-11/{run_key("r")}">open report</a>'
    assert november[7] == "0.410"
    assert november[9] == "n/a"  # NaN silhouette
    assert 'class="error"' not in page.text


def test_runs_page_without_the_warehouse_still_lists_the_runs(plugin, artifacts, monkeypatch):
    monkeypatch.setattr(plugin, "published_runs", _unreachable)
    client = _client(plugin)
    page = client.get("/")
    assert page.status_code == 200
    assert "The warehouse could not be read (ConnectionError)" in page.text
    assert [status for *_, status, _ in ROW.findall(page.text)] == [
        "unknown",
        "dry-run",
        "unknown",
        "unknown",
        "unknown",
    ]
    month = client.get("/runs/2013-11")
    assert month.status_code == 503
    assert "The warehouse could not be read (ConnectionError)" in month.text
    assert f'<a href="../runs/2013-11/{run_key("r")}">r</a>' in month.text  # the month's runs, each openable


def test_report_pages_serve_the_published_and_any_run(plugin, artifacts, monkeypatch):
    monkeypatch.setattr(plugin, "published_runs", lambda _config: PUBLISHED)
    client = _client(plugin)
    page = client.get("/runs/2013-11")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "the November report" in page.text
    assert NAV_MARKER not in page.text
    assert '<a href="../runs/2013-11" class="active">Report 2013-11</a>' in page.text
    assert '<a href="../about"' in page.text

    december = client.get("/runs/2013-12")  # its published run "r" has no report
    assert december.status_code == 404
    assert "Run <code>r</code> has no report" in december.text
    missing = client.get("/runs/2014-01")
    assert missing.status_code == 404
    assert "No published run for 2014-01" in missing.text
    assert client.get("/runs/2013-13").status_code == 404
    assert client.get("/runs/..%2F..%2Fetc").status_code == 404

    dry = client.get(f"/runs/2013-12/{run_key('d')}")
    assert dry.status_code == 200
    assert dry.headers["cache-control"] == "no-store"
    assert "the dry run" in dry.text
    nav = f'<a href="../../runs/2013-12/{run_key("d")}" class="active">Report 2013-12, run d (dry run)</a>'
    assert nav in dry.text
    assert '<a href="../../about"' in dry.text
    assert "an older December run" in client.get(f"/runs/2013-12/{run_key('o')}").text
    incomplete = client.get(f"/runs/2013-12/{run_key('r')}")
    assert incomplete.status_code == 404
    assert "Run <code>r</code> has no report" in incomplete.text


@pytest.mark.parametrize(
    "path",
    [
        "/runs/2013-12/nope-0000",  # no such folder
        "/runs/2013-12/broken",  # unreadable run.json
        "/runs/2013-12/empty",  # no run.json
        "/runs/2013-12/report.html",  # a file, not a run folder
        "/runs/2013-12/%2E%2E",  # ".."
        "/runs/2013-12/%2E",  # "."
        "/runs/2013-12/a%20b",  # not a run key
        "/runs/2013-12/%2E%2E%2F2013-11",
        f"/runs/2013-11/{run_key('d')}",  # another month's run
        f"/runs/2013-13/{run_key('d')}",
    ],
)
def test_a_bad_run_key_is_not_found(plugin, artifacts, path):
    assert _client(plugin).get(path).status_code == 404


def test_about_page_explains_the_approach(plugin, artifacts):
    page = _client(plugin).get("/about")
    assert page.status_code == 200
    for heading in ("Why hybrid", "The three phases of a run", "How to read the segments"):
        assert f"<h2>{heading}</h2>" in page.text
    assert "LSTM-only" in page.text


@pytest.fixture
def warehouse(monkeypatch):
    """An in-process emulator with a territory dimension and, by a call, ``MARKET_SEGMENT`` rows
    (and November's segment descriptions in ``SEGMENT_PROFILE``)."""
    import fakesnow
    import snowflake.connector

    from include.segmentation.local.emulator import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE DIM_TERRITORY (MARKET_KEY VARCHAR, MARKET_NAME VARCHAR, COUNTRY VARCHAR,"
            " TERRITORY_GROUP VARCHAR)"
        )
        cur.execute(
            "INSERT INTO DIM_TERRITORY VALUES ('A', 'Alpha', 'DE', 'Europe'),"
            " ('B', '<b>Beta</b>', 'US', 'North America'), ('C', 'Gamma', 'AU', 'Pacific')"
        )

        def write(rows):
            cur.execute(
                "CREATE TABLE IF NOT EXISTS MARKET_SEGMENT (MARKET_KEY VARCHAR, SEGMENT_MONTH DATE,"
                " SEGMENT_ID NUMBER(4, 0), MODEL_VERSION VARCHAR, ALGORITHM VARCHAR, RUN_ID VARCHAR)"
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS SEGMENT_PROFILE (SEGMENT_MONTH DATE, SEGMENT_ID NUMBER(4, 0),"
                " DESCRIPTION VARCHAR)"
            )
            cur.execute(
                "INSERT INTO SEGMENT_PROFILE VALUES ('2013-11-01', 1, 'Big <b>ones</b>'),"
                " ('2013-11-01', 2, 'Small ones'), ('2013-11-01', NULL, 'Noise')"
            )
            for key, month, segment in rows:
                cur.execute(
                    "INSERT INTO MARKET_SEGMENT VALUES (%(k)s, %(m)s, %(s)s, 'v_' || %(m)s, 'kmeans', 'r')",
                    {"k": key, "m": month, "s": segment},
                )

        yield write
        conn.close()


def test_markets_page_shows_each_markets_latest_segment(plugin, artifacts, warehouse, monkeypatch):
    client = _client(plugin)
    assert "No segments written to the warehouse yet" in client.get("/markets").text  # no result table
    warehouse(
        [
            ("A", "2013-11-01", 1),
            ("A", "2013-12-01", 2),
            ("B", "2013-11-01", 1),  # not segmented in December: its latest is November's
            ("C", "2013-12-01", None),  # unassigned
        ]
    )
    page = client.get("/markets")
    assert page.status_code == 200
    rows = re.findall(r'<tr data-market="([^"]+)">(.*?)</tr>', page.text, re.S)
    swatch = re.compile(r'<span class="swatch"[^>]*></span>')
    cells = {key: [swatch.sub("", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for key, row in rows}
    assert [key for key, _ in rows] == ["B", "A", "C"]  # by SegmentID, unassigned last
    assert cells["A"][4:6] == ["2", "2013-12"]
    assert cells["B"][1] == "&lt;b&gt;Beta&lt;/b&gt;"  # escaped
    assert cells["B"][4:7] == ["1", '<a href="./runs/2013-11">2013-11</a>', "Big &lt;b&gt;ones&lt;/b&gt;"]
    assert cells["C"][4] == "unassigned"
    assert "3 markets." in page.text

    found = client.get("/markets", params={"q": "alp"}).text
    assert re.findall(r'<tr data-market="([^"]+)">', found) == ["A"]
    assert "No market matches" in client.get("/markets", params={"q": "zzz"}).text
    # One segment's members; by name.
    listed = client.get("/markets", params={"segment": "unassigned"}).text
    assert re.findall(r'<tr data-market="([^"]+)">', listed) == ["C"]
    assert "1 market in segment unassigned" in listed
    by_name = client.get("/markets", params={"sort": "name"}).text
    assert re.findall(r'<tr data-market="([^"]+)">', by_name) == ["B", "A", "C"]  # '<b>Beta', Alpha, Gamma
    assert cells["A"][0] == '<a href="./market?key=A">A</a>'

    monkeypatch.setattr(plugin, "PAGE_SIZE", 2)
    first, second = client.get("/markets").text, client.get("/markets", params={"page": 2}).text
    assert re.findall(r'<tr data-market="([^"]+)">', first) == ["B", "A"]
    assert re.findall(r'<tr data-market="([^"]+)">', second) == ["C"]
    assert 'href="./markets?q=&amp;segment=&amp;sort=segment&amp;page=2"' in first
    past = client.get("/markets", params={"page": 3}).text
    assert "Page 3 is past the last page of these markets" in past
    assert "No segments written" not in past


def test_market_history_and_the_migration_matrix(plugin, artifacts, warehouse):
    client = _client(plugin)
    assert "No segments written to the warehouse yet" in client.get("/history").text
    warehouse(
        [
            ("A", "2013-11-01", 1),
            ("A", "2013-12-01", 2),
            ("B", "2013-11-01", 1),
            ("B", "2013-12-01", 1),
            ("C", "2013-12-01", None),
        ]
    )
    market = client.get("/market", params={"key": "A"})
    assert market.status_code == 200
    rows = re.findall(r'<tr data-month="([^"]+)" data-segment="([^"]+)"', market.text)
    assert rows == [("2013-11", "1"), ("2013-12", "2")]
    assert "(was 1)" in market.text
    assert "Big &lt;b&gt;ones&lt;/b&gt;" in market.text  # November's description of segment 1
    assert client.get("/market", params={"key": "ZZ"}).status_code == 404
    odd = client.get("/market", params={"key": "a/b%2F"})  # a key with "/" and "%": a query value, not a path
    assert odd.status_code == 404
    assert "No market a/b%2F in the warehouse" in odd.text
    assert '<a href="./markets">All markets</a>' in odd.text

    history = client.get("/history")
    assert history.status_code == 200
    assert f'<script src="./static/{plugin_plotly_file()}"></script>' in history.text
    matrix = history.text[history.text.index('<table id="migration-matrix">') :]
    header = re.findall(r'<th class="num" data-segment="([^"]+)">', matrix)
    assert header == ["1", "2", "unassigned"]
    counts = {
        row: [c or "0" for c in re.findall(r'<td class="num" data-to="[^"]+" [^>]*>(\d*)</td>', body)]
        for row, body in re.findall(r'<tr data-segment="([^"]+)">(.*?)</tr>', matrix, re.S)
    }
    # A: 1 -> 2, B: 1 -> 1, C: new in December (not segmented in November) -> unassigned.
    assert counts == {"1": ["1", "1", "0"], "not segmented": ["0", "0", "1"]}
    bars = _plot_traces(history.text, "sizes-plot")
    assert {t["name"]: dict(zip(t["x"], t["y"], strict=True)) for t in bars} == {
        "segment 1": {"2013-11": 2, "2013-12": 1},
        "segment 2": {"2013-12": 1},
        "unassigned": {"2013-12": 1},
    }
    assert "cache-control" in (js := client.get(f"/static/{plugin_plotly_file()}")).headers
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert js.text.startswith("/**")
    assert len(js.text) > 1_000_000
    assert client.get("/static/other.js").status_code == 404


def _plot_traces(page: str, div_id: str) -> list[dict]:
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    return json.JSONDecoder().raw_decode(page, match.end())[0]


def test_exports_are_the_months_rows_as_csv(plugin, artifacts, warehouse):
    import io

    import pandas as pd

    client = _client(plugin)
    warehouse([("A", "2013-12-01", 2), ("B", "2013-12-01", 1), ("C", "2013-12-01", None)])
    response = client.get("/export/2013-12/segments.csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="segments-2013-12.csv"'
    frame = pd.read_csv(io.StringIO(response.text), dtype=str, keep_default_na=False)
    assert frame.to_dict("records") == [
        {
            "month": "2013-12",
            "market_key": "B",
            "market_name": "<b>Beta</b>",
            "territory_group": "North America",
            "segment_id": "1",
        },
        {"month": "2013-12", "market_key": "A", "market_name": "Alpha", "territory_group": "Europe", "segment_id": "2"},
        {"month": "2013-12", "market_key": "C", "market_name": "Gamma", "territory_group": "Pacific", "segment_id": ""},
    ]
    assert client.get("/export/2014-01/segments.csv").status_code == 404
    assert client.get("/export/2013-12/everything.csv").status_code == 404


def test_errors_are_pages_for_a_browser_and_json_for_an_api_client(plugin, artifacts):
    client = _client(plugin)
    browser = {"Accept": "text/html,application/xhtml+xml"}
    for path in ("/markets?page=0", "/runs/2013-13", "/markets?segment=x", "/history?before=13"):
        page = client.get(path, headers=browser)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert '<p class="error" id="error-detail">' in page.text
    assert "Not a month (YYYY-MM): &#39;2013-13&#39;" in client.get("/runs/2013-13", headers=browser).text
    assert client.get("/markets?page=0").json()["detail"][0]["loc"] == ["query", "page"]  # an API client: JSON
    signed_out = _client(plugin, signed_in=False)
    page = signed_out.get("/markets", headers=browser)
    assert page.status_code == 401
    assert "This page needs an Airflow login" in page.text
    assert signed_out.get("/markets").json() == {"detail": "Not authenticated"}


def test_markets_page_reports_an_unreachable_warehouse(plugin, artifacts, monkeypatch):
    def fail(*_args, **_kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(plugin, "latest_segments", fail)
    page = _client(plugin).get("/markets")
    assert page.status_code == 503
    assert "The warehouse could not be read (ConnectionError)" in page.text


# ---------------------------------------------------------------------------------------------
# Real runs of one month (``steps.run_month`` on an in-process emulator): which report is published


@pytest.fixture
def run_december(emulated_warehouse, tmp_path, monkeypatch):
    """The synthetic warehouse (``ui_helpers.STAR``) in an in-process emulator and an empty artifact
    store, both what the plugin reads. Returns ``run(run_id, started_at=..., dry_run=..., n_clusters=...)``:
    a real run of 2013-12 (``ui_helpers.segment``), returning ``run_month``'s result."""
    from include.segmentation.local.demo_data import synthetic_star

    emulated_warehouse(synthetic_star(**STAR))
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("SEGMENTATION_ARTIFACTS", str(artifacts))
    monkeypatch.delenv("SEGMENTATION_CONFIG", raising=False)
    return functools.partial(segment, artifacts, MONTHS[-1])


REAL = "manual__2014-01-02T08:00:00+00:00"
DRY = "manual__2014-01-03T09:30:00+00:00"


def _headline(page: str) -> str:
    return re.search(r"<h1>(.*?)</h1>", page, re.S).group(1)


def plugin_plotly_file() -> str:
    import plotly

    return f"plotly-{plotly.__version__}.min.js"


def _assert_serves_the_report_of(client, path: str, result: dict) -> str:
    """``path`` serves the report ``run_month`` wrote (``result``), with the plugin's navigation bar."""
    from include.segmentation.adapters.storage import read_bytes

    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    stored = read_bytes(result["build_report"]["path"]).decode()
    # Served: plotly.js from the plugin's static route instead of inlined, the navigation in NAV_MARKER.
    served = external_plotly(stored, f"{'../' * (path.count('/') - 1)}static/{plugin_plotly_file()}")
    before, after = served.split(NAV_MARKER)
    assert page.text.startswith(before)
    assert page.text.endswith(after)
    assert '<nav class="seg-nav"' in page.text
    assert len(page.text) < len(stored) / 10  # 4.8 MB of plotly.js not sent with every report
    download = client.get(path, params={"download": 1})
    assert download.text == stored  # the self-contained file, for offline use
    assert download.headers["content-disposition"].startswith('attachment; filename="segments-2013-12-')
    return page.text


def _assert_published_is_the_real_run(plugin, real: dict, dry: dict) -> None:
    """/runs/2013-12 serves the real run's report; the runs page lists both, the dry run as one."""
    assert real["write_segments"] == {
        "rows_written": 12,
        "model_version": "lstm_hybrid_v2.0_20131231",
        "dry_run": False,
        "rerun": [],
    }
    assert dry["write_segments"]["dry_run"] is True
    assert dry["cluster_markets"]["n_clusters"] == 3
    assert real["cluster_markets"]["n_clusters"] != 3  # the dry run's is another segmentation
    client = _client(plugin)

    page = _assert_serves_the_report_of(client, "/runs/2013-12", real)
    assert _headline(page) == "Market segments, 2013-12"
    assert "dry run" not in _headline(page).lower()
    assert f"<dd>{REAL}</dd>" in page
    assert DRY not in page

    runs = client.get("/")
    assert runs.status_code == 200
    rows = ROW.findall(runs.text)
    assert [(month, key, status) for month, key, status, _ in rows] == [
        ("2013-12", run_key(REAL), "published"),
        ("2013-12", run_key(DRY), "dry-run"),
    ]
    published, dry_cells = (re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for *_, row in rows)
    assert published[:3] == [
        '<a href="./runs/2013-12">2013-12</a>',
        f"<code>{REAL}</code>",
        "2014-01-02 08:00:00+00:00",
    ]
    assert ">published</span>" in published[3]
    assert published[6] == str(real["cluster_markets"]["n_clusters"])
    assert published[7] == f"{real['cluster_markets']['silhouette_hybrid']:.3f}"
    assert dry_cells[:3] == ["2013-12", f"<code>{DRY}</code>", "2014-01-03 09:30:00+00:00"]
    assert ">dry run</span>" in dry_cells[3]
    assert dry_cells[4] == "dry_run=True, n_clusters=3, target_month=2013-12"  # defaults left out
    assert dry_cells[6] == "3"
    assert dry_cells[7] == f"{dry['cluster_markets']['silhouette_hybrid']:.3f}"
    assert f'<a href="./runs/2013-12/{run_key(DRY)}">open report</a>' in dry_cells[-2]

    own = _assert_serves_the_report_of(client, f"/runs/2013-12/{run_key(DRY)}", dry)
    assert _headline(own) == "Market segments, 2013-12 (dry run)"
    assert f"<dd>{DRY}</dd>" in own


def test_a_dry_run_after_the_real_run_leaves_its_report_published(plugin, run_december):
    real = run_december(REAL, started_at="2014-01-02T08:00:00+00:00")
    dry = run_december(DRY, started_at="2014-01-03T09:30:00+00:00", dry_run=True, n_clusters=3)
    _assert_published_is_the_real_run(plugin, real, dry)


def test_a_real_run_after_a_dry_run_is_published(plugin, run_december):
    # The runs' start times as in the other test; only the order they ran in differs.
    dry = run_december(DRY, started_at="2014-01-03T09:30:00+00:00", dry_run=True, n_clusters=3)
    client = _client(plugin)
    only_dry = client.get("/runs/2013-12")
    assert only_dry.status_code == 404
    assert "2013-12 has only dry runs" in only_dry.text
    assert f'<a href="../runs/2013-12/{run_key(DRY)}">{DRY}</a>' in only_dry.text
    assert [status for *_, status, _ in ROW.findall(client.get("/").text)] == ["dry-run"]

    real = run_december(REAL, started_at="2014-01-02T08:00:00+00:00")
    _assert_published_is_the_real_run(plugin, real, dry)


def test_a_second_real_run_supersedes_the_first(plugin, run_december):
    first = run_december("manual__first", started_at="2014-01-02T08:00:00+00:00")
    second = run_december("manual__second", started_at="2014-01-02T09:00:00+00:00", n_clusters=3)
    client = _client(plugin)
    page = _assert_serves_the_report_of(client, "/runs/2013-12", second)
    assert "<dd>manual__second</dd>" in page
    rows = ROW.findall(client.get("/").text)
    assert [(key, status) for _, key, status, _ in rows] == [
        (run_key("manual__second"), "published"),
        (run_key("manual__first"), "superseded"),
    ]
    _assert_serves_the_report_of(client, f"/runs/2013-12/{run_key('manual__first')}", first)


def test_a_bad_run_key_of_a_real_run_is_not_found(plugin, run_december):
    run_december(REAL, started_at="2014-01-02T08:00:00+00:00")
    client = _client(plugin)
    assert client.get(f"/runs/2013-12/{run_key(REAL)}").status_code == 200
    for path in (
        f"/runs/2013-11/{run_key(REAL)}",  # the run is December's
        f"/runs/2013-12/{run_key(REAL)}x",
        f"/runs/2013-12/{REAL}",  # the run id is not its folder's name
        "/runs/2013-12/models",
        "/runs/2013-12/%2E%2E",
    ):
        page = client.get(path)
        assert page.status_code == 404, path
        assert "<h1>No such run in" in page.text
        assert "Market segments, 2013-12" not in page.text  # no report served


# ---------------------------------------------------------------------------------------------
# Inside Airflow's api-server, with SimpleAuthManager's password login


@dataclass(frozen=True)
class AirflowWithRuns:
    """The api-server's port, and the ids of two real runs of the DAG in its metadata DB."""

    port: int
    failed: str  # 2015-06: after the data ends, fails before anything is written
    dry: str  # 2013-12 as a dry run: a report, nothing written


@pytest.fixture(scope="module")
def airflow_ui(segmented_months, tmp_path_factory):
    """Airflow's api-server over the segmented months, plus two real DAG runs (``airflow dags test``) in
    its metadata DB: one failed, one dry run."""
    home = tmp_path_factory.mktemp("airflow-home")
    config = home / "segmentation.json"
    config.write_text(json.dumps(CONFIG))
    env = {
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": segmented_months.conn_json,
        "SEGMENTATION_ARTIFACTS": str(segmented_months.artifacts),
        "SEGMENTATION_CONFIG": str(config),
    }
    with api_server(home, env) as port:
        failed = airflow_cli(home, env, "dags", "test", DAG_ID, "2015-06-01")
        assert "state=failed" in failed.stdout + failed.stderr, (failed.stdout + failed.stderr)[-3000:]
        dry = airflow_cli(home, env, "dags", "test", DAG_ID, "2013-12-01", "-c", json.dumps({"dry_run": True}))
        assert "state=success" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
        _, body = get(port, f"/api/v2/dags/{DAG_ID}/dagRuns", token=login_token(port, "admin"))
        by_state = {run["state"]: run["dag_run_id"] for run in json.loads(body)["dag_runs"]}
        yield AirflowWithRuns(port, by_state["failed"], by_state["success"])


@pytest.mark.integration
def test_api_server_pages_need_an_airflow_login(airflow_ui):
    port = airflow_ui.port
    for page in PAGES:
        status, body = get(port, f"/segments{page}")
        assert status == 401, (page, body[:200])
        assert json.loads(body) == {"detail": "Not authenticated"}  # an API client gets JSON
        assert get(port, f"/segments{page}", token="not-a-jwt")[0] in (401, 403)
    token = login_token(port, "viewer")
    for page in PAGES:
        status, body = get(port, f"/segments{page}", token=token)
        assert status == 200, (page, body[:500])
        status, _ = get(port, f"/segments{page}", cookie=token)  # as the UI's iframe sends it
        assert status == 200, page
    status, body = get(port, "/segments/markets", token=token)
    assert len(re.findall(r'<tr data-market="', body)) == 12  # every synthetic market, from the warehouse
    assert '<a href="./runs/2013-12">2013-12</a>' in body  # the month's published report


@pytest.mark.integration
def test_runs_page_and_airflow_link_to_each_other(airflow_ui):
    """The Runs page lists the failed and the dry Airflow run with links into Airflow; each task's
    "Segment report" extra link leads to the run's report (or says why there is none)."""
    port, token = airflow_ui.port, login_token(airflow_ui.port, "viewer")
    _, body = get(port, "/segments/", token=token)
    rows = ROW.findall(body)
    assert [(m, s) for m, _k, s, _ in rows] == [
        ("2015-06", "failed"),
        ("2013-12", "published"),
        ("2013-12", "dry-run"),
        ("2013-11", "published"),
    ]
    failed = dict(zip(("month", "key", "status", "cells"), rows[0], strict=True))["cells"]
    run = quote(airflow_ui.failed, safe="")
    assert f'<a href="./../dags/{DAG_ID}/runs/{run}" class="airflow">failed</a>' in failed
    assert re.search(rf'<a href="./../dags/{DAG_ID}/runs/{re.escape(run)}/tasks/[a-z_]+" class="airflow">log: ', failed)
    assert (
        f'<a href="./../dags/{DAG_ID}/runs/{quote(airflow_ui.dry, safe="")}" class="airflow">success</a>' in rows[2][3]
    )

    def report_link(run_id: str) -> str:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/build_report/links"
        status, body = get(port, path, token=token)
        assert status == 200, body
        return json.loads(body)["extra_links"]["Segment report"]

    link = report_link(airflow_ui.dry)
    assert link == f"/segments/by-run?run_id={quote(airflow_ui.dry, safe='')}"
    status, page = get(port, link, token=token)  # redirected to the run's own report
    assert status == 200
    assert _headline(page) == "Market segments, 2013-12 (dry run)"
    assert f"<dd>{airflow_ui.dry}</dd>" in page
    status, page = get(port, report_link(airflow_ui.failed), token=token)
    assert status == 404
    assert "No report for this run" in page
    assert "(Airflow state: failed)" in page


def _screenshots(tmp_path) -> Path:
    """Where screenshots go: ``$TEST_OUTPUT_DIR`` when set (CI keeps it as artifacts), else the test's tmp_path."""
    out = Path(os.environ.get("TEST_OUTPUT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _sign_in(page, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(USERS["admin"][1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Segments")).to_be_visible(timeout=30_000)


@pytest.mark.integration
def test_market_segments_in_the_airflow_ui(airflow_ui, chromium, tmp_path):
    """Log in on Airflow's page, open "Segments" in the navigation: the runs (a failed and a dry run among
    them), a report and its PCA plot, the history chart and migration matrix, a market's history, a
    CSV download, and from a run back into Airflow."""
    from playwright.sync_api import expect, sync_playwright

    out = _screenshots(tmp_path)
    base = f"http://127.0.0.1:{airflow_ui.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            _sign_in(page, base)
            page.get_by_role("link", name="Segments").click()
            expect(page).to_have_url(re.compile(r"/plugin/market-segments"))
            frame = page.frame_locator("iframe")
            runs = frame.locator("table#runs tbody tr")
            expect(runs).to_have_count(4, timeout=30_000)
            expect(runs.first).to_have_attribute("data-status", "failed")
            expect(frame.locator('table#runs tr[data-status="dry-run"]')).to_have_count(1)
            page.screenshot(path=out / "market-segments-runs.png", full_page=True)

            frame.get_by_role("link", name="2013-12").first.click()
            expect(frame.locator("h1")).to_have_text("Market segments, 2013-12", timeout=30_000)
            plot = frame.locator("#pca-plot.js-plotly-plot")
            expect(plot).to_be_visible(timeout=30_000)
            expect(plot.locator(".scatterlayer .trace .point").first).to_be_visible()
            assert plot.locator(".scatterlayer .trace .point").count() == 12  # one dot per market
            expect(frame.locator("#profile-table tbody tr").first).to_be_visible()
            page.screenshot(path=out / "market-segments-report.png", full_page=True)

            frame.get_by_role("link", name="History").click()
            bars = frame.locator("#sizes-plot.js-plotly-plot")
            expect(bars).to_be_visible(timeout=30_000)
            assert bars.locator(".barlayer .point").count() >= 2  # segments x two months
            expect(frame.locator("#migration-matrix tbody tr").first).to_be_visible()
            page.screenshot(path=out / "market-segments-history.png", full_page=True)
            with page.expect_download() as download:
                frame.get_by_role("link", name="segments", exact=True).click()
            csv = Path(download.value.path()).read_text()
            assert csv.splitlines()[0] == "month,market_key,market_name,territory_group,segment_id"
            assert len(csv.splitlines()) == 13  # the header and the 12 markets of 2013-12
            assert all(line.startswith("2013-12,") for line in csv.splitlines()[1:])

            frame.get_by_role("link", name="Latest segment per market").click()
            expect(frame.locator("#latest-segments tbody tr")).to_have_count(12, timeout=30_000)
            first_market = frame.locator("#latest-segments tbody tr").first.get_attribute("data-market")
            frame.get_by_role("link", name=first_market, exact=True).click()
            expect(frame.locator("#market-history tbody tr")).to_have_count(2, timeout=30_000)
            page.screenshot(path=out / "market-segments-market.png", full_page=True)

            # From a run on the Runs page into Airflow: the failed run's own page.
            frame.get_by_role("link", name="Runs").click()
            frame.locator('table#runs tr[data-status="failed"] td.airflow a').first.click()
            expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/"), timeout=30_000)
            page.screenshot(path=out / "airflow-failed-run.png")
        finally:
            browser.close()
    print(f"screenshots in {out}")
    assert (out / "market-segments-report.png").stat().st_size > 10_000


@pytest.mark.integration
def test_the_pages_follow_airflows_dark_theme(airflow_ui, chromium, tmp_path):
    """With the system in dark mode Airflow's UI is dark, and so are the plugin's pages and reports."""
    from playwright.sync_api import expect, sync_playwright

    out = _screenshots(tmp_path)
    base = f"http://127.0.0.1:{airflow_ui.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
            _sign_in(page, base)
            expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))  # Airflow's own theme
            page.get_by_role("link", name="Segments").click()
            frame = page.frame_locator("iframe")
            expect(frame.locator("table#runs tbody tr").first).to_be_visible(timeout=30_000)
            expect(frame.locator("html")).to_have_attribute("data-theme", "dark")
            background = frame.locator("body").evaluate("b => getComputedStyle(b).backgroundColor")
            assert background == "rgb(17, 19, 24)", background
            frame.get_by_role("link", name="2013-12").first.click()
            expect(frame.locator("#pca-plot.js-plotly-plot")).to_be_visible(timeout=30_000)
            expect(frame.locator("html")).to_have_attribute("data-theme", "dark")
            paper = frame.locator("#pca-plot").evaluate("el => el.layout.paper_bgcolor")
            assert paper == "rgba(0,0,0,0)"  # the plot drawn on the dark page, not on white
            page.screenshot(path=out / "market-segments-report-dark.png", full_page=True)
        finally:
            browser.close()
