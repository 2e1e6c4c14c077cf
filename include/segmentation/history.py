"""Segments across the months written to the warehouse: sizes per month, one market's path, the
migration between two months, and a month's segments, profiles and moves as CSV.

The ``read_*`` functions query the result tables (``MARKET_SEGMENT``, ``SEGMENT_PROFILE``,
``SEGMENT_FEATURE``, ``SEGMENT_MIGRATION``) through ``warehouse.connect`` with the SQL in
``adapters/sql``; before the first write (no result table) they return an empty frame. They raise
the connector's errors when the warehouse cannot be reached. ``migration_matrix`` and
``export_csv`` are pure. Months are ``YYYY-MM`` strings; segments are labels (``"3"``,
``"unassigned"``, ``report.segment_label``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from include.segmentation.adapters.warehouse import connect, query_frame, render_sql, table_exists
from include.segmentation.config import SegmentationConfig
from include.segmentation.report import segment_label

#: The row and column of a migration matrix for markets not segmented in that month.
NOT_SEGMENTED = "not segmented"
#: What ``read_export`` can produce, and each CSV's columns in order.
EXPORTS = ("segments", "profiles", "moved")


def _month_text(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).dt.strftime("%Y-%m")


def _query(config: SegmentationConfig, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """``sql/<sql>`` rendered for the configured warehouse; an empty frame before the first write."""
    w = config.warehouse
    with connect(w) as conn:
        if not table_exists(conn, w, w.market_segment_table):
            return pd.DataFrame()
        return query_frame(conn, render_sql(sql, w), params or {})


def read_segment_sizes(config: SegmentationConfig) -> pd.DataFrame:
    """Markets per segment in every month written: ``month``, ``segment``, ``n_markets`` (oldest first)."""
    frame = _query(config, "segment_sizes.sql")
    if frame.empty:
        return pd.DataFrame(columns=["month", "segment", "n_markets"])
    return pd.DataFrame(
        {
            "month": _month_text(frame["segment_month"]),
            "segment": [segment_label(v) for v in pd.to_numeric(frame["segment_id"])],
            "n_markets": frame["n_markets"].astype(int),
        }
    )


def read_current_segments(config: SegmentationConfig) -> list[str]:
    """The segment labels of the newest month written, in SegmentID order (``sql/latest_segment_sizes.sql``)."""
    frame = _query(config, "latest_segment_sizes.sql")
    return [] if frame.empty else [segment_label(v) for v in pd.to_numeric(frame["segment_id"])]


def read_market_history(config: SegmentationConfig, market_key: str) -> pd.DataFrame:
    """``market_key``'s segment in every month written: ``month``, ``segment``, ``description`` (its
    segment's that month), ``model_version``, ``run_id``; oldest first, empty when never segmented."""
    frame = _query(config, "market_history.sql", {"market_key": market_key})
    if frame.empty:
        return pd.DataFrame(columns=["month", "segment", "description", "model_version", "run_id"])
    return pd.DataFrame(
        {
            "month": _month_text(frame["segment_month"]),
            "segment": [segment_label(v) for v in pd.to_numeric(frame["segment_id"])],
            "description": frame["description"].fillna("").astype(str),
            "model_version": frame["model_version"].astype(str),
            "run_id": frame["run_id"].astype(str),
        }
    )


def read_month_segments(config: SegmentationConfig, month: str) -> pd.DataFrame:
    """The SegmentID of every market written for ``month``: ``market_key``, ``market_name``,
    ``territory_group``, ``segment``; empty when the month was not written."""
    frame = _query(config, "month_segments.sql", {"segment_month": f"{month}-01"})
    if frame.empty:
        return pd.DataFrame(columns=["market_key", "market_name", "territory_group", "segment"])
    return pd.DataFrame(
        {
            "market_key": frame["market_key"].astype(str),
            "market_name": frame["market_name"].fillna(frame["market_key"]).astype(str),
            "territory_group": frame["territory_group"].fillna("").astype(str),
            "segment": [segment_label(v) for v in pd.to_numeric(frame["segment_id"])],
        }
    )


