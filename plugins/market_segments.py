"""Airflow UI plugin: a "Market segments" entry in the navigation, served by Airflow's own api-server.

Pages (under ``/segments/``, shown in an iframe inside the Airflow UI):

- ``/segments/``: the runs, one per run folder in the artifact store (``<YYYY-MM>/<run_key>/``,
  ``adapters/catalog.py``), newest month first, each marked published, superseded or dry run;
- ``/segments/runs/<YYYY-MM>``: the report of the month's *published* run, the one whose rows the
  warehouse's ``MARKET_SEGMENT`` holds (``sql/published_runs.sql``);
- ``/segments/runs/<YYYY-MM>/<run_key>``: the report of any one run (dry runs, superseded runs);
- ``/segments/markets``: each market's latest SegmentID, from the warehouse
  (``sql/latest_market_segments.sql``), with its segment's description;
- ``/segments/about``: how the hybrid segmentation works and how to read it.

Every page needs an Airflow login: the app depends on Airflow's ``get_user`` (the JWT in the
``Authorization`` header or the UI's ``_token`` cookie, which the iframe sends) and on read access to
the ``market_segmentation`` DAG's runs; an anonymous request gets 401.

Airflow imports every file in ``plugins/`` in each of its processes (scheduler, workers' task
processes...), so this module imports nothing beyond the plugin base class at load time: the
FastAPI app, the project's code, pandas and the warehouse connector are imported on the first
request to the api-server (``_LazyApp``).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

#: Where the app is mounted in Airflow's api-server (must not start with /api, /ui, /auth ...).
URL_PREFIX = "/segments"
#: The DAG whose results the pages show: a user must be allowed to read its runs.
DAG_ID = "market_segmentation"
#: Markets per page on the latest-segments page.
PAGE_SIZE = 200
TEMPLATES = Path(__file__).with_name("market_segments_templates")
_MONTH = re.compile(r"^(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])$")
#: A run folder's name (``catalog.run_key``): safe characters only, and never "." or "..".
_RUN_KEY = re.compile(r"(?!\.+\Z)[A-Za-z0-9._-]{1,128}")
#: ``metrics.json`` fields a run's entry carries as they are, and those that must be finite numbers.
_METRIC_VALUES = ("algorithm", "n_clusters", "previous_month")
_METRIC_NUMBERS = ("silhouette_hybrid", "silhouette_lstm", "silhouette_static", "stability", "noise_fraction")
_NO_STORE = {"Cache-Control": "no-store"}

log = logging.getLogger(__name__)


class _LazyApp:
    """An ASGI app that builds the real one (``create_app``) on its first request.

    Airflow mounts it with Starlette's ``Mount``, which forwards only HTTP and websocket scopes, so
    no lifespan event is lost by building late.
    """

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# The artifact store: one folder per run


def _month_dirs(root: Any) -> list[Any]:
    """The month folders (``YYYY-MM``) under the artifact root, newest first; [] when it does not exist."""
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if _MONTH.fullmatch(p.name) and p.is_dir()), key=lambda p: p.name)[::-1]


def _read_json_or_none(path: Any, what: str) -> Any:
    """``path``'s JSON, or None (logged) when it is missing or unreadable: a bad folder never breaks a page."""
    from include.segmentation.adapters.storage import read_json

    try:
        return read_json(path)
    except Exception as err:  # ArtifactError, or whatever the object store raises
        log.warning("cannot read %s (%s): %s", path, what, err)
        return None


def _metric_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's figures from ``metrics.json``: ``None`` when absent or not a finite number."""
    fields = {key: metrics.get(key) for key in _METRIC_VALUES}
    for key in _METRIC_NUMBERS:
        value = metrics.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        fields[key] = float(value) if ok else None
    return fields


def read_run(folder: Any) -> dict[str, Any] | None:
    """The entry of one run folder (``<YYYY-MM>/<run_key>``), ``published`` unknown (None).

    From ``run.json``: ``month`` (the month folder's name), ``run_id``, ``run_key`` (the folder's
    name), ``dry_run``, ``started_at`` (ISO UTC, or None), ``params`` (dict); ``has_report``; and
    ``_metric_fields`` of ``metrics.json`` (all None before the run wrote it). Returns None, logged,
    when the folder has no readable ``run.json`` with a run id.
    """
    from include.segmentation.adapters.catalog import RunArtifacts

    info = _read_json_or_none(folder / RunArtifacts.run_file.name, "run folder skipped")
    if not isinstance(info, dict) or not isinstance(info.get("run_id"), str) or not info["run_id"]:
        if info is not None:
            log.warning("skipping run folder %s: its run.json names no run id", folder)
        return None
    metrics_path = folder / RunArtifacts.metrics.name
    metrics = _read_json_or_none(metrics_path, "the run's figures show as n/a") if metrics_path.exists() else None
    params, started = info.get("params"), info.get("started_at")
    return {
        "month": folder.parent.name,
        "run_id": info["run_id"],
        "run_key": folder.name,
        "dry_run": bool(info.get("dry_run", False)),
        "started_at": started if isinstance(started, str) else None,
        "params": params if isinstance(params, dict) else {},
        "published": None,
        "has_report": (folder / RunArtifacts.report.name).exists(),
        **_metric_fields(metrics if isinstance(metrics, dict) else {}),
    }


