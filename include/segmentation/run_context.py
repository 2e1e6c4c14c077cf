"""What a DAG run is, from its Airflow task context: configuration, month, Params, and runs to wait for.

The only module that reads an Airflow context (the DAG's ``start_run`` and ``wait_for_previous_month``
call it); the steps receive the run's catalogue instead. Imports nothing heavy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from include.segmentation.config import SegmentationConfig

#: Airflow Params that override configuration fields for one run (see ``SegmentationConfig.with_overrides``).
CONFIG_PARAMS = ("seq_len", "epochs", "algorithm", "n_clusters", "static_weight")

#: Run states in which a DAG run may still write (``wait_for_previous_month`` waits for them).
IN_FLIGHT = ("queued", "running")


def settings_from_context(context: dict) -> tuple[SegmentationConfig, pd.Period]:
    """The run's configuration (file + Params) and target month, from an Airflow task context.

    Called once per run, by ``start_run``, which snapshots the result. Raises ``ValueError`` /
    ``pydantic.ValidationError`` naming the bad Param.
    """
    from include.segmentation.config import load_config
    from include.segmentation.months import resolve_target_month

    params = context["params"]
    config = load_config().with_overrides(**{k: params.get(k) for k in CONFIG_PARAMS})
    dag_run = context.get("dag_run")
    month = resolve_target_month(
        params.get("target_month"),
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        context.get("logical_date"),
        getattr(dag_run, "run_after", None),
    )
    return config, month


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
        "dry_run": bool(params.get("dry_run", False)),
        "fresh": bool(params.get("force_retrain", False)),
        "started_at": _iso(getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)),
        "logical_date": _iso(context.get("logical_date")),
        "run_type": str(getattr(dag_run, "run_type", "") or "") or None,
        "dag_id": getattr(dag_run, "dag_id", None),
    }


def earlier_month_in_flight(context: dict, month: pd.Period) -> int:
    """How many runs of this DAG for the month before ``month`` are queued or running.

    A scheduled or backfill run of a month has the month's first day as its logical date (the DAG's
    data-interval timetable), so the runs to wait for are found by logical date through Airflow's own
    run state (``RuntimeTaskInstance.get_dr_count``, as ``ExternalTaskSensor`` does). Waiting only for
    the month just before is enough: that run waits for its own predecessor in turn.
    """
    previous_start = (month - 1).start_time.tz_localize("UTC").to_pydatetime()
    return context["ti"].get_dr_count(
        dag_id=context["dag"].dag_id, logical_dates=[previous_start], states=list(IN_FLIGHT)
    )