def find_markets(config: SegmentationConfig, search: str, limit: int = 20, exact: bool = False) -> pd.DataFrame:
    """Markets of the market dimension whose key or name contains ``search`` (case-insensitive; ``exact``:
    whose key is ``search``): ``market_key``, ``market_name``; at most ``limit``. For telling "excluded"
    from "no such market"."""
    w = config.warehouse
    params = {"pattern": f"%{search}%", "key": search if exact else None, "limit": limit}
    with connect(w) as conn:
        return query_frame(conn, render_sql("find_markets.sql", w), params)


def migration_matrix(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """How many markets went from each segment of one month (rows) to each segment of another (columns).

    ``before``/``after``: ``read_month_segments`` frames (``market_key``, ``segment``). A market in
    only one of them counts under ``NOT_SEGMENTED`` in the other. Rows and columns are in SegmentID
    order, ``unassigned`` then ``NOT_SEGMENTED`` last; cells are market counts (int), totals absent.
    """
    joined = pd.merge(
        before[["market_key", "segment"]],
        after[["market_key", "segment"]],
        on="market_key",
        how="outer",
        suffixes=("_before", "_after"),
    ).fillna(NOT_SEGMENTED)
    matrix = pd.crosstab(joined["segment_before"], joined["segment_after"])

    def order(labels: pd.Index) -> list[str]:
        rank = {"unassigned": 1, NOT_SEGMENTED: 2}
        return sorted(labels, key=lambda x: (rank.get(x, 0), int(x) if x not in rank else 0))

    matrix = matrix.reindex(index=order(matrix.index), columns=order(matrix.columns), fill_value=0)
    matrix.index.name, matrix.columns.name = "before", "after"
    return matrix.astype(int)


def read_export(config: SegmentationConfig, month: str, what: str) -> pd.DataFrame:
    """One month as the warehouse holds it, for a CSV download (``what`` in ``EXPORTS``):

    - ``segments``: ``month``, ``market_key``, ``market_name``, ``territory_group``, ``segment_id``
      (empty: unassigned);
    - ``profiles``: ``month``, ``segment_id``, ``n_markets``, ``share`` (0-1), ``description``, then
      every feature of ``SEGMENT_FEATURE`` (static features: segment means, in their units; temporal
      statistics and ``avg_monthly_revenue``: medians);
    - ``moved``: ``month``, ``market_key``, ``market_name``, ``previous_month``, ``previous_segment_id``,
      ``segment_id``: the markets that changed SegmentID.

    Raises ``ValueError`` for another ``what``.
    """
    if what not in EXPORTS:
        raise ValueError(f"export must be one of {', '.join(EXPORTS)}, got {what!r}")
    params = {"segment_month": f"{month}-01"}
    if what == "segments":
        frame = _query(config, "month_segments.sql", params)
        columns = ["market_key", "market_name", "territory_group", "segment_id"]
    elif what == "moved":
        frame = _query(config, "month_moves.sql", params)
        columns = ["market_key", "market_name", "previous_month", "previous_segment_id", "segment_id"]
        if not frame.empty:
            frame["previous_month"] = _month_text(frame["previous_month"])
    else:
        return _profiles_export(config, month, params)
    if frame.empty:
        return pd.DataFrame(columns=["month", *columns])
    out = frame[columns].copy()
    for column in ("segment_id", "previous_segment_id"):
        if column in out:
            out[column] = pd.to_numeric(out[column]).astype("Int64")
    out.insert(0, "month", month)
    return out


def _profiles_export(config: SegmentationConfig, month: str, params: dict[str, str]) -> pd.DataFrame:
    profiles = _query(config, "month_profiles.sql", params)
    columns = ["month", "segment_id", "n_markets", "share", "description"]
    if profiles.empty:
        return pd.DataFrame(columns=columns)
    features = _query(config, "month_features.sql", params)
    out = profiles[["segment_id", "n_markets", "share", "description"]].copy()
    out["segment_id"] = pd.to_numeric(out["segment_id"]).astype("Int64")
    if not features.empty:
        order = list(dict.fromkeys(features["feature"]))
        wide = features.assign(segment_id=pd.to_numeric(features["segment_id"]).astype("Int64")).pivot_table(
            index="segment_id", columns="feature", values="value", dropna=False
        )
        out = out.merge(wide[order], left_on="segment_id", right_index=True, how="left")
    out.insert(0, "month", month)
    return out


def export_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text (comma-separated, header row, no index, full float precision)."""
    return frame.to_csv(index=False)