def _scan_runs(artifacts_dir: str, month: str | None = None) -> list[dict[str, Any]]:
    """``read_run`` of every run folder (all months, or only ``month``), month folders newest first."""
    from include.segmentation.adapters.storage import as_path

    root = as_path(artifacts_dir)
    months = [root / month] if month else _month_dirs(root)
    runs = []
    for month_dir in months:
        if not month_dir.is_dir():
            continue
        for folder in sorted(month_dir.iterdir(), key=lambda p: p.name):
            if folder.is_dir() and (run := read_run(folder)) is not None:
                runs.append(run)
    return runs


def _status(run: dict[str, Any], published: dict[str, str] | None, published_started: dict[str, str]) -> str:
    """The run's label: ``dry-run``; ``published``; ``superseded`` (another run of the month is published
    and started after this one); ``not-published`` (no run of the month is, or the published one started
    before this one: this run failed or has not written yet); ``unknown`` (``published`` None: the
    warehouse could not be read). ``published_started``: the published run's ``started_at`` per month."""
    if run["dry_run"]:
        return "dry-run"
    if published is None:
        return "unknown"
    if published.get(run["month"]) == run["run_id"]:
        return "published"
    if run["month"] not in published:
        return "not-published"
    started, published_at = run["started_at"], published_started.get(run["month"])
    return "not-published" if started and published_at and started > published_at else "superseded"


# ---------------------------------------------------------------------------------------------
# The warehouse: which run is published, each market's latest segment


def _table_exists(conn: Any, w: Any, table: str) -> bool:
    from include.segmentation.adapters.warehouse import query_frame, render_sql

    exists = query_frame(conn, render_sql("table_exists.sql", w), {"table_name": table})
    return int(exists["n"].iloc[0]) > 0


def published_runs(config: Any) -> dict[str, str]:
    """Each month's published run: {YYYY-MM: RUN_ID of its rows in ``MARKET_SEGMENT``}.

    {} before the first write (no result table). Raises the connector's errors when the warehouse
    cannot be reached.
    """
    import pandas as pd

    from include.segmentation.adapters.warehouse import connect, query_frame, render_sql

    w = config.warehouse
    with connect(w) as conn:
        if not _table_exists(conn, w, w.market_segment_table):
            return {}
        frame = query_frame(conn, render_sql("published_runs.sql", w))
    months = pd.to_datetime(frame["segment_month"]).dt.strftime("%Y-%m")
    return dict(zip(months, frame["run_id"].astype(str), strict=True))


def _published_or_error(config: Any) -> tuple[dict[str, str] | None, str | None]:
    """``published_runs``, or (None, a message for the page) when the warehouse cannot be read (logged)."""
    try:
        return published_runs(config), None
    except Exception as err:
        log.exception("cannot read the published runs from the warehouse")
        return None, (
            f"The warehouse could not be read ({type(err).__name__}), so which run of a month is published "
            "is unknown; see the api-server log."
        )


