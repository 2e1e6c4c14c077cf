"""Airflow UI plugin: a "Market segments" entry in the navigation, served by Airflow's own api-server.

Pages (under ``/segments/``, shown in an iframe inside the Airflow UI, in Airflow's light or dark theme):

- ``/segments/``: the runs: every run of the DAG in Airflow's metadata DB (failed and running ones
  too, with links to the Airflow run and the failed task's log) and every run folder in the artifact
  store (``<YYYY-MM>/<run_key>/``, ``adapters/catalog.py``), newest month first, each marked
  published, superseded, dry run or failed;
- ``/segments/runs/<YYYY-MM>``: the report of the month's *published* run, the one whose rows the
  warehouse's ``MARKET_SEGMENT`` holds (``sql/published_runs.sql``); ``?download=1`` the
  self-contained file, for offline use;
- ``/segments/runs/<YYYY-MM>/<run_key>``: the report of any one run (dry runs, superseded runs);
- ``/segments/by-run?run_id=...``: the report of an Airflow run: the target of the "Segment report"
  extra link on the DAG's tasks in Airflow's UI;
- ``/segments/markets``: each market's latest SegmentID, from the warehouse
  (``sql/latest_market_segments.sql``), filtered by segment or search, with its segment's description;
- ``/segments/market?key=<market_key>``: one market's SegmentID month by month;
- ``/segments/history``: segment sizes over the months written, and the migration matrix between any
  two of them;
- ``/segments/export/<YYYY-MM>/<segments|profiles|moved>.csv``: a month as the warehouse holds it;
- ``/segments/about``: how the hybrid segmentation works and how to read it.

Reports are stored self-contained (plotly.js inlined); the pages load plotly.js once from
``/segments/static/`` (cached for a year, its version in the URL) instead.

Every page needs an Airflow login: the app depends on Airflow's ``get_user`` (the JWT in the
``Authorization`` header or the UI's ``_token`` cookie, which the iframe sends) and on read access to
the ``market_segmentation`` DAG's runs; an anonymous request gets 401 (a page with a sign-in link
for a browser, JSON for an API client), as does every other error (404 for a bad month or page).

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
from urllib.parse import quote

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, Response
    from markupsafe import Markup

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
_METRIC_VALUES = ("algorithm", "n_clusters", "previous_month", "previous_k")
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
    name), ``dry_run``, ``started_at`` (ISO UTC, or None), ``params`` (dict); ``has_report``;
    ``outcome`` (``outcome.json``'s: written, dry run, rejected...; None before the run ends); and
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
    outcome_path = folder / RunArtifacts.outcome.name
    outcome = _read_json_or_none(outcome_path, "its outcome shows as unknown") if outcome_path.exists() else None
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
        "outcome": outcome.get("outcome") if isinstance(outcome, dict) else None,
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


def _run_folder(config: Any, run_id: str) -> Any:
    """The folder of the run ``run_id`` (``<YYYY-MM>/<run_key>``, whatever its month), or None."""
    from include.segmentation.adapters.catalog import run_key
    from include.segmentation.adapters.storage import as_path

    key = run_key(run_id)
    return next((m / key for m in _month_dirs(as_path(config.artifacts_dir)) if (m / key).is_dir()), None)


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
# Airflow's metadata DB: the DAG's runs, failed ones included


def airflow_runs(limit: int = 500) -> dict[str, dict[str, Any]] | None:
    """The DAG's latest ``limit`` runs in Airflow's metadata DB: {run_id: entry}, or None when the DB
    cannot be read (logged; the pages then show the artifact store alone).

    An entry has ``state`` (queued, running, success, failed), ``run_type``, ``logical_date`` and
    ``run_after`` (datetimes, UTC; logical date None for a run triggered without one), ``conf`` (the
    Params it was triggered with), ``note``, ``failed_task`` (the first failed task's id, or None) and
    ``awaiting_input`` (a task waits in "Required actions": the approval gate).
    """
    try:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            runs = session.scalars(
                select(DagRun).where(DagRun.dag_id == DAG_ID).order_by(DagRun.run_after.desc()).limit(limit)
            ).all()
            notable = session.execute(
                select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state)
                .where(TaskInstance.dag_id == DAG_ID)
                .where(TaskInstance.state.in_(("failed", "upstream_failed", "awaiting_input")))
                .where(TaskInstance.run_id.in_([r.run_id for r in runs]))
                .order_by(TaskInstance.start_date)
            ).all()
            first_failed: dict[str, str] = {}
            awaiting: set[str] = set()
            for run_id, task_id, state in notable:
                if state == "awaiting_input":
                    awaiting.add(run_id)
                else:
                    first_failed.setdefault(run_id, task_id)
            return {
                r.run_id: {
                    "state": str(r.state),
                    "run_type": str(r.run_type),
                    "logical_date": r.logical_date,
                    "run_after": r.run_after,
                    "conf": dict(r.conf or {}),
                    "note": r.note,
                    "failed_task": first_failed.get(r.run_id),
                    "awaiting_input": r.run_id in awaiting,
                }
                for r in runs
            }
    except Exception as err:  # no metadata DB in this process (tests), or it cannot be read
        log.warning("cannot read the DAG's runs from Airflow's metadata DB: %s", err)
        return None


def _airflow_month(entry: dict[str, Any]) -> str:
    """The month an Airflow run segments (``months.resolve_month``), for a run that left no folder."""
    from include.segmentation.months import resolve_month

    try:
        target = entry["conf"].get("target_month") or None
        return str(resolve_month(target, entry["logical_date"], entry["run_after"]).month)
    except (TypeError, ValueError):
        return "?"


def _run_from_airflow(run_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A runs-page entry for an Airflow run that has no run folder (it failed, or has not started, before
    ``start_run``)."""
    started = entry["run_after"]
    conf = entry["conf"]
    return {
        "month": _airflow_month(entry),
        "run_id": run_id,
        "run_key": None,
        "dry_run": str(conf.get("dry_run")).lower() == "true",
        "started_at": started.isoformat() if started else None,
        "params": conf,
        "published": None,
        "has_report": False,
        "outcome": None,
        **_metric_fields({}),
    }


# ---------------------------------------------------------------------------------------------
# The warehouse: which run is published, each market's latest segment


def published_runs(config: Any) -> dict[str, str]:
    """Each month's published run: {YYYY-MM: RUN_ID of its rows in ``MARKET_SEGMENT``}.

    {} before the first write (no result table). Raises the connector's errors when the warehouse
    cannot be reached.
    """
    import pandas as pd

    from include.segmentation.adapters.warehouse import connect, query_frame, render_sql, table_exists

    w = config.warehouse
    with connect(w) as conn:
        if not table_exists(conn, w, w.market_segment_table):
            return {}
        frame = query_frame(conn, render_sql("published_runs.sql", w))
    months = pd.to_datetime(frame["segment_month"]).dt.strftime("%Y-%m")
    return dict(zip(months, frame["run_id"].astype(str), strict=True))


def _warehouse_error(err: Exception) -> str:
    return f"The warehouse could not be read ({type(err).__name__}); see the api-server log."


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
    """Every run: each run folder in the artifact store and each of the DAG's runs in Airflow's metadata
    DB (``airflow_runs``), and the warehouse error (None when it was read).

    One entry per run (``read_run``; an Airflow run without a folder: ``_run_from_airflow``), newest
    month first; within a month the published run first, then by ``started_at`` descending (unknown
    last). ``published`` is whether the run's id is the month's published run (``published_runs``),
    None when the warehouse could not be read; ``status`` is ``_status``'s label, or ``rejected`` (in
    review), ``failed``, ``awaiting-approval`` / ``running`` from Airflow for a run that did not
    publish; ``airflow`` is the Airflow run's entry (None: not in the metadata DB); ``changed`` the
    Params it set away from the defaults. Folders without a readable ``run.json`` are skipped (logged).
    """
    runs = _scan_runs(config.artifacts_dir)
    in_airflow = airflow_runs() or {}
    with_folder = {run["run_id"] for run in runs}
    runs += [_run_from_airflow(run_id, entry) for run_id, entry in in_airflow.items() if run_id not in with_folder]
    published, error = _published_or_error(config)
    for run in runs:
        run["published"] = None if published is None else published.get(run["month"]) == run["run_id"]
        run["airflow"] = in_airflow.get(run["run_id"])
    published_started = {run["month"]: run["started_at"] for run in runs if run["published"]}
    defaults = _param_defaults(config)
    for run in runs:
        run["changed"] = {k: v for k, v in run["params"].items() if v is not None and defaults.get(k, v) != v}
        run["status"] = _status(run, published, published_started)
        state = (run["airflow"] or {}).get("state")
        if run["outcome"] == "rejected":
            run["status"] = "rejected"
        elif state == "failed" and run["status"] != "published":
            run["status"] = "failed"
        elif (run["airflow"] or {}).get("awaiting_input"):
            run["status"] = "awaiting-approval"
        elif state in ("queued", "running") and run["status"] in ("not-published", "unknown", "dry-run"):
            run["status"] = "running"
    # Stable sorts, last key first: start time, then published first, then month.
    runs.sort(key=lambda r: r["started_at"] or "", reverse=True)
    runs.sort(key=lambda r: r["published"] is not True)
    runs.sort(key=lambda r: r["month"], reverse=True)
    return runs, error


def _param_defaults(config: Any) -> dict[str, Any]:
    """The DAG's Params' defaults under ``config`` (``params.run_params``): what a run needs not repeat."""
    from include.segmentation.params import run_params

    return {name: param.value for name, param in run_params(config).items()}


def latest_segments(
    config: Any, search: str, page: int, segment: str | None = None, by_name: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """Each market's latest SegmentID from the warehouse, filtered and paged: (rows, matching markets).

    ``search`` matches the market key or name (case-insensitive substring; ``%`` and ``_`` are
    wildcards); ``segment`` (a label, ``"unassigned"``, or None for all) keeps one segment's markets;
    rows are by SegmentID then market key, or by market name with ``by_name``; ``page`` starts at 1,
    ``PAGE_SIZE`` rows each. Rows have ``market_key``, ``market_name``, ``country``,
    ``territory_group``, ``month`` (YYYY-MM), ``segment`` (label), ``colour``, ``model_version``,
    ``algorithm``, ``description`` (the segment's, from the profile table) and ``run_id`` (the month's
    published run). Returns ([], 0) before the first write (no result table) and past the last page.
    Raises the connector's errors when the warehouse cannot be reached.
    """
    import pandas as pd

    from include.segmentation.adapters.warehouse import connect, query_frame, render_sql, table_exists
    from include.segmentation.report import segment_colour, segment_label

    w = config.warehouse
    segment_id = None if segment is None else (-1 if segment == "unassigned" else int(segment))
    with connect(w) as conn:
        if not table_exists(conn, w, w.market_segment_table):
            return [], 0
        frame = query_frame(
            conn,
            render_sql("latest_market_segments.sql", w, by_name=int(by_name)),
            {
                "pattern": f"%{search}%",
                "segment_id": segment_id,
                "limit": PAGE_SIZE,
                "offset": (page - 1) * PAGE_SIZE,
            },
        )
    if frame.empty:
        return [], 0
    frame["month"] = pd.to_datetime(frame["segment_month"]).dt.strftime("%Y-%m")
    frame["segment"] = [segment_label(v) for v in pd.to_numeric(frame["segment_id"])]
    frame["colour"] = [segment_colour(v) for v in frame["segment"]]
    columns = ["market_key", "market_name", "country", "territory_group", "month", "segment", "colour"]
    rows = frame[[*columns, "model_version", "algorithm", "description", "run_id"]]
    return rows.astype(object).where(rows.notna(), "").to_dict("records"), int(frame["n_total"].iloc[0])


def _published_reports(config: Any, rows: list[dict[str, Any]]) -> set[str]:
    """The months of ``rows`` whose published run (the rows' ``run_id``) has a report in the artifact store."""
    from include.segmentation.adapters.catalog import RunArtifacts, run_key
    from include.segmentation.adapters.storage import as_path

    root = as_path(config.artifacts_dir)
    pairs = {(row["month"], str(row["run_id"])) for row in rows if str(row["run_id"]).strip()}
    return {month for month, run_id in pairs if (root / month / run_key(run_id) / RunArtifacts.report.name).exists()}


def why_not_segmented(config: Any, search: str, exact: bool = False) -> list[dict[str, str]]:
    """For a search (``exact``: a market key) that matched no segmented market: the markets of the market
    dimension it matches,
    each with why it has no SegmentID: its reasons in the newest published run's ``excluded.parquet``
    ("excluded in 2013-12: ..."), else "not segmented in any month written"."""
    from include.segmentation.adapters.catalog import RunArtifacts, run_key
    from include.segmentation.adapters.storage import as_path, read_parquet
    from include.segmentation.history import find_markets
    from include.segmentation.report import excluded_rows

    found = find_markets(config, search, exact=exact)
    if found.empty:
        return []
    reasons: dict[str, str] = {}
    published = published_runs(config)
    if published:
        month = max(published)
        path = as_path(config.artifacts_dir) / month / run_key(published[month]) / RunArtifacts.excluded.name
        if path.exists():
            excluded = excluded_rows(read_parquet(path))
            reasons = {row["market_key"]: f"excluded in {month}: {row['reason']}" for row in excluded}
    return [
        {
            "market_key": str(key),
            "market_name": str(name),
            "reason": reasons.get(str(key), "not segmented in any month written"),
        }
        for key, name in zip(found["market_key"], found["market_name"], strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# The pages


class _Pages:
    """The plugin's templates, rendered; every response says ``Cache-Control: no-store``."""

    def __init__(self) -> None:
        import jinja2

        from include.segmentation.report import TEMPLATES as REPORT_TEMPLATES
        from include.segmentation.report import segment_colour

        # The report's templates too: the theme (_theme.html) is one file for the report and the pages.
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES), jinja2.FileSystemLoader(REPORT_TEMPLATES)])
        self.env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.globals["segment_colour"] = segment_colour
        self.env.globals["dag_id"] = DAG_ID
        self.env.filters["q"] = lambda value: quote(str(value), safe="")

    def page(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        from fastapi.responses import HTMLResponse

        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=_NO_STORE)

    def error(self, status_code: int, root: str, title: str, detail: str) -> HTMLResponse:
        """``error.html``: what went wrong, in a page of the plugin (not Airflow's raw JSON)."""
        return self.page("error.html", status_code, root=root, tab="", title=title, detail=detail)

    def missing(self, status_code: int, root: str, month: str, reason: str, **context: Any) -> HTMLResponse:
        """``missing.html``: no report to show, and why (``reason``: ``unpublished``, ``unknown``,
        ``no-report``, ``no-run``)."""
        context = {"error": None, "run_id": None, "run_key": None, "runs": [], "only_dry_runs": False} | context
        return self.page("missing.html", status_code, root=root, tab="runs", month=month, reason=reason, **context)

    def report(self, folder: Any, download: bool = False, **nav: Any) -> Response | None:
        """The run's report in ``folder``, with the navigation bar (``_nav.html`` with ``nav``) in place of
        ``NAV_MARKER`` and plotly.js from ``static/`` (``report.external_plotly``); with ``download`` the
        stored self-contained file as an attachment. None when the folder has no report."""
        from fastapi.responses import HTMLResponse, Response

        from include.segmentation.adapters.catalog import RunArtifacts
        from include.segmentation.report import NAV_MARKER, external_plotly

        try:
            html = (folder / RunArtifacts.report.name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if download:
            name = f"segments-{folder.parent.name}-{folder.name}.html"
            headers = _NO_STORE | {"Content-Disposition": f'attachment; filename="{name}"'}
            return Response(html, media_type="text/html; charset=utf-8", headers=headers)
        bar = self.env.get_template("_nav.html").render(tab="report", **nav)
        html = external_plotly(html.replace(NAV_MARKER, bar, 1), f"{nav['root']}static/{_plotly_file()}")
        return HTMLResponse(html, headers=_NO_STORE)


def _plotly_file() -> str:
    """The name plotly.js is served under: its version in it, so a new version is a new URL."""
    import plotly

    return f"plotly-{plotly.__version__}.min.js"


def _runs_view(pages: _Pages) -> HTMLResponse:
    from include.segmentation.config import load_config

    runs, error = list_runs(load_config())
    return pages.page("runs.html", root="./", tab="runs", runs=runs, error=error)


def _month_report_view(pages: _Pages, month: str, download: bool) -> Response:
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
    return pages.report(folder, download, **nav) or pages.missing(404, "../", month, "no-report", run_id=run_id)


def _run_report_view(pages: _Pages, month: str, key: str, download: bool) -> Response:
    """The report of the run in ``<month>/<key>``; a 404 page for a bad key, no such run or no report."""
    from include.segmentation.adapters.storage import as_path
    from include.segmentation.config import load_config

    folder = as_path(load_config().artifacts_dir) / month / key if _RUN_KEY.fullmatch(key) else None
    run = read_run(folder) if folder is not None and folder.is_dir() else None
    if run is None:
        return pages.missing(404, "../../", month, "no-run", run_key=key)
    label = f"Report {month}, run {run['run_id']}" + (" (dry run)" if run["dry_run"] else "")
    nav = {"root": "../../", "month": month, "report_path": f"runs/{month}/{key}", "report_label": label}
    return pages.report(folder, download, **nav) or pages.missing(
        404, "../../", month, "no-report", run_id=run["run_id"]
    )


def _by_run_view(pages: _Pages, run_id: str) -> Response:
    """The target of the "Segment report" extra link: a redirect to the Airflow run's report, or a page
    saying why it has none (with a link back to the run in Airflow)."""
    from fastapi.responses import RedirectResponse

    from include.segmentation.config import load_config

    folder = _run_folder(load_config(), run_id)
    run = read_run(folder) if folder is not None else None
    if run is not None and run["run_id"] == run_id and run["has_report"]:
        return RedirectResponse(f"./runs/{run['month']}/{run['run_key']}", status_code=307, headers=_NO_STORE)
    entry = (airflow_runs() or {}).get(run_id)
    state = f" (Airflow state: {entry['state']})" if entry else ""
    return pages.page("no_report.html", 404, root="./", tab="runs", run_id=run_id, state=state, entry=entry)


def _markets_view(pages: _Pages, q: str, page_number: int, segment: str | None, sort: str) -> HTMLResponse:
    from include.segmentation.config import load_config
    from include.segmentation.history import read_current_segments

    config = load_config()
    context = {"root": "./", "tab": "markets", "q": q, "page": page_number, "page_size": PAGE_SIZE}
    context |= {"segment": segment or "", "sort": sort, "unexplained": []}
    try:
        rows, total = latest_segments(config, q.strip(), page_number, segment, by_name=sort == "name")
        sizes = read_current_segments(config)
        if not rows and q.strip() and page_number == 1:
            context["unexplained"] = why_not_segmented(config, q.strip())
    except Exception as err:
        log.exception("cannot read the latest segments from the warehouse")
        context |= {"rows": [], "total": 0, "reports": set(), "segments": []}
        return pages.page("markets.html", 503, error=_warehouse_error(err), **context)
    reports = _published_reports(config, rows)
    return pages.page("markets.html", error=None, rows=rows, total=total, reports=reports, segments=sizes, **context)


def _market_view(pages: _Pages, market_key: str) -> HTMLResponse:
    from include.segmentation.config import load_config
    from include.segmentation.history import read_market_history

    config = load_config()
    context = {"root": "./", "tab": "markets", "market_key": market_key, "unexplained": []}
    try:
        history = read_market_history(config, market_key)
        if history.empty:
            context["unexplained"] = why_not_segmented(config, market_key, exact=True)
    except Exception as err:
        log.exception("cannot read a market's history from the warehouse")
        return pages.page("market.html", 503, error=_warehouse_error(err), rows=[], reports=set(), **context)
    rows = history.to_dict("records")
    status = 200 if rows or context["unexplained"] else 404
    return pages.page("market.html", status, error=None, rows=rows, reports=_published_reports(config, rows), **context)


def _history_view(pages: _Pages, before: str | None, after: str | None) -> HTMLResponse:
    """Segment sizes per month (a stacked bar chart) and the migration matrix between two written months
    (default: the newest two)."""
    from include.segmentation.config import load_config
    from include.segmentation.history import migration_matrix, read_month_segments, read_segment_sizes

    config = load_config()
    context = {"root": "./", "tab": "history", "plotly": f"./static/{_plotly_file()}"}
    try:
        sizes = read_segment_sizes(config)
        months = sorted(sizes["month"].unique())
        if months:
            after = after if after in months else months[-1]
            before = before if before in months else months[max(0, months.index(after) - 1)]
            matrix = migration_matrix(read_month_segments(config, before), read_month_segments(config, after))
        else:
            matrix = None
    except Exception as err:
        log.exception("cannot read the segment history from the warehouse")
        return pages.page("history.html", 503, error=_warehouse_error(err), months=[], **context)
    if matrix is None:
        return pages.page("history.html", error=None, months=[], **context)
    chart = _sizes_chart(sizes)
    cells = [[int(v) for v in row] for row in matrix.to_numpy()]
    return pages.page(
        "history.html",
        error=None,
        months=months,
        before=before,
        after=after,
        chart=chart,
        rows=list(matrix.index),
        columns=list(matrix.columns),
        cells=cells,
        largest=max(max(row) for row in cells) if cells else 1,
        **context,
    )


def _sizes_chart(sizes: Any) -> Markup:
    """Markets per segment and month, stacked bars coloured by SegmentID (``report.segment_colour``)."""
    import plotly.graph_objects as go
    from markupsafe import Markup

    from include.segmentation.report import _label_order, segment_colour

    fig = go.Figure()
    for label in sorted(sizes["segment"].unique(), key=_label_order):
        part = sizes[sizes["segment"] == label]
        name = "unassigned" if label == "unassigned" else f"segment {label}"
        # Plain lists: plotly would write numpy columns as base64 typed arrays.
        bar = go.Bar(
            x=part["month"].tolist(), y=part["n_markets"].tolist(), name=name, marker_color=segment_colour(label)
        )
        fig.add_trace(bar)
    fig.update_layout(
        barmode="stack",
        title="Markets per segment, by month written",
        xaxis={"title": "month", "type": "category"},
        yaxis={"title": "markets", "tickformat": "d"},
        legend_title="SegmentID",
        height=420,
    )
    html = fig.to_html(full_html=False, include_plotlyjs=False, div_id="sizes-plot", config={"displaylogo": False})
    return Markup(html)  # noqa: S704 - plotly's own markup; its JSON escapes "<"


def _export_view(pages: _Pages, month: str, what: str) -> Response:
    from fastapi.responses import Response

    from include.segmentation.config import load_config
    from include.segmentation.history import EXPORTS, export_csv, read_export

    if what not in EXPORTS:
        return pages.error(404, "../../", "No such export", f"Exports are {', '.join(EXPORTS)} (e.g. segments.csv).")
    try:
        frame = read_export(load_config(), month, what)
    except Exception as err:
        log.exception("cannot export %s of %s", what, month)
        return pages.error(503, "../../", "Export failed", _warehouse_error(err))
    if frame.empty and what != "moved":
        return pages.error(404, "../../", f"Nothing written for {month}", f"The warehouse holds no {what} for {month}.")
    headers = _NO_STORE | {"Content-Disposition": f'attachment; filename="{what}-{month}.csv"'}
    return Response(export_csv(frame), media_type="text/csv; charset=utf-8", headers=headers)


def _wants_html(request: Any) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _root_of(request: Any) -> str:
    """The relative way back to ``/segments/`` from the request's page (its depth below the prefix)."""
    depth = request.url.path.rstrip("/").count("/") - request.scope.get("root_path", "").count("/")
    return "../" * max(depth - 1, 0) or "./"


def _add_error_pages(app: FastAPI, pages: _Pages) -> None:
    """Errors (401 signed out, 403, 404, 422 for a bad query value) as pages of the plugin for a browser
    (``Accept: text/html``); an API client keeps FastAPI's JSON."""
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    titles = {401: "Sign in to Airflow", 403: "Not allowed", 404: "Not found"}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Any, exc: StarletteHTTPException) -> Response:
        if not _wants_html(request):
            return await http_exception_handler(request, exc)
        detail = str(exc.detail)
        if exc.status_code == 401:
            detail = "This page needs an Airflow login. Sign in to Airflow, then open Segments again."
        page = pages.error(exc.status_code, _root_of(request), titles.get(exc.status_code, "Error"), detail)
        page.headers.update(exc.headers or {})
        return page

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Any, exc: RequestValidationError) -> Response:
        if not _wants_html(request):
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return pages.error(404, _root_of(request), "Not found", f"Bad address: {problems}.")


