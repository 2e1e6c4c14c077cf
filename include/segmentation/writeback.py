"""Idempotent write-back of SegmentIDs, segment migrations and the run record.

One month's rows are replaced in a single transaction: checked (one row per MARKET_KEY, valid ids),
staged in session-scoped temporary tables, then the month's rows are deleted and the staged rows
inserted, keyed by (MARKET_KEY, SEGMENT_MONTH). A failure at any point rolls back, leaving the
previous contents of every month as they were.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from include.segmentation.clustering import STATIC_FEATURES
from include.segmentation.profiles import TREND_FEATURES
from include.segmentation.warehouse import insert_rows, render_sql, split_statements

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from include.segmentation.config import WarehouseConfig

STAGE_COLUMNS = ("MARKET_KEY", "SEGMENT_MONTH", "SEGMENT_ID", "MODEL_VERSION", "ALGORITHM", "RUN_ID")
MIGRATION_COLUMNS = ("MARKET_KEY", "SEGMENT_MONTH", "PREVIOUS_MONTH", "PREVIOUS_SEGMENT_ID", "SEGMENT_ID", "MOVED")
#: ``profiles.segment_profiles`` columns written to the profile table (upper-cased there).
PROFILE_FIELDS = (
    "n_markets",
    "share",
    *STATIC_FEATURES,
    *TREND_FEATURES,
    "main_group",
    "group_share",
    "main_country",
    "examples",
    "description",
)


def model_version(prefix: str, month: pd.Period) -> str:
    """``<prefix>_YYYYMMDD`` with the month's last day, e.g. ``lstm_hybrid_v2.0_20131231``.

    The date is the as-of date of the data the model saw, not the wall-clock time of training, so a
    re-run or backfill of a month produces the same version string.
    """
    return f"{prefix}_{month.end_time:%Y%m%d}"


@dataclass(frozen=True)
class RunRecord:
    """One row of the run table: what was computed for a month and how good it is."""

    run_id: str
    model_version: str
    algorithm: str
    n_clusters: int
    n_markets: int
    n_excluded: int
    noise_fraction: float
    seq_len: int
    silhouette_hybrid: float | None
    silhouette_lstm: float | None
    silhouette_static: float | None
    final_loss: float | None
    stability: float | None = None  # share 0-1 of markets keeping the previous month's SegmentID
    customer_attributes: str = "current"  # "as of month end" when DIM_CUSTOMER is type-2
    quality: str | None = None  # JSON: per data-quality check its policy, count and example markets


def _bindable(value: object) -> object:
    # numpy scalars are not bindable; NaN/inf become NULL, which is what an analyst's AVG()/WHERE
    # expects for "undefined" (and the connector cannot bind inf).
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def segment_rows(segments: pd.DataFrame, month: pd.Period, run: RunRecord) -> list[tuple]:
    """Rows for the stage table from a frame with ``market_key`` and ``segment_id`` (-1/NaN = noise).

    Raises ``ValueError`` for an empty frame (writing it would erase the month), a missing column, a
    NULL or empty market key, a duplicated market (two rows for one (market, month) key), or a
    SegmentID that is not a whole number >= 1 (or -1/NULL for unassigned), naming the market.
    Market keys are written as strings.
    """
    for col in ("market_key", "segment_id"):
        if col not in segments.columns:
            raise ValueError(f"segments frame is missing column {col!r}")
    if segments.empty:
        raise ValueError(f"no segments to write for {month}: refusing to replace the month with nothing")
    null_keys = segments["market_key"].isna() | (segments["market_key"].astype(str).str.strip() == "")
    if null_keys.any():
        raise ValueError(f"{int(null_keys.sum())} segment row(s) have a NULL or empty market_key")
    keys = segments["market_key"].astype(str)
    dup = keys[keys.duplicated()]
    if len(dup):
        raise ValueError(f"market {dup.iloc[0]!r} appears more than once in the segments to write")
    first_day = month.start_time.date()
    rows = []
    for key, seg in zip(keys, segments["segment_id"], strict=True):
        if pd.isna(seg) or seg == -1:
            seg_id = None
        elif isinstance(seg, (int, np.integer, float, np.floating)) and float(seg).is_integer() and seg >= 1:
            seg_id = int(seg)
        else:
            raise ValueError(f"market {key!r} has SegmentID {seg!r}; expected a whole number >= 1, or -1/NULL")
        rows.append((key, first_day, seg_id, run.model_version, run.algorithm, run.run_id))
    return rows


def migration_rows(rows: list[tuple], segments: pd.DataFrame, previous_month: pd.Period | None) -> list[tuple]:
    """Rows for the migration table: each market's SegmentID last month and now, and whether it moved.

    ``rows`` are ``segment_rows``' output; ``segments`` may carry ``previous_segment_id`` (NaN/-1 or
    absent: the market was not segmented in ``previous_month``).
    """
    previous = segments.get("previous_segment_id", pd.Series(np.nan, index=segments.index))
    prev_day = previous_month.start_time.date() if previous_month is not None else None
    out = []
    for (key, first_day, seg_id, *_), prev in zip(rows, previous, strict=True):
        prev_id = None if pd.isna(prev) or prev < 1 else int(prev)
        moved = prev_id is not None and seg_id is not None and prev_id != seg_id
        out.append((key, first_day, prev_day, prev_id, seg_id, moved))
    return out


def profile_rows(profiles: pd.DataFrame, rows: list[tuple], month: pd.Period, run: RunRecord) -> list[tuple]:
    """Rows for the profile stage table from ``profiles.segment_profiles``' frame (SegmentID -1 -> NULL).

    Raises ``ValueError`` naming a missing column, or a profiled SegmentID that no market of
    ``rows`` (``segment_rows``' output) has, or a segment without a profile: profiles and
    SegmentIDs are written together and must describe the same segments.
    """
    missing = [c for c in ("segment_id", *PROFILE_FIELDS) if c not in profiles.columns]
    if missing:
        raise ValueError(f"profiles frame is missing column(s) {missing}")
    ids = [None if pd.isna(s) or s == -1 else int(s) for s in profiles["segment_id"]]
    assigned = {seg_id for _, _, seg_id, *_ in rows}
    if set(ids) != assigned or len(ids) != len(set(ids)):
        raise ValueError(
            f"profiles describe SegmentIDs {sorted(ids, key=str)} but the segments to write have "
            f"{sorted(assigned, key=str)} (None = unassigned); each needs exactly one profile"
        )
    first_day = month.start_time.date()
    values = profiles[list(PROFILE_FIELDS)].astype(object).itertuples(index=False)
    return [(first_day, seg_id, *map(_bindable, v), run.run_id) for seg_id, v in zip(ids, values, strict=True)]


def write_segments(
    conn: SnowflakeConnection,
    warehouse: WarehouseConfig,
    segments: pd.DataFrame,
    month: pd.Period,
    run: RunRecord,
    previous_month: pd.Period | None = None,
    profiles: pd.DataFrame | None = None,
) -> int:
    """Replace ``month``'s rows of the segment, migration and profile tables and record ``run``, atomically.

    ``segments`` has ``market_key``, ``segment_id`` and optionally ``previous_segment_id`` (the
    market's SegmentID in ``previous_month``); ``profiles`` is ``profiles.segment_profiles``' frame
    (``None``: the month gets no profile rows, as old ones would describe other segments). Creates
    the result tables on first use. Returns the number of segment rows written. Raises
    ``ValueError`` for bad rows before touching the warehouse, and what the warehouse raises after
    rolling back.
    """
    rows = segment_rows(segments, month, run)
    profile_stage = profile_rows(profiles, rows, month, run) if profiles is not None else []
    cur = conn.cursor()
    # DDL commits implicitly in Snowflake, so it runs before the transaction opens.
    for stmt in split_statements(render_sql("create_result_tables.sql", warehouse)):
        cur.execute(stmt)
    insert_rows(conn, f"{warehouse.market_segment_table}_STAGE", STAGE_COLUMNS, rows)
    insert_rows(
        conn, f"{warehouse.migration_table}_STAGE", MIGRATION_COLUMNS, migration_rows(rows, segments, previous_month)
    )
    profile_columns = ("SEGMENT_MONTH", "SEGMENT_ID", *(c.upper() for c in PROFILE_FIELDS), "RUN_ID")
    insert_rows(conn, f"{warehouse.profile_table}_STAGE", profile_columns, profile_stage)
    params = {k: _bindable(v) for k, v in asdict(run).items()}
    params["segment_month"] = month.start_time.date()
    cur.execute("BEGIN")
    try:
        for stmt in split_statements(render_sql("replace_month.sql", warehouse)):
            cur.execute(stmt, params)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return len(rows)
