"""Idempotent write-back of SegmentIDs, segment migrations and the run record.

One month's rows are replaced in a single transaction: checked (one row per MARKET_KEY, valid ids),
built as frames (vectorised, no loop over markets), bulk-loaded into session-scoped temporary tables
(``warehouse.insert_frame``: one Parquet file and one COPY INTO per table), then the month's rows
are deleted and the staged rows inserted, keyed by (MARKET_KEY, SEGMENT_MONTH). A failure at any
point rolls back, leaving the previous contents of every month as they were.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from include.segmentation.adapters.warehouse import (
    insert_frame,
    new_token,
    query_frame,
    render_sql,
    split_statements,
)
from include.segmentation.config import DEFAULT_FEATURES, StaticFeature
from include.segmentation.core.features import SIZE_FEATURES, STATIC_FEATURES, TREND_FEATURES

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from include.segmentation.config import SegmentationConfig, WarehouseConfig

log = logging.getLogger(__name__)

STAGE_COLUMNS = ("MARKET_KEY", "SEGMENT_MONTH", "SEGMENT_ID", "MODEL_VERSION", "ALGORITHM", "RUN_ID")
MIGRATION_COLUMNS = ("MARKET_KEY", "SEGMENT_MONTH", "PREVIOUS_MONTH", "PREVIOUS_SEGMENT_ID", "SEGMENT_ID", "MOVED")
#: ``profiles.segment_profiles`` columns written to the profile table (upper-cased there). The seed's
#: static features keep their columns (NULL when the configuration drops one); every static feature,
#: the seed's or not, is also a row of the feature table (``feature_frame``), which needs no column
#: per feature.
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
    k_reason: str | None = None  # why this k (k_selection): the gap rule, continuity, or n_clusters
    training: str | None = None  # e.g. "converged after 1,200 steps (warm start from 2013-11)"
    features: str | None = None  # JSON: the static features used, with template, kind, weight and clustered


def run_record(
    run_id: str,
    config: SegmentationConfig,
    month: pd.Period,
    metrics: dict,
    segments: pd.DataFrame,
    excluded: pd.DataFrame,
    quality: dict,
    derived: Collection[str] = (),
) -> RunRecord:
    """The run table's row for a month: ``metrics`` (``metrics.json``), the segments written, the
    markets the data-quality gate excluded (counted once each), its checks (``quality.json``) and the
    static features on columns a loader ``derived`` (``contract.derived_features``)."""
    return RunRecord(
        run_id=run_id,
        model_version=model_version(config.model_version_prefix, month),
        algorithm=metrics["algorithm"],
        n_clusters=int(metrics["n_clusters"]),
        n_markets=len(segments),
        n_excluded=excluded["market_key"].nunique(),
        noise_fraction=float(metrics["noise_fraction"]),
        seq_len=config.sequences.seq_len,
        silhouette_hybrid=metrics["silhouette_hybrid"],
        silhouette_lstm=metrics["silhouette_lstm"],
        silhouette_static=metrics["silhouette_static"],
        final_loss=metrics.get("final_loss"),
        stability=metrics.get("stability"),
        customer_attributes="as of month end" if config.warehouse.customer.is_type2 else "current",
        quality=json.dumps(quality["checks"], sort_keys=True),
        k_reason=metrics.get("k_reason"),
        training=metrics.get("training"),
        features=features_json(config, derived),
    )


def _bindable(value: object) -> object:
    # numpy scalars are not bindable; NaN/inf become NULL, which is what an analyst's AVG()/WHERE
    # expects for "undefined" (and the connector cannot bind inf).
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _date_column(day: dt.date | None, n: int) -> pd.Series:
    # An Arrow date32 column: Parquet DATE (a NULL one keeps its type), read as DATE by COPY INTO.
    import pyarrow as pa

    values = pa.nulls(n, pa.date32()) if day is None else pa.array(np.full(n, np.datetime64(day, "D")))
    return pd.Series(pd.arrays.ArrowExtensionArray(values))


def _id_column(values: np.ndarray, missing: np.ndarray) -> pd.Series:
    # Whole numbers as nullable Int64: NULL where ``missing``.
    return pd.Series(pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing.copy()))


def _text_column(value: str, n: int) -> pd.Series:
    return pd.Series(np.full(n, value, dtype=object), dtype="str")


#: pandas' inferred kinds of an object column whose values are all numbers (or missing).
_NUMERIC_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "boolean", "empty"})


def _segment_ids(keys: pd.Series, ids: pd.Series) -> pd.Series:
    # SegmentIDs as nullable Int64 (-1/NaN/None -> NULL), checked for the whole column at once.
    def refuse(i: int) -> ValueError:
        value = ids.iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        return ValueError(f"market {keys.iloc[i]!r} has SegmentID {value!r}; expected a whole number >= 1, or -1/NULL")

    if ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=True) not in _NUMERIC_KINDS:
        numeric = (int, np.integer, float, np.floating)
        # Only on the error path: the first value that is not a number, for the message.
        raise refuse(next(i for i, v in enumerate(ids) if not (pd.isna(v) or isinstance(v, numeric))))
    if not (pd.api.types.is_numeric_dtype(ids) or ids.dtype == object):
        raise refuse(0)
    values = pd.to_numeric(ids).astype("float64").to_numpy()
    unassigned = np.isnan(values) | (values == -1)
    bad = ~unassigned & ~((values >= 1) & (values == np.floor(values)) & np.isfinite(values))
    if bad.any():
        raise refuse(int(np.flatnonzero(bad)[0]))
    return _id_column(values, unassigned)


def segment_frame(segments: pd.DataFrame, month: pd.Period, run: RunRecord) -> pd.DataFrame:
    """The segment stage table's rows (``STAGE_COLUMNS``) from a frame with ``market_key`` and ``segment_id``
    (-1/NaN = noise, written as NULL). Vectorised: no Python loop over markets.

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
    keys = segments["market_key"].astype(str).reset_index(drop=True)
    dup = keys[keys.duplicated()]
    if len(dup):
        raise ValueError(f"market {dup.iloc[0]!r} appears more than once in the segments to write")
    n = len(keys)
    return pd.DataFrame(
        {
            "MARKET_KEY": keys.astype("str"),
            "SEGMENT_MONTH": _date_column(month.start_time.date(), n),
            "SEGMENT_ID": _segment_ids(keys, segments["segment_id"].reset_index(drop=True)),
            "MODEL_VERSION": _text_column(run.model_version, n),
            "ALGORITHM": _text_column(run.algorithm, n),
            "RUN_ID": _text_column(run.run_id, n),
        }
    )