def _valid_month(month: str) -> str:
    from fastapi import HTTPException

    if not _MONTH.fullmatch(month):
        raise HTTPException(404, f"Not a month (YYYY-MM): {month!r}.")
    return month


def _add_run_routes(app: FastAPI, pages: _Pages) -> None:
    """The runs, their reports, plotly.js and the About page."""
    from fastapi import HTTPException, Query
    from fastapi.responses import HTMLResponse, Response

    @app.get("/", response_class=HTMLResponse)
    def runs_page() -> HTMLResponse:
        return _runs_view(pages)

    @app.get("/runs/{month}", response_class=HTMLResponse)
    def month_report_page(month: str, download: bool = False) -> Response:
        return _month_report_view(pages, _valid_month(month), download)

    @app.get("/runs/{month}/{run_key}", response_class=HTMLResponse)
    def run_report_page(month: str, run_key: str, download: bool = False) -> Response:
        return _run_report_view(pages, _valid_month(month), run_key, download)

    @app.get("/by-run", response_class=HTMLResponse)
    def by_run(run_id: str = Query(..., min_length=1, max_length=250)) -> Response:
        return _by_run_view(pages, run_id)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        # plotly.js for every report and page, served once and cached: the version is in the name.
        if name != _plotly_file():
            raise HTTPException(404, "Not found.")
        from plotly.offline import get_plotlyjs

        headers = {"Cache-Control": "public, max-age=31536000, immutable"}
        return Response(get_plotlyjs(), media_type="text/javascript; charset=utf-8", headers=headers)

    @app.get("/about", response_class=HTMLResponse)
    def about_page() -> HTMLResponse:
        return pages.page("about.html", root="./", tab="about")


