"""Which calendar month a DAG run segments: one rule for every way of starting a run.

========================================================  =========================================
How the run starts                                        Month segmented
========================================================  =========================================
``target_month`` Param set (form, REST, CLI ``--conf``)   that month
scheduled run, backfill (logical date = month's 1st)      the logical date's month
CLI ``--logical-date`` / REST / UI ``logical_date``       the logical date's month, once it has ended
``airflow dags test DAG 2013-12-01``                      2013-12, in any default timezone
logical date in a month not yet over (the form's "now")   the last complete month before the run
no logical date (CLI trigger without one, REST ``null``)  the last complete month before the run
========================================================  =========================================

The logical date, not the data interval, names the month: Airflow infers a manual run's data interval
from the moment it is triggered, so the same logical date would otherwise mean two months. A logical
date within ``SNAP`` (14 h) of a month's first instant counts as that month, so midnight of the 1st in
any timezone (UTC-12 .. UTC+14) is the month that starts there: ``dags test ... 2013-12-01`` under
``default_timezone=Europe/Berlin`` is 2013-11-30 23:00 UTC and still segments 2013-12. Every time is
read in UTC. A month "has ended" when its last instant is before the run's ``run_after``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import NamedTuple

import pandas as pd

from include.segmentation.config import MONTH_PATTERN

_MONTH = re.compile(MONTH_PATTERN)

#: How far from a month's first instant (UTC) a logical date may lie and still name that month: the
#: widest offset of a timezone from UTC (UTC+14, Kiribati; UTC-12, Baker Island).
SNAP = timedelta(hours=14)


class RunMonth(NamedTuple):
    """The month a run segments and why (``reason`` is recorded in ``run.json`` and the report)."""

    month: pd.Period
    reason: str


def parse_month(value: str, field: str = "target_month") -> pd.Period:
    """Parse ``YYYY-MM`` (years 1900-2199) into a monthly ``pd.Period``.

    Raises ``ValueError`` naming ``field`` and the value, and which part is wrong when it has the
    shape but not a month number 01-12 or a year 1900-2199.
    """
    if isinstance(value, str) and (shape := re.fullmatch(r"([0-9]{4})-([0-9]{2})", value.strip())):
        year, number = int(shape[1]), int(shape[2])
        if not 1 <= number <= 12:
            raise ValueError(f"{field} {value!r}: the month number {number:02d} is not 01-12 (YYYY-MM, e.g. 2013-12)")
        if not 1900 <= year <= 2199:
            raise ValueError(f"{field} {value!r}: the year {year} is not 1900-2199 (YYYY-MM, e.g. 2013-12)")
    if not isinstance(value, str) or not _MONTH.fullmatch(value.strip()):
        raise ValueError(f"{field} must look like YYYY-MM with a year 1900-2199 (e.g. 2013-12), got {value!r}")
    return pd.Period(value.strip(), freq="M")


def _utc(ts: datetime) -> pd.Timestamp:
    # Naive datetimes are taken as UTC (Airflow's own convention); the result is naive UTC.
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.tz_localize(None)


def month_of_date(logical_date: datetime) -> pd.Period:
    """The month a logical date names: the month starting within ``SNAP`` of it, else the month containing it."""
    stamp = _utc(logical_date)
    nearest = (stamp + SNAP).to_period("M")
    return nearest if abs(stamp - nearest.start_time) <= SNAP else stamp.to_period("M")


def resolve_month(target_month: str | None, logical_date: datetime | None, run_after: datetime | None) -> RunMonth:
    """The month a run segments, by the rule in this module's table.

    ``target_month``: the ``YYYY-MM`` Param, or None/empty; ``logical_date``: the DAG run's logical date
    (None for a run triggered without one); ``run_after``: when the run was due (Airflow's
    ``dag_run.run_after``; a scheduled run's is the end of its month). Naive datetimes are UTC.
    Raises ``ValueError`` for a malformed ``target_month``, or when neither date is given.
    """
    if target_month:
        return RunMonth(parse_month(target_month), "target_month Param")
    if run_after is None and logical_date is None:
        raise ValueError("cannot resolve the month: no target_month, logical date or run_after")
    last_complete = _utc(run_after).to_period("M") - 1 if run_after is not None else None
    if logical_date is not None:
        month = month_of_date(logical_date)
        when = _utc(logical_date).isoformat() + "Z"
        if last_complete is None or month <= last_complete:
            return RunMonth(month, f"logical date {when}")
        return RunMonth(last_complete, f"logical date {when} is in {month}, not over yet: last complete month")
    return RunMonth(last_complete, "no logical date: last complete month before the run")