def list_runs(config: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Every run in the artifact store, and the warehouse error (None when it was read).

    One entry per run folder (``read_run``), newest month first; within a month the published run
    first, then by ``started_at`` descending (unknown last). ``published`` is whether the run's id is
    the month's published run (``published_runs``), None when the warehouse could not be read;
    ``status`` is ``_status``'s label. Folders without a readable ``run.json`` are skipped (logged).
    """
    runs = _scan_runs(config.artifacts_dir)
    published, error = _published_or_error(config)
    for run in runs:
        run["published"] = None if published is None else published.get(run["month"]) == run["run_id"]
    published_started = {run["month"]: run["started_at"] for run in runs if run["published"]}
    for run in runs:
        run["status"] = _status(run, published, published_started)
    # Stable sorts, last key first: start time, then published first, then month.
    runs.sort(key=lambda r: r["started_at"] or "", reverse=True)
    runs.sort(key=lambda r: r["published"] is not True)
    runs.sort(key=lambda r: r["month"], reverse=True)
    return runs, error


def latest_segments(config: Any, search: str, page: int) -> tuple[list[dict[str, Any]], int]:
    """Each market's latest SegmentID from the warehouse, filtered and paged: (rows, matching markets).

    ``search`` matches the market key or name (case-insensitive substring; ``%`` and ``_`` are
    wildcards); ``page`` starts at 1, ``PAGE_SIZE`` rows each. Rows have ``market_key``,
    ``market_name``, ``country``, ``territory_group``, ``month`` (YYYY-MM), ``segment`` (label),
    ``model_version``, ``algorithm``, ``description`` (the segment's, from the profile table) and
    ``run_id`` (the month's published run). Returns ([], 0) before the first write (no result table).
    Raises the connector's errors when the warehouse cannot be reached.
    """
    import pandas as pd

    from include.segmentation.adapters.warehouse import connect, query_frame, render_sql
    from include.segmentation.report import segment_label

    w = config.warehouse
    with connect(w) as conn:
        if not _table_exists(conn, w, w.market_segment_table):
            return [], 0
        frame = query_frame(
            conn,
            render_sql("latest_market_segments.sql", w),
            {"pattern": f"%{search}%", "limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE},
        )
    if frame.empty:
        return [], 0
    frame["month"] = pd.to_datetime(frame["segment_month"]).dt.strftime("%Y-%m")
    frame["segment"] = [segment_label(v) for v in pd.to_numeric(frame["segment_id"])]
    columns = ["market_key", "market_name", "country", "territory_group", "month", "segment", "model_version"]
    rows = frame[[*columns, "algorithm", "description", "run_id"]]
    return rows.astype(object).where(rows.notna(), "").to_dict("records"), int(frame["n_total"].iloc[0])


def _published_reports(config: Any, rows: list[dict[str, Any]]) -> set[str]:
    """The months of ``rows`` whose published run (the rows' ``run_id``) has a report in the artifact store."""
    from include.segmentation.adapters.catalog import RunArtifacts, run_key
    from include.segmentation.adapters.storage import as_path

    root = as_path(config.artifacts_dir)
    pairs = {(row["month"], str(row["run_id"])) for row in rows if str(row["run_id"]).strip()}
    return {month for month, run_id in pairs if (root / month / run_key(run_id) / RunArtifacts.report.name).exists()}


# ---------------------------------------------------------------------------------------------
# The pages


class _Pages:
    """The plugin's templates, rendered; every response says ``Cache-Control: no-store``."""

    def __init__(self) -> None:
        import jinja2

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
        )

    def page(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        from fastapi.responses import HTMLResponse

        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=_NO_STORE)

    def missing(self, status_code: int, root: str, month: str, reason: str, **context: Any) -> HTMLResponse:
        """``missing.html``: no report to show, and why (``reason``: ``unpublished``, ``unknown``,
        ``no-report``, ``no-run``)."""
        context = {"error": None, "run_id": None, "run_key": None, "runs": [], "only_dry_runs": False} | context
        return self.page("missing.html", status_code, root=root, tab="runs", month=month, reason=reason, **context)

    def report(self, folder: Any, **nav: Any) -> HTMLResponse | None:
        """The run's report in ``folder``, with the navigation bar (``_nav.html`` with ``nav``) in place of
        ``NAV_MARKER``; None when the folder has no report."""
        from fastapi.responses import HTMLResponse

        from include.segmentation.adapters.catalog import RunArtifacts
        from include.segmentation.report import NAV_MARKER

        try:
            html = (folder / RunArtifacts.report.name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        bar = self.env.get_template("_nav.html").render(tab="report", **nav)
        return HTMLResponse(html.replace(NAV_MARKER, bar, 1), headers=_NO_STORE)


def _runs_view(pages: _Pages) -> HTMLResponse:
    from include.segmentation.config import load_config

    runs, error = list_runs(load_config())
    return pages.page("runs.html", root="./", tab="runs", runs=runs, error=error)


def _month_report_view(pages: _Pages, month: str) -> HTMLResponse:
    """The month's published run's report; else a 404 page listing the month's runs (503 when the
    warehouse cannot be read)."""
    from include.segmentation.adapters.catalog import run_key
    from include.segmentation.adapters.storage import as_path
    from include.segmentation.config import load_config

    config = load_config()
    published, error = _published_or_error(config)
    run_id = (published or {}).get(month)
    if run_id is None:
        runs = sorted(_scan_runs(config.artifacts_dir, month), key=lambda r: r["started_at"] or "", reverse=True)
        for run in runs:
            run["status"] = _status(run, published, {})
        only_dry_runs = bool(runs) and all(run["dry_run"] for run in runs)
        reason = "unknown" if error else "unpublished"
        return pages.missing(
            503 if error else 404, "../", month, reason, error=error, runs=runs, only_dry_runs=only_dry_runs
        )
    folder = as_path(config.artifacts_dir) / month / run_key(run_id)
    nav = {"root": "../", "month": month, "report_path": f"runs/{month}", "report_label": f"Report {month}"}
    return pages.report(folder, **nav) or pages.missing(404, "../", month, "no-report", run_id=run_id)


def _run_report_view(pages: _Pages, month: str, key: str) -> HTMLResponse:
    """The report of the run in ``<month>/<key>``; a 404 page for a bad key, no such run or no report."""
    from include.segmentation.adapters.storage import as_path
    from include.segmentation.config import load_config

    folder = as_path(load_config().artifacts_dir) / month / key if _RUN_KEY.fullmatch(key) else None
    run = read_run(folder) if folder is not None and folder.is_dir() else None
    if run is None:
        return pages.missing(404, "../../", month, "no-run", run_key=key)
    label = f"Report {month}, run {run['run_id']}" + (" (dry run)" if run["dry_run"] else "")
    nav = {"root": "../../", "month": month, "report_path": f"runs/{month}/{key}", "report_label": label}
    return pages.report(folder, **nav) or pages.missing(404, "../../", month, "no-report", run_id=run["run_id"])


def _markets_view(pages: _Pages, q: str, page_number: int) -> HTMLResponse:
    from include.segmentation.config import load_config

    config = load_config()
    context = {"root": "./", "tab": "markets", "q": q, "page": page_number, "page_size": PAGE_SIZE}
    try:
        rows, total = latest_segments(config, q.strip(), page_number)
    except Exception as err:
        log.exception("cannot read the latest segments from the warehouse")
        error = f"The warehouse could not be read ({type(err).__name__}); see the api-server log."
        return pages.page("markets.html", 503, error=error, rows=[], total=0, reports=set(), **context)
    reports = _published_reports(config, rows)
    return pages.page("markets.html", error=None, rows=rows, total=total, reports=reports, **context)


def create_app() -> FastAPI:
    """The plugin's FastAPI app. Every route depends on Airflow's user and on read access to the DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse

    can_read_runs = requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID)
    app = FastAPI(
        title="Market segments",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(get_user), Depends(can_read_runs)],
    )
    # Tests override this dependency (app.dependency_overrides) to render pages without an auth manager.
    app.state.can_read_runs = can_read_runs
    pages = _Pages()

    def valid_month(month: str) -> str:
        if not _MONTH.fullmatch(month):
            raise HTTPException(404, f"not a month (YYYY-MM): {month!r}")
        return month

    @app.get("/", response_class=HTMLResponse)
    def runs_page() -> HTMLResponse:
        return _runs_view(pages)

    @app.get("/runs/{month}", response_class=HTMLResponse)
    def month_report_page(month: str) -> HTMLResponse:
        return _month_report_view(pages, valid_month(month))

    @app.get("/runs/{month}/{run_key}", response_class=HTMLResponse)
    def run_report_page(month: str, run_key: str) -> HTMLResponse:
        return _run_report_view(pages, valid_month(month), run_key)

    @app.get("/markets", response_class=HTMLResponse)
    def markets_page(
        q: str = Query("", max_length=100, description="market key or name contains"),
        page_number: int = Query(1, alias="page", ge=1, le=100_000),
    ) -> HTMLResponse:
        return _markets_view(pages, q, page_number)

    @app.get("/about", response_class=HTMLResponse)
    def about_page() -> HTMLResponse:
        return pages.page("about.html", root="./", tab="about")

    return app


class MarketSegmentsPlugin(AirflowPlugin):
    """Adds "Market segments" to the Airflow UI's navigation (an iframe on ``/segments/``)."""

    name = "market_segments"
    fastapi_apps = [{"name": "market_segments", "app": _LazyApp(), "url_prefix": URL_PREFIX}]
    external_views = [
        {
            "name": "Market segments",
            # The trailing slash matters: without it the iframe loads Airflow's own 404 page.
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "Market segments",
            # Without url_route the navigation entry opens nothing; the UI shows it at /plugin/market-segments.
            "url_route": "market-segments",
            "nav_top_level": True,
        }
    ]