def _add_segment_routes(app: FastAPI, pages: _Pages) -> None:
    """The warehouse's segments: latest per market, one market, history, exports."""
    from fastapi import Query
    from fastapi.responses import HTMLResponse

    @app.get("/markets", response_class=HTMLResponse)
    def markets_page(
        q: str = Query("", max_length=100, description="market key or name contains"),
        page_number: int = Query(1, alias="page", ge=1, le=100_000),
        segment: str = Query("", pattern=r"^([0-9]{1,4}|unassigned)?$"),
        sort: str = Query("segment", pattern=r"^(segment|name)$"),
    ) -> HTMLResponse:
        return _markets_view(pages, q, page_number, segment or None, sort)

    # The key as a query value, not a path segment: a key may hold "/" or "%", which a path would mangle.
    @app.get("/market", response_class=HTMLResponse)
    def market_page(key: str = Query(..., min_length=1, max_length=200)) -> HTMLResponse:
        return _market_view(pages, key)

    @app.get("/history", response_class=HTMLResponse)
    def history_page(
        before: str = Query("", pattern=r"^([0-9]{4}-[0-9]{2})?$"),
        after: str = Query("", pattern=r"^([0-9]{4}-[0-9]{2})?$"),
    ) -> HTMLResponse:
        return _history_view(pages, before or None, after or None)

    @app.get("/export/{month}/{what}.csv")
    def export(month: str, what: str) -> Response:
        return _export_view(pages, _valid_month(month), what)


