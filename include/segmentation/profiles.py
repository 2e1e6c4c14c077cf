"""Segment profiles: what each segment looks like in business terms."""

from __future__ import annotations

import pandas as pd

from include.segmentation.clustering import STATIC_FEATURES


def segment_summary(segments: pd.DataFrame) -> pd.DataFrame:
    """One row per SegmentID: market count, most common territory group, example markets and the
    mean of each static feature (shares and discount as fractions 0-1, LTV in currency).

    ``segments`` has ``segment_id`` (-1 = unassigned), ``market_name``, ``territory_group`` and the
    ``STATIC_FEATURES`` columns. Unassigned markets are summarised as segment ``-1``.
    """
    missing = [c for c in ("segment_id", "market_name", "territory_group", *STATIC_FEATURES) if c not in segments]
    if missing:
        raise ValueError(f"segments frame is missing column(s) {missing}")
    grouped = segments.groupby("segment_id", sort=True)
    summary = grouped[list(STATIC_FEATURES)].mean()
    summary.insert(0, "n_markets", grouped.size())
    summary.insert(
        1, "main_group", grouped["territory_group"].agg(lambda s: s.mode().iat[0] if s.notna().any() else None)
    )
    summary.insert(2, "examples", grouped["market_name"].agg(lambda s: ", ".join(sorted(s.astype(str))[:3])))
    return summary.reset_index()
