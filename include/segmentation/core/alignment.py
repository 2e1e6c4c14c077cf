"""Stable SegmentIDs across months: match this month's clusters to last month's segments.

Cluster numbers from K-Means are arbitrary, and centroids cannot be matched across months because
each month's encoder has its own latent space. Markets, however, persist: a cluster that holds most
of last month's segment 3 is segment 3 again. The matching maximises shared markets (Hungarian
algorithm, Kuhn 1955, via ``scipy.optimize.linear_sum_assignment``) on the contingency table of
(new cluster, previous SegmentID).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def align_segment_ids(markets: np.ndarray, labels: np.ndarray, previous: pd.Series, first_new_id: int) -> np.ndarray:
    """Renumber ``labels`` so that clusters continue last month's SegmentIDs where they share markets.

    ``markets`` ``(n,)`` market keys; ``labels`` ``(n,)`` this month's clusters (any ints, -1 =
    unassigned); ``previous`` maps market key -> last month's SegmentID (NaN/-1 = unassigned; may be
    empty). Each previous id goes to at most one cluster: the assignment with the most shared markets
    overall. A cluster sharing no market with any unclaimed previous segment is genuinely new and gets
    ``first_new_id``, ``first_new_id + 1``, ... in order of decreasing size. Returns ``(n,)`` int64
    SegmentIDs (-1 stays -1). Raises ``ValueError`` when ``first_new_id`` could reuse a previous id.
    """
    from scipy.optimize import linear_sum_assignment

    labels = np.asarray(labels)
    prev = pd.to_numeric(pd.Series(previous), errors="coerce")
    prev = prev[prev >= 1].astype("int64")
    if len(prev) and first_new_id <= int(prev.max()):
        raise ValueError(f"first_new_id ({first_new_id}) must exceed every previous SegmentID ({int(prev.max())})")
    clusters = sorted({int(c) for c in labels if c >= 0}, key=lambda c: (-(labels == c).sum(), c))
    prev_ids = sorted(set(prev.tolist()))
    mapping: dict[int, int] = {}
    if clusters and prev_ids:
        prev_of = pd.Series(markets, dtype=object).map(prev).to_numpy()
        overlap = np.zeros((len(clusters), len(prev_ids)), dtype=np.int64)
        for i, c in enumerate(clusters):
            members = prev_of[labels == c]
            for j, p in enumerate(prev_ids):
                overlap[i, j] = int(np.sum(members == p))
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        mapping = {clusters[r]: prev_ids[c] for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0}
    next_id = first_new_id
    for c in clusters:
        if c not in mapping:
            mapping[c] = next_id
            next_id += 1
    return np.array([mapping.get(int(c), -1) if c >= 0 else -1 for c in labels], dtype=np.int64)


def stability(markets: np.ndarray, ids: np.ndarray, previous: pd.Series) -> float:
    """Share (0-1) of markets present in both months whose SegmentID is unchanged; NaN if none overlap."""
    prev = pd.Series(markets, dtype=object).map(pd.to_numeric(pd.Series(previous), errors="coerce"))
    both = prev.notna().to_numpy()
    if not both.any():
        return float("nan")
    return float(np.mean(prev.to_numpy()[both] == ids[both]))
