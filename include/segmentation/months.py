"""Which calendar month a DAG run segments.

The DAG's timetable gives each scheduled run the previous calendar month as its data interval
(run on 2014-01-01 -> data interval [2013-12-01, 2014-01-01) -> month 2013-12), so a scheduled run,
a backfill of that logical date and a manual run with ``target_month=2013-12`` agree.
"""

from __future__ import annotations

import re
from datetime import datetime

import pandas as pd

from include.segmentation.config import MONTH_PATTERN

_MONTH = re.compile(MONTH_PATTERN)


def parse_month(value: str) -> pd.Period:
    """Parse ``YYYY-MM`` (years 1900-2199) into a monthly ``pd.Period``; raises ``ValueError`` naming the value."""
    if not isinstance(value, str) or not _MONTH.fullmatch(value.strip()):
        raise ValueError(f"target_month must look like YYYY-MM with a year 1900-2199 (e.g. 2013-12), got {value!r}")
    return pd.Period(value.strip(), freq="M")


def _utc(ts: datetime) -> pd.Timestamp:
    # Naive datetimes are taken as UTC (Airflow's own convention); the result is naive UTC.
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.tz_localize(None)


def resolve_target_month(
    target_month: str | None,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    logical_date: datetime | None,
    run_after: datetime | None,
) -> pd.Period:
    """The month a run computes, in UTC.

    1. ``target_month`` (the ``YYYY-MM`` Param) when given;
    2. else the month of a non-empty data interval's start (scheduled runs and backfills);
    3. else the calendar month before ``logical_date`` or, failing that, ``run_after`` (manual runs
       with a zero-length or no data interval: "run now" means "the last complete month").

    Raises ``ValueError`` when nothing identifies a month.
    """
    if target_month:
        return parse_month(target_month)
    if data_interval_start is not None and data_interval_end is not None:
        start, end = _utc(data_interval_start), _utc(data_interval_end)
        if end > start:
            return start.to_period("M")
    anchor = logical_date or run_after
    if anchor is None:
        raise ValueError("cannot resolve the target month: no target_month, data interval, logical date or run_after")
    return _utc(anchor).to_period("M") - 1
