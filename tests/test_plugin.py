"""The "Market segments" Airflow UI plugin: its pages in-process (FastAPI's TestClient), then inside
Airflow's own api-server with a password login, and in headless Chromium through Airflow's UI."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from include.segmentation.report import NAV_MARKER
from tests.conftest import ROOT
from tests.ui_helpers import USERS, api_server, get, login_token

PAGES = ("/", "/runs/2013-12", "/markets", "/about")


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
    assert view["name"] == "Market segments"
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
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_page_refuses_anonymous_requests(plugin):
    client = _client(plugin, signed_in=False)
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 401, page
        assert "segment" not in response.text.lower()


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """An artifact store with 2013-11 (report), 2013-12 (metrics, no report) and a non-month folder."""
    nov, dec = tmp_path / "2013-11", tmp_path / "2013-12"
    nov.mkdir()
    dec.mkdir()
    (tmp_path / "notes").mkdir()
    metrics = {"algorithm": "kmeans", "n_clusters": 3, "silhouette_hybrid": 0.41, "silhouette_lstm": 0.2}
    (nov / "metrics.json").write_text(json.dumps(metrics | {"silhouette_static": float("nan")}))
    (dec / "metrics.json").write_text(json.dumps(metrics | {"n_clusters": 4, "stability": 0.75}))
    (nov / "report.html").write_text(f"<html><body>{NAV_MARKER}<main>the November report</main></body></html>")
    monkeypatch.setenv("SEGMENTATION_ARTIFACTS", str(tmp_path))
    return tmp_path


def test_runs_page_lists_months_newest_first(plugin, artifacts):
    page = _client(plugin).get("/")
    assert page.status_code == 200
    months = re.findall(r'<tr data-month="([^"]+)">', page.text)
    assert months == ["2013-12", "2013-11"]  # "notes" is not a month
    assert '<a href="./runs/2013-11">open report</a>' in page.text
    assert "no report (run incomplete)" in page.text  # December has metrics but no report
    assert "0.410" in page.text
    assert "75%" in page.text
    assert "n/a" in page.text  # NaN silhouette


def test_report_page_serves_the_report_with_navigation(plugin, artifacts):
    client = _client(plugin)
    page = client.get("/runs/2013-11")
    assert page.status_code == 200
    assert "the November report" in page.text
    assert NAV_MARKER not in page.text
    assert '<a href="../runs/2013-11" class="active">Report 2013-11</a>' in page.text
    assert '<a href="../about"' in page.text
    assert client.get("/runs/2013-12").status_code == 404  # run without a report
    assert client.get("/runs/2013-13").status_code == 404
    assert client.get("/runs/..%2F..%2Fetc").status_code == 404


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
    cells = {key: re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for key, row in rows}
    assert [key for key, _ in rows] == ["B", "A", "C"]  # by SegmentID, unassigned last
    assert cells["A"][4:6] == ["2", "2013-12"]
    assert cells["B"][1] == "&lt;b&gt;Beta&lt;/b&gt;"  # escaped
    assert cells["B"][4:7] == ["1", '<a href="./runs/2013-11">2013-11</a>', "Big &lt;b&gt;ones&lt;/b&gt;"]
    assert cells["C"][4] == "unassigned"
    assert "3 markets." in page.text

    found = client.get("/markets", params={"q": "alp"}).text
    assert re.findall(r'<tr data-market="([^"]+)">', found) == ["A"]
    assert "No market matches" in client.get("/markets", params={"q": "zzz"}).text

    monkeypatch.setattr(plugin, "PAGE_SIZE", 2)
    first, second = client.get("/markets").text, client.get("/markets", params={"page": 2}).text
    assert re.findall(r'<tr data-market="([^"]+)">', first) == ["B", "A"]
    assert re.findall(r'<tr data-market="([^"]+)">', second) == ["C"]
    assert 'href="./markets?q=&amp;page=2"' in first


def test_markets_page_reports_an_unreachable_warehouse(plugin, artifacts, monkeypatch):
    def fail(*_args):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(plugin, "latest_segments", fail)
    page = _client(plugin).get("/markets")
    assert page.status_code == 503
    assert "The warehouse could not be read (ConnectionError)" in page.text


# ---------------------------------------------------------------------------------------------
# Inside Airflow's api-server, with SimpleAuthManager's password login


@pytest.fixture(scope="module")
def airflow_port(segmented_months, tmp_path_factory):
    env = {
        "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": segmented_months.conn_json,
        "SEGMENTATION_ARTIFACTS": str(segmented_months.artifacts),
    }
    with api_server(tmp_path_factory.mktemp("airflow-home"), env) as port:
        yield port


@pytest.mark.integration
def test_api_server_pages_need_an_airflow_login(airflow_port):
    for page in PAGES:
        status, body = get(airflow_port, f"/segments{page}")
        assert status == 401, (page, body[:200])
        assert json.loads(body) == {"detail": "Not authenticated"}
        assert get(airflow_port, f"/segments{page}", token="not-a-jwt")[0] in (401, 403)
    token = login_token(airflow_port, "viewer")
    for page in PAGES:
        status, body = get(airflow_port, f"/segments{page}", token=token)
        assert status == 200, (page, body[:500])
        status, _ = get(airflow_port, f"/segments{page}", cookie=token)  # as the UI's iframe sends it
        assert status == 200, page
    status, body = get(airflow_port, "/segments/markets", token=token)
    assert len(re.findall(r'<tr data-market="', body)) == 12  # every synthetic market, from the warehouse


@pytest.mark.integration
def test_market_segments_in_the_airflow_ui(airflow_port, chromium, tmp_path):
    """Log in on Airflow's page, open "Market segments" in the navigation, a run's report and its PCA plot.

    Screenshots go to the test's tmp_path, or to ``$TEST_OUTPUT_DIR`` when set (e.g. CI artifacts).
    """
    from playwright.sync_api import expect, sync_playwright

    out = Path(os.environ.get("TEST_OUTPUT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)

    base = f"http://127.0.0.1:{airflow_port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(USERS["admin"][1])
            page.get_by_role("button", name="Sign in").click()
            entry = page.get_by_role("link", name="Market segments")
            expect(entry).to_be_visible(timeout=30_000)
            entry.click()
            expect(page).to_have_url(re.compile(r"/plugin/market-segments"))
            frame = page.frame_locator("iframe")
            runs = frame.locator("table#runs tbody tr")
            expect(runs).to_have_count(2, timeout=30_000)
            expect(runs.first).to_have_attribute("data-month", "2013-12")
            page.screenshot(path=out / "market-segments-runs.png")

            frame.get_by_role("link", name="2013-12").first.click()
            expect(frame.locator("h1")).to_have_text("Market segments, 2013-12", timeout=30_000)
            plot = frame.locator("#pca-plot.js-plotly-plot")
            expect(plot).to_be_visible(timeout=30_000)
            expect(plot.locator(".scatterlayer .trace .point").first).to_be_visible()
            assert plot.locator(".scatterlayer .trace .point").count() == 12  # one dot per market
            expect(frame.locator("#profile-table tbody tr").first).to_be_visible()
            page.screenshot(path=out / "market-segments-report.png", full_page=True)

            frame.get_by_role("link", name="Latest segment per market").click()
            expect(frame.locator("#latest-segments tbody tr")).to_have_count(12, timeout=30_000)
            frame.get_by_role("link", name="About").click()
            expect(frame.get_by_role("heading", name="Why hybrid")).to_be_visible()
        finally:
            browser.close()
    print(f"screenshots in {out}")
    assert (out / "market-segments-report.png").stat().st_size > 10_000
