"""Airflow UI plugin: a "Market segments" entry in the navigation, served by Airflow's own api-server.

Pages (under ``/segments/``, shown in an iframe inside the Airflow UI):

- ``/segments/``: the runs, one per month with a folder in the artifact store, each opening its
  ``report.html`` (``include/segmentation/report.py``);
- ``/segments/runs/<YYYY-MM>``: that month's report;
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

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Where the app is mounted in Airflow's api-server (must not start with /api, /ui, /auth ...).
URL_PREFIX = "/segments"
#: The DAG whose results the pages show: a user must be allowed to read its runs.
DAG_ID = "market_segmentation"
#: Markets per page on the latest-segments page.
PAGE_SIZE = 200
TEMPLATES = Path(__file__).with_name("market_segments_templates")
_MONTH = re.compile(r"^(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])$")


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


def _month_dirs(root: Any) -> list[Any]:
    """The month folders (``YYYY-MM``) under the artifact root, newest first; [] when it does not exist."""
    if not root.exists():
        return []
    return sorted((p for p in root.iterdir() if _MONTH.fullmatch(p.name) and p.is_dir()), key=lambda p: p.name)[::-1]


def list_runs(artifacts_dir: str) -> list[dict[str, Any]]:
    """One entry per month folder in the artifact store, newest first.

    Each has ``month``, ``has_report`` and, from ``metrics.json`` when present, ``algorithm``,
    ``n_clusters``, the three silhouettes, ``stability`` and ``previous_month`` (``None`` when absent
    or not a finite number).
    """
    import math

    from include.segmentation.adapters.storage import as_path, read_json

    runs = []
    for folder in _month_dirs(as_path(artifacts_dir)):
        metrics_path = folder / "metrics.json"
        metrics = read_json(metrics_path) if metrics_path.exists() else {}
        run: dict[str, Any] = {"month": folder.name, "has_report": (folder / "report.html").exists()}
        for key in ("algorithm", "n_clusters", "previous_month"):
            run[key] = metrics.get(key)
        for key in ("silhouette_hybrid", "silhouette_lstm", "silhouette_static", "stability", "noise_fraction"):
            value = metrics.get(key)
            run[key] = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        runs.append(run)
    return runs


def latest_segments(config: Any, search: str, page: int) -> tuple[list[dict[str, Any]], int]:
    """Each market's latest SegmentID from the warehouse, filtered and paged: (rows, matching markets).

    ``search`` matches the market key or name (case-insensitive substring; ``%`` and ``_`` are
    wildcards); ``page`` starts at 1, ``PAGE_SIZE`` rows each. Rows have ``market_key``,
    ``market_name``, ``country``, ``territory_group``, ``month`` (YYYY-MM), ``segment`` (label),
    ``model_version``, ``algorithm``, ``description`` (the segment's, from the profile table).
    Returns ([], 0) before the first write (no result table).
    Raises the connector's errors when the warehouse cannot be reached.
    """
    import pandas as pd

    from include.segmentation.adapters.warehouse import connect, query_frame, render_sql
    from include.segmentation.report import segment_label

    w = config.warehouse
    with connect(w) as conn:
        exists = query_frame(conn, render_sql("table_exists.sql", w), {"table_name": w.market_segment_table})
        if int(exists["n"].iloc[0]) == 0:
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
    rows = frame[[*columns, "algorithm", "description"]].astype(object).where(frame.notna(), "").to_dict("records")
    return rows, int(frame["n_total"].iloc[0])


def create_app() -> FastAPI:
    """The plugin's FastAPI app. Every route depends on Airflow's user and on read access to the DAG's runs."""
    import logging

    import jinja2
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse

    from include.segmentation.config import load_config

    log = logging.getLogger(__name__)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
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

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse)
    def runs_page() -> HTMLResponse:
        config = load_config()
        return page("runs.html", root="./", tab="runs", runs=list_runs(config.artifacts_dir))

    @app.get("/runs/{month}", response_class=HTMLResponse)
    def report_page(month: str) -> HTMLResponse:
        if not _MONTH.fullmatch(month):
            raise HTTPException(404, f"not a month (YYYY-MM): {month!r}")
        from include.segmentation.adapters.storage import as_path
        from include.segmentation.report import NAV_MARKER, REPORT_NAME

        path = as_path(load_config().artifacts_dir) / month / REPORT_NAME
        if not path.exists():
            return page("missing.html", status_code=404, root="../", tab="runs", month=month)
        nav = env.get_template("_nav.html").render(root="../", tab="report", month=month)
        html = path.read_text(encoding="utf-8").replace(NAV_MARKER, nav, 1)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/markets", response_class=HTMLResponse)
    def markets_page(
        q: str = Query("", max_length=100, description="market key or name contains"),
        page_number: int = Query(1, alias="page", ge=1, le=100_000),
    ) -> HTMLResponse:
        config = load_config()
        try:
            rows, total = latest_segments(config, q.strip(), page_number)
        except Exception as err:
            log.exception("cannot read the latest segments from the warehouse")
            return page(
                "markets.html",
                status_code=503,
                root="./",
                tab="markets",
                error=f"The warehouse could not be read ({type(err).__name__}); see the api-server log.",
                rows=[],
                total=0,
                q=q,
                page=page_number,
                page_size=PAGE_SIZE,
                reports=set(),
            )
        reports = {run["month"] for run in list_runs(config.artifacts_dir) if run["has_report"]}
        return page(
            "markets.html",
            root="./",
            tab="markets",
            error=None,
            rows=rows,
            total=total,
            q=q,
            page=page_number,
            page_size=PAGE_SIZE,
            reports=reports,
        )

    @app.get("/about", response_class=HTMLResponse)
    def about_page() -> HTMLResponse:
        return page("about.html", root="./", tab="about")

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