def migration_frame(stage: pd.DataFrame, segments: pd.DataFrame, previous_month: pd.Period | None) -> pd.DataFrame:
    """The migration stage table's rows (``MIGRATION_COLUMNS``): each market's SegmentID last month and now,
    and whether it moved (segmented in both months under different ids).

    ``stage`` is ``segment_frame``'s output; ``segments`` may carry ``previous_segment_id`` (NaN/-1 or
    absent: the market was not segmented in ``previous_month``).
    """
    n = len(stage)
    if "previous_segment_id" in segments:
        prev = pd.to_numeric(segments["previous_segment_id"].reset_index(drop=True)).astype("float64")
    else:
        prev = pd.Series(np.nan, index=range(n))
    known = (prev >= 1).to_numpy()  # NaN compares False
    prev_id = _id_column(prev.to_numpy(), ~known)
    seg_id = stage["SEGMENT_ID"]
    moved = known & seg_id.notna().to_numpy() & (prev_id.fillna(0) != seg_id.fillna(0)).to_numpy()
    return pd.DataFrame(
        {
            "MARKET_KEY": stage["MARKET_KEY"],
            "SEGMENT_MONTH": stage["SEGMENT_MONTH"],
            "PREVIOUS_MONTH": _date_column(previous_month.start_time.date() if previous_month else None, n),
            "PREVIOUS_SEGMENT_ID": prev_id,
            "SEGMENT_ID": seg_id,
            "MOVED": moved,
        }
    )