def create_app() -> FastAPI:
    """The plugin's FastAPI app. Every route depends on Airflow's user and on read access to the DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi import Depends, FastAPI

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
    _add_error_pages(app, pages)
    _add_run_routes(app, pages)
    _add_segment_routes(app, pages)
    return app


class SegmentReportLink(BaseOperatorLink):
    """ "Segment report" on every task of the DAG in Airflow's UI: the run's report (``/segments/by-run``).

    A global link, resolved by the api-server when the task's links are shown, so it needs no XCom.
    """

    name = "Segment report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id != DAG_ID:
            return ""
        return f"{URL_PREFIX}/by-run?run_id={quote(ti_key.run_id, safe='')}"


def run_note(config: Any, run_id: str, failed: bool) -> str | None:
    """The note for the DAG run ``run_id`` when it ends: its ``outcome.json`` note (month, written / dry
    run / rejected, k, stability, report link); for a failed run, the month and that nothing was
    written. None when the run left no folder and did not fail."""
    from include.segmentation.adapters.catalog import RunArtifacts

    folder = _run_folder(config, run_id)
    if folder is not None and not failed:
        outcome = _read_json_or_none(folder / RunArtifacts.outcome.name, "no note") or {}
        return outcome.get("note") if isinstance(outcome, dict) else None
    if failed:
        month = folder.parent.name if folder is not None else "the month"
        link = f"/segments/by-run?run_id={quote(run_id, safe='')}"
        return f"**{month}**: failed, nothing written; the current segments are unchanged. [Why]({link})"
    return None


class _RunNotes:
    """A listener (in the scheduler, or ``dags test``): when a run of the DAG ends, its note says which
    month it segmented and what became of it (``run_note``). A note a person wrote is kept."""

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run, failed=False)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run, failed=True)

    @staticmethod
    def _note(dag_run: Any, failed: bool) -> None:
        if dag_run.dag_id != DAG_ID or dag_run.note:
            return
        try:
            from include.segmentation.config import load_config

            note = run_note(load_config(), dag_run.run_id, failed)
            if note:
                # The scheduler's session holds dag_run and commits the note with the run's state.
                dag_run.note = note
        except Exception:  # a note must never break the scheduler
            log.exception("cannot write the note of run %s", dag_run.run_id)


class MarketSegmentsPlugin(AirflowPlugin):
    """Adds "Segments" to the Airflow UI's navigation (an iframe on ``/segments/``), a "Segment report"
    link on the DAG's tasks, and each run's note when it ends."""

    name = "market_segments"
    fastapi_apps = [{"name": "market_segments", "app": _LazyApp(), "url_prefix": URL_PREFIX}]
    global_operator_extra_links = [SegmentReportLink()]
    listeners = [_RunNotes()]
    external_views = [
        {
            # Short: the navigation shows about 10 characters of a label.
            "name": "Segments",
            # The trailing slash matters: without it the iframe loads Airflow's own 404 page.
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "Market segments",
            # Without url_route the navigation entry opens nothing; the UI shows it at /plugin/market-segments.
            "url_route": "market-segments",
            "nav_top_level": True,
        }
    ]
