"""What a DAG run is, from its Airflow task context: configuration, month, Params, and runs to wait for.

The only module that reads an Airflow context (the DAG's ``start_run`` and ``wait_for_previous_month``
call it); the steps receive the run's catalogue instead. Imports nothing heavy.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from include.segmentation.config import SegmentationConfig

if TYPE_CHECKING:
    from include.segmentation.months import RunMonth

#: Airflow Params that override configuration fields for one run (see ``SegmentationConfig.with_overrides``).
CONFIG_PARAMS = ("seq_len", "epochs", "algorithm", "n_clusters", "static_weight", "approval")

#: Run states ``wait_for_previous_month`` waits for. Not "queued": a queued run of the month before
#: may be held back by this very run (``max_active_runs``), and both would wait forever; a backfill
#: starts its runs in logical-date order, so the month before is running (or done) by then.
IN_FLIGHT = ("running",)


def settings_from_context(context: dict) -> tuple[SegmentationConfig, RunMonth]:
    """The run's configuration (file + Params) and its month with the reason, from an Airflow task context.

    The month follows ``months.resolve_month`` (``target_month``, else the logical date, else the last
    complete month before ``run_after``); the data interval is never read. Called once per run, by
    ``start_run``, which snapshots the result. Raises ``ValueError`` / ``pydantic.ValidationError``
    naming the bad Param.
    """
    from include.segmentation.config import load_config
    from include.segmentation.months import resolve_month

    params = context["params"]
    config = load_config().with_overrides(**{k: params.get(k) for k in CONFIG_PARAMS})
    dag_run = context.get("dag_run")
    run_month = resolve_month(
        params.get("target_month"), context.get("logical_date"), getattr(dag_run, "run_after", None)
    )
    return config, run_month


def flag(value: Any) -> bool:
    """A boolean Param as the user meant it: ``airflow dags trigger --conf`` may store ``"True"``/``"false"``."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _iso(value: datetime | None) -> str | None:
    return pd.Timestamp(value).tz_convert("UTC").isoformat() if value is not None else None


def run_info(context: dict) -> dict[str, Any]:
    """What ``run.json`` records about the DAG run: Params, dry run, start time and how it was started.

    Times are the DAG run's own (UTC ISO 8601), never the wall clock of the task.
    """
    params = dict(context["params"])
    dag_run = context.get("dag_run")
    return {
        "params": params,
        "dry_run": flag(params.get("dry_run", False)),
        "fresh": flag(params.get("force_retrain", False)),
        "overwrite_history": flag(params.get("overwrite_history", False)),
        "started_at": _iso(getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)),
        "run_after": _iso(getattr(dag_run, "run_after", None)),
        "logical_date": _iso(context.get("logical_date")),
        "run_type": str(getattr(dag_run, "run_type", "") or "") or None,
        "dag_id": getattr(dag_run, "dag_id", None),
    }


def earlier_month_in_flight(context: dict, month: pd.Period) -> int:
    """How many runs of this DAG for the month before ``month`` are running (``IN_FLIGHT``).

    A scheduled or backfill run of a month has the month's first day as its logical date (the DAG's
    data-interval timetable), so the runs to wait for are found by logical date through Airflow's own
    run state (``RuntimeTaskInstance.get_dr_count``, as ``ExternalTaskSensor`` does). Waiting only for
    the month just before is enough: that run waits for its own predecessor in turn.
    """
    previous_start = (month - 1).start_time.tz_localize("UTC").to_pydatetime()
    return context["ti"].get_dr_count(
        dag_id=context["dag"].dag_id, logical_dates=[previous_start], states=list(IN_FLIGHT)
    )