def profile_frame(profiles: pd.DataFrame, stage: pd.DataFrame, month: pd.Period, run: RunRecord) -> pd.DataFrame:
    """The profile stage table's rows from ``profiles.segment_profiles``' frame (SegmentID -1 -> NULL).

    Columns ``SEGMENT_MONTH``, ``SEGMENT_ID``, ``PROFILE_FIELDS`` upper-cased, ``RUN_ID``; numbers as
    float64 (NaN/inf -> NULL; ``N_MARKETS`` Int64), text as strings (missing -> NULL). Raises
    ``ValueError`` naming a missing column, or a profiled SegmentID that no market of ``stage``
    (``segment_frame``'s output) has, or a segment without a profile: profiles and SegmentIDs are
    written together and must describe the same segments.
    """
    missing = [c for c in ("segment_id", *PROFILE_FIELDS) if c not in profiles.columns and c not in STATIC_FEATURES]
    if missing:
        raise ValueError(f"profiles frame is missing column(s) {missing}")
    profiles = profiles.assign(**{c: np.nan for c in STATIC_FEATURES if c not in profiles.columns})
    # One row per segment, not per market: plain Python over k values is fine here.
    ids = [None if pd.isna(s) or s == -1 else int(s) for s in profiles["segment_id"]]
    assigned = {None if pd.isna(s) else int(s) for s in stage["SEGMENT_ID"].unique()}
    if set(ids) != assigned or len(ids) != len(set(ids)):
        raise ValueError(
            f"profiles describe SegmentIDs {sorted(ids, key=str)} but the segments to write have "
            f"{sorted(assigned, key=str)} (None = unassigned); each needs exactly one profile"
        )
    k = len(ids)
    out = {
        "SEGMENT_MONTH": _date_column(month.start_time.date(), k),
        "SEGMENT_ID": pd.Series(pd.array(ids, dtype="Int64")),
    }
    for name in PROFILE_FIELDS:
        column = profiles[name].reset_index(drop=True)
        if name == "n_markets":
            out[name.upper()] = pd.Series(pd.array([int(v) for v in column], dtype="Int64"))
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            out[name.upper()] = column.astype("float64")
        else:
            out[name.upper()] = pd.Series([None if _missing(v) else str(v) for v in column], dtype="str")
    out["RUN_ID"] = _text_column(run.run_id, k)
    return pd.DataFrame(out)


#: Kinds of the temporal statistics and size in the feature table (``profiles.market_trends``).
TREND_KINDS = {"trend_slope": "ratio", "recent_growth": "ratio", "volatility": "ratio", "seasonality": "fraction"}
TREND_KINDS |= dict.fromkeys(SIZE_FEATURES, "currency")


def feature_frame(
    profiles: pd.DataFrame, profile_stage: pd.DataFrame, run: RunRecord, features: tuple[StaticFeature, ...]
) -> pd.DataFrame:
    """The feature table's rows: one per segment and feature, long, so a changed feature set needs no new column.

    Static ``features`` are segment means (``STATISTIC`` 'mean', ``KIND`` the feature's), the temporal
    statistics and ``avg_monthly_revenue`` (where ``profiles`` has them) medians. ``profile_stage``
    is ``profile_frame``'s output (its SEGMENT_MONTH and SEGMENT_ID, in ``profiles``' row order).
    Raises ``ValueError`` naming a feature missing from ``profiles``.
    """
    missing = [f.name for f in features if f.name not in profiles.columns]
    if missing:
        raise ValueError(f"profiles frame is missing feature column(s) {missing}")
    columns = [(f.name, "mean", f.kind) for f in features]
    columns += [(name, "median", kind) for name, kind in TREND_KINDS.items() if name in profiles.columns]
    k = len(profile_stage)
    parts = [
        pd.DataFrame(
            {
                "SEGMENT_MONTH": profile_stage["SEGMENT_MONTH"],
                "SEGMENT_ID": profile_stage["SEGMENT_ID"],
                "FEATURE": _text_column(name, k),
                "STATISTIC": _text_column(statistic, k),
                "VALUE": pd.to_numeric(profiles[name], errors="coerce").astype("float64").reset_index(drop=True),
                "KIND": _text_column(kind, k),
                "RUN_ID": _text_column(run.run_id, k),
            }
        )
        for name, statistic, kind in columns
    ]
    return pd.concat(parts, ignore_index=True)


def features_json(config: SegmentationConfig, derived: Collection[str] = ()) -> str:
    """The feature set a run used, for ``SEGMENTATION_RUN.FEATURES``: per static feature its name,
    template, kind, weight, whether it read a column a loader ``derived``, and whether it was clustered."""
    clustered = {f.name for f in config.clustered_features(derived)}
    return json.dumps(
        [
            {"name": f.name, "template": f.template, "kind": f.kind, "weight": f.weight}
            | {"derived": f.name in derived, "clustered": f.name in clustered}
            for f in config.static_features
        ]
    )


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value)) or value is pd.NA


class HistoryConflict(ValueError):
    """Re-writing a month would change the SegmentIDs that later months were aligned to.

    ``later``: those months, oldest first: the ones to re-run, in order, after overwriting.
    """

    def __init__(self, month: pd.Period, later: list[pd.Period]) -> None:
        self.month, self.later = month, later
        names = ", ".join(str(m) for m in later)
        super().__init__(
            f"{month} is already written with other SegmentIDs, and {names} "
            f"{'was' if len(later) == 1 else 'were'} written after it: their SegmentIDs, SEGMENT_MIGRATION "
            f"and stability follow {month}'s stored ids, which this write would replace. Nothing was written. "
            f"To write it anyway, trigger the run again with the overwrite_history Param set, then re-run "
            f"{names} in order (e.g. a backfill over them)."
        )


def _as_ids(keys: pd.Series, ids: pd.Series) -> dict[str, int | None]:
    return {str(k): None if pd.isna(v) else int(v) for k, v in zip(keys, ids, strict=True)}


def months_to_rerun(
    conn: SnowflakeConnection, warehouse: WarehouseConfig, stage: pd.DataFrame, month: pd.Period
) -> list[pd.Period]:
    """Later months that writing ``stage`` (``segment_frame``'s rows) for ``month`` would leave stale.

    Each month's SegmentIDs are aligned to the month written before it, so a later month is stale
    when ``month`` is stored with other SegmentIDs than ``stage``'s. Returns them oldest first (empty
    when nothing later is written, ``month`` was never written, or its stored SegmentIDs are the ones
    in ``stage``).
    Expects the result tables to exist.
    """
    day = {"segment_month": month.start_time.date()}
    later = query_frame(conn, render_sql("later_months.sql", warehouse), day)
    if later.empty:
        return []
    stored = query_frame(conn, render_sql("stored_segment_ids.sql", warehouse), day)
    # A month never written (a gap filled) changes no id a later month refers to.
    if stored.empty or _as_ids(stored["market_key"], stored["segment_id"]) == _as_ids(
        stage["MARKET_KEY"], stage["SEGMENT_ID"]
    ):
        return []
    return [pd.Timestamp(m).to_period("M") for m in later["segment_month"]]


def write_segments(
    conn: SnowflakeConnection,
    warehouse: WarehouseConfig,
    segments: pd.DataFrame,
    month: pd.Period,
    run: RunRecord,
    previous_month: pd.Period | None = None,
    profiles: pd.DataFrame | None = None,
    overwrite_history: bool = False,
    features: tuple[StaticFeature, ...] = DEFAULT_FEATURES,
) -> int:
    """Replace ``month``'s rows of the segment, migration and profile tables and record ``run``, atomically.

    ``segments`` has ``market_key``, ``segment_id`` and optionally ``previous_segment_id`` (the
    market's SegmentID in ``previous_month``); ``profiles`` is ``profiles.segment_profiles``' frame
    (``None``: the month gets no profile rows, as old ones would describe other segments) with the
    static ``features`` the run computed (their rows of the feature table). Creates
    the result tables on first use. Returns the number of segment rows written. Raises
    ``ValueError`` for bad rows before touching the warehouse, ``HistoryConflict`` (nothing written)
    when later months were aligned to ``month``'s stored SegmentIDs and this write would change them,
    unless ``overwrite_history``; and what the warehouse raises after rolling back.
    """
    stage = segment_frame(segments, month, run)
    profile_stage = profile_frame(profiles, stage, month, run) if profiles is not None else None
    feature_stage = feature_frame(profiles, profile_stage, run, features) if profiles is not None else None
    migrations = migration_frame(stage, segments, previous_month)
    cur = conn.cursor()
    # DDL commits implicitly in Snowflake, so it and the bulk loads of this write's temporary staging
    # tables (named with a token of their own: concurrent writers never share one) run before the
    # transaction opens.
    token = new_token()
    for stmt in split_statements(render_sql("create_result_tables.sql", warehouse)):
        cur.execute(stmt)
    stale = months_to_rerun(conn, warehouse, stage, month)
    if stale and not overwrite_history:
        raise HistoryConflict(month, stale)
    if stale:
        log.warning("overwrite_history: %s rewritten; re-run %s in order", month, ", ".join(map(str, stale)))
    for stmt in split_statements(render_sql("create_stage_tables.sql", warehouse, token=token)):
        cur.execute(stmt)
    insert_frame(conn, f"{warehouse.market_segment_table}_STAGE_{token}", stage)
    insert_frame(conn, f"{warehouse.migration_table}_STAGE_{token}", migrations)
    if profile_stage is not None:
        insert_frame(conn, f"{warehouse.profile_table}_STAGE_{token}", profile_stage)
        insert_frame(conn, f"{warehouse.feature_table}_STAGE_{token}", feature_stage)
    params = {k: _bindable(v) for k, v in asdict(run).items()}
    params["segment_month"] = month.start_time.date()
    cur.execute("BEGIN")
    try:
        for stmt in split_statements(render_sql("replace_month.sql", warehouse, token=token)):
            cur.execute(stmt, params)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return len(stage)
