"""Hybrid clustering: standardized static features + autoencoder embedding, K-Means / DBSCAN / HDBSCAN.

k is chosen by the gap statistic under a minimum segment size, with continuity across months
(``k_selection``). Cost at scale: k is chosen, and the single views are scored, on a seeded sample of at most
``ClusterConfig.selection_sample`` markets; silhouettes on ``SILHOUETTE_SAMPLE``; above
``ClusterConfig.minibatch_threshold`` markets the final K-Means is MiniBatchKMeans started from the
sample's centroids. So only standardisation, the final fit and its labels touch every market, each
linear in their number. Below both sizes every market takes part everywhere, as before.
DBSCAN/HDBSCAN are refused above ``ClusterConfig.density_max_markets``.

scikit-learn is imported inside functions so the DAG file can import this package cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from include.segmentation.config import ClusterConfig
from include.segmentation.core.features import STATIC_FEATURES

#: Above this many points silhouette is computed on a fixed-size random sample (it is O(n^2)).
SILHOUETTE_SAMPLE = 10_000

#: Points per MiniBatchKMeans step (scikit-learn advises at least 256 x cores; larger steps are steadier).
MINIBATCH_SIZE = 4096


def sample_rows(n: int, size: int, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded uniform sample of ``size`` of ``n`` rows; ``None`` when ``n <= size`` (all rows)."""
    if n <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def standardize(x: np.ndarray) -> np.ndarray:
    """Column-wise z-scores of ``(n, d)`` data (``StandardScaler``); constant columns become 0.

    A column whose spread is below 1e-9 of its magnitude counts as constant: identical markets
    whose warehouse ``AVG()`` differs in the last bits must not be split on rounding noise. Raises
    ``ValueError`` naming the column index of NaN/inf input or of values too large to scale.
    """
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=0)
    if bad.any():
        raise ValueError(f"features contain NaN or infinite values in column(s) {np.flatnonzero(bad).tolist()}")
    with np.errstate(over="ignore", invalid="ignore"):
        spread = x.std(axis=0)
    if not np.isfinite(spread).all():
        bad = np.flatnonzero(~np.isfinite(spread)).tolist()
        raise ValueError(f"features too large to standardize in column(s) {bad}")
    z = StandardScaler().fit_transform(x)
    z[:, spread <= 1e-9 * np.maximum(np.abs(x.mean(axis=0)), 1.0)] = 0.0
    return z


def _block(x: np.ndarray, weight: float, shares: np.ndarray | None = None) -> np.ndarray:
    # After standardization a block's total variance equals its number of non-constant columns, so
    # 32 embedding dimensions would outvote 7 static features by count alone. Rescale so the block's
    # total variance is `weight`, whatever its width; inside the block column j holds shares[j] /
    # (sum of the non-constant columns' shares) of it (equal shares: weight / width each).
    z = standardize(x)
    live = z.std(axis=0) > 1e-12
    if not live.any():
        return z
    if shares is None:
        return z * np.sqrt(weight / int(live.sum()))
    shares = np.where(live, np.asarray(shares, dtype=np.float64), 0.0)
    return z * np.sqrt(weight * shares / shares.sum())


def hybrid_features(
    static: np.ndarray,
    embedding: np.ndarray,
    static_weight: float,
    size: np.ndarray | None = None,
    size_weight: float = 0.0,
    feature_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Concatenate the weighted static ``(n, s)``, size ``(n,)`` and embedding ``(n, e)`` blocks.

    Each block is standardized column-wise, then scaled so the static block holds ``static_weight``
    (0-1) of the total variance, the size block ``size_weight`` and the embedding the rest: weights
    are variance shares. ``feature_weights`` ``(s,)`` (> 0; None: equal) split the static block's
    share among its columns in proportion (a constant column gets none). ``size`` is the market size
    on a log scale (``market_size``); without it, or with ``size_weight`` 0, the result is
    ``(n, s + e)``, else ``(n, s + 1 + e)``. Raises ``ValueError`` on mismatched rows, NaN/inf, or
    weights outside [0, 1] or summing past 1.
    """
    if static.shape[0] != embedding.shape[0]:
        raise ValueError(f"static has {static.shape[0]} markets but embedding has {embedding.shape[0]}")
    if not (0.0 <= static_weight <= 1.0 and 0.0 <= size_weight <= 1.0 and static_weight + size_weight <= 1.0):
        raise ValueError(
            f"static_weight ({static_weight}) and size_weight ({size_weight}) must be in [0, 1] with a sum <= 1"
        )
    if feature_weights is not None and (len(feature_weights) != static.shape[1] or min(feature_weights) <= 0):
        raise ValueError(f"feature_weights must be {static.shape[1]} values above 0, got {list(feature_weights)}")
    equal = feature_weights is None or len(set(np.asarray(feature_weights, dtype=np.float64).tolist())) == 1
    blocks = [_block(static, static_weight, None if equal else feature_weights)]
    if size is not None and size_weight > 0:
        if len(size) != len(static):
            raise ValueError(f"static has {static.shape[0]} markets but size has {len(size)}")
        blocks.append(_block(np.asarray(size, dtype=np.float64).reshape(-1, 1), size_weight))
    else:
        size_weight = 0.0
    return np.hstack([*blocks, _block(embedding, 1.0 - static_weight - size_weight)])


def market_size(avg_monthly_revenue: np.ndarray) -> np.ndarray:
    """Market size on a log scale: signed ``log1p`` of the mean monthly net revenue (currency) -> ``(n,)``.

    Sizes span orders of magnitude; on a log scale a market 10 times larger is one step further,
    whatever its size. Raises ``ValueError`` naming the row of a NaN/inf value.
    """
    x = np.asarray(avg_monthly_revenue, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise ValueError(f"avg_monthly_revenue is not finite for {len(bad)} market(s), e.g. row {int(bad[0])}")
    return np.sign(x) * np.log1p(np.abs(x))


def silhouette(x: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Silhouette (Rousseeuw 1987) of ``labels`` on ``x``, ignoring noise (label -1).

    NaN when fewer than two clusters remain or every point is its own cluster. Sampled to
    ``SILHOUETTE_SAMPLE`` points above that size.
    """
    from sklearn.metrics import silhouette_score

    keep = labels >= 0
    x, labels = x[keep], labels[keep]
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(x) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(x, labels, sample_size=sample, random_state=seed))


def _kmeans_model(x: np.ndarray, k: int, seed: int):
    from include.segmentation.core.k_selection import kmeans

    return kmeans(x, k, seed)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    return _kmeans_model(x, k, seed).labels_


#: A warm start from last month's segments is kept while its within-segment sum of squares is at most
#: this much (relative) above a fresh K-Means': continuity is worth a little spread, not a bad optimum.
WARM_TOLERANCE = 0.05


def _fit_from(x: np.ndarray, k: int, seed: int, config: ClusterConfig, centers: np.ndarray) -> np.ndarray:
    # Lloyd's iterations from `centers` alone (one init); MiniBatchKMeans above the threshold.
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) > config.minibatch_threshold:
        model = MiniBatchKMeans(n_clusters=k, init=centers, n_init=1, batch_size=MINIBATCH_SIZE, random_state=seed)
    else:
        model = KMeans(n_clusters=k, init=centers, n_init=1, random_state=seed)
    return model.fit(x).labels_


def _fresh_kmeans(x: np.ndarray, k: int, seed: int, config: ClusterConfig, pick: np.ndarray | None) -> np.ndarray:
    """Labels of a K-Means at a given k on all markets: 10 inits at or below ``minibatch_threshold``
    (as every earlier release); above it, MiniBatchKMeans started from the sample's centroids."""
    if len(x) <= config.minibatch_threshold:
        return _kmeans(x, k, seed)
    return _fit_from(x, k, seed, config, _kmeans_model(x if pick is None else x[pick], k, seed).cluster_centers_)


def _spread(x: np.ndarray, labels: np.ndarray) -> float:
    # Within-segment sum of squares of `labels` 0..k-1 on `x`.
    return float(((x - _centroids(x, labels)[labels]) ** 2).sum())


def _centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # (k, d) means of the rows of each label 0..k-1 (every label present).
    counts = np.bincount(labels)
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, labels, x)
    return sums / counts[:, None]


def previous_centers(
    x: np.ndarray, previous: np.ndarray | None, smallest: int = 1
) -> tuple[np.ndarray | None, int | None]:
    """Last month's segments in this month's feature space: ``((k_prev, d) centroids, k_prev)``.

    ``x`` is ``(n, d)`` hybrid features; ``previous`` ``(n,)`` each market's SegmentID last month
    (< 1: none, e.g. a new market). The centroid of a previous segment is the mean of its markets'
    features now, which maps the segment into this month's space whatever the encoder did. Segments
    with fewer than ``smallest`` markets left this month are not counted. ``(None, None)`` without a
    previous month or when fewer than 2 such segments remain.
    """
    if previous is None:
        return None, None
    previous = np.asarray(previous)
    ids, counts = np.unique(previous[previous >= 1], return_counts=True)
    ids = ids[counts >= smallest]
    if len(ids) < 2:
        return None, None
    return np.stack([x[previous == i].mean(axis=0) for i in ids]), len(ids)


def kdistance_eps(x: np.ndarray, min_samples: int) -> float:
    """DBSCAN ``eps`` from the k-distance curve (Ester et al. 1996): the knee of the sorted distances
    to each point's ``min_samples``-th neighbour, taken as the point farthest from the chord."""
    from sklearn.neighbors import NearestNeighbors

    k = min(min_samples, len(x) - 1)
    dist = np.sort(NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, -1])
    line = dist[0] + (dist[-1] - dist[0]) * np.linspace(0, 1, len(dist))
    eps = float(dist[int(np.argmax(line - dist))])
    return eps if eps > 0 else float(dist[dist > 0].min(initial=1e-6))


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 1..k by decreasing size (ties: first appearance); noise (-1) stays -1.

    Makes SegmentIDs independent of the algorithm's arbitrary numbering.
    """
    out = np.full(len(labels), -1, dtype=np.int64)
    clusters = [c for c in dict.fromkeys(labels.tolist()) if c >= 0]
    sizes = {c: int((labels == c).sum()) for c in clusters}
    for new, c in enumerate(sorted(clusters, key=lambda c: -sizes[c]), start=1):
        out[labels == c] = new
    return out


@dataclass
class ClusterResult:
    """Segment labels (1..k, -1 for noise) and the figures that judge them."""

    labels: np.ndarray  # (n_markets,) int64
    algorithm: str
    n_clusters: int
    noise_fraction: float  # share 0-1 of markets labelled noise
    silhouette_hybrid: float
    silhouette_lstm: float
    silhouette_static: float
    k_curve: dict[int, float] = field(default_factory=dict)  # silhouette per k (when k was chosen)
    k_curve_gap: dict[int, float] = field(default_factory=dict)  # gap statistic per k (k_selection)
    k_curve_gap_se: dict[int, float] = field(default_factory=dict)
    k_reason: str = ""  # why this k (the rule, continuity, or n_clusters)
    previous_k: int | None = None  # last month's number of segments among these markets
    warm_start: bool = False  # the final K-Means started from last month's segments
    eps: float | None = None


def _check_markets(static: np.ndarray, n: int, config: ClusterConfig, names: tuple[str, ...]) -> None:
    # Refuse what cannot be segmented before any work: too few markets, a density algorithm at a
    # size where it would run for hours, static features that cannot be standardized (named).
    if n < 3:
        raise ValueError(f"clustering needs at least 3 markets, got {n}")
    if config.algorithm != "kmeans" and n > config.density_max_markets:
        raise ValueError(
            f"{config.algorithm} on {n:,} markets is refused: above clustering.density_max_markets "
            f"({config.density_max_markets:,}) its neighbour search grows about quadratically with the number of "
            "markets (hours at a million). Use algorithm kmeans (MiniBatchKMeans at this size), or raise "
            "density_max_markets knowingly"
        )
    if static.shape[1] == len(names):
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(static).all(axis=0) & np.isfinite(static.std(axis=0))
        bad = [name for name, fine in zip(names, ok, strict=True) if not fine]
        if bad:
            raise ValueError(f"static feature(s) {bad} contain NaN, infinite or too large values")


def _requested_k(
    hybrid: np.ndarray, config: ClusterConfig, seed: int, pick: np.ndarray | None, result: ClusterResult
) -> tuple[int, np.ndarray, int]:
    # k set by n_clusters: (k, fresh labels, smallest segment kept). A k the user asked for is kept,
    # whatever the segment sizes, so the smallest allowed segment is 1.
    n = len(hybrid)
    if not 2 <= config.n_clusters <= n - 1:
        raise ValueError(f"n_clusters={config.n_clusters} is invalid for {n} markets (need 2 <= k <= n - 1)")
    k, result.k_reason = config.n_clusters, f"set by n_clusters={config.n_clusters}"
    return k, _fresh_kmeans(hybrid, k, seed, config, pick), 1


def _selected_k(
    hybrid: np.ndarray,
    config: ClusterConfig,
    seed: int,
    pick: np.ndarray | None,
    result: ClusterResult,
    smallest: int,
) -> tuple[int, np.ndarray, int]:
    # k chosen by the gap statistic on the (sampled) markets: (k, fresh labels, smallest segment kept).
    from include.segmentation.core.k_selection import decide_k, k_curve

    sample = hybrid if pick is None else hybrid[pick]
    curve = k_curve(sample, config.k_min, config.k_max, seed, config.min_segment_share, config.min_segment_size)
    choice = decide_k(curve, result.previous_k, config.k_fallback)
    smallest = 1 if curve.relaxed else smallest
    k, result.k_reason = choice.k, choice.reason
    result.k_curve, result.k_curve_gap, result.k_curve_gap_se = curve.silhouette, curve.gap, curve.gap_se
    # the selection ran on every market: its solution is the fresh one
    raw = curve.labels[k] if pick is None else _fit_from(hybrid, k, seed, config, curve.centers[k])
    return k, raw, smallest


def _warm_or_fresh(
    hybrid: np.ndarray,
    raw: np.ndarray,
    k: int,
    seed: int,
    config: ClusterConfig,
    warm_centers: np.ndarray,
    smallest: int,
    result: ClusterResult,
) -> np.ndarray:
    # K-Means from last month's segments, kept when its segments are big enough and its spread is
    # within WARM_TOLERANCE of the fresh labels `raw`: continuity is worth a little spread, not more.
    warm = _fit_from(hybrid, k, seed, config, warm_centers)
    counts = np.bincount(warm, minlength=k)
    excess = _spread(hybrid, warm) / max(_spread(hybrid, raw), 1e-300) - 1.0
    if counts.min() >= smallest and excess <= WARM_TOLERANCE:
        result.warm_start = True
        return warm
    result.k_reason += (
        f"; last month's segments no longer fit (started from them, K-Means ends {excess:+.0%} in "
        f"within-segment spread, smallest segment {counts.min()} markets): fresh centres used"
    )
    return raw


def _kmeans_segments(
    hybrid: np.ndarray,
    config: ClusterConfig,
    seed: int,
    pick: np.ndarray | None,
    previous: np.ndarray | None,
    result: ClusterResult,
) -> np.ndarray:
    # K-Means labels 0..k-1: k requested or selected, a warm start when k is last month's, and
    # segments under the minimum size merged into their neighbours.
    from include.segmentation.core.k_selection import merge_small, min_size

    smallest = min_size(len(hybrid), config.min_segment_share, config.min_segment_size)
    warm_centers, result.previous_k = previous_centers(hybrid, previous, smallest)
    if config.n_clusters is not None:
        k, raw, smallest = _requested_k(hybrid, config, seed, pick, result)
    else:
        k, raw, smallest = _selected_k(hybrid, config, seed, pick, result, smallest)
    if warm_centers is not None and k == result.previous_k:
        raw = _warm_or_fresh(hybrid, raw, k, seed, config, warm_centers, smallest, result)
    if np.bincount(raw).min() < smallest:
        raw, _, _ = merge_small(hybrid, raw, _centroids(hybrid, raw), smallest, seed)
        result.k_reason += f"; segments under {smallest} markets merged into their neighbours"
    return raw


def _density_segments(hybrid: np.ndarray, config: ClusterConfig, result: ClusterResult) -> np.ndarray:
    # DBSCAN (eps from the configuration or the k-distance knee) or HDBSCAN labels; -1 is noise.
    from sklearn.cluster import DBSCAN, HDBSCAN

    if config.algorithm == "dbscan":
        result.eps = config.dbscan_eps or kdistance_eps(hybrid, config.min_samples)
        return DBSCAN(eps=result.eps, min_samples=config.min_samples).fit_predict(hybrid)
    return HDBSCAN(min_cluster_size=max(config.min_samples, 2), copy=True).fit_predict(hybrid)


def _view_score(view: np.ndarray, pick: np.ndarray | None, k_final: int, seed: int) -> float:
    # Silhouette of a single view (static or embedding) clustered on its own at the final k, on the
    # same sample as k selection, so the views are compared with the hybrid at equal k.
    view = view if pick is None else view[pick]
    if not 2 <= k_final <= len(view) - 1:
        return float("nan")
    return silhouette(view, _kmeans(view, k_final, seed), seed)


def cluster_markets(
    static: np.ndarray,
    embedding: np.ndarray,
    config: ClusterConfig,
    seed: int,
    size: np.ndarray | None = None,
    previous: np.ndarray | None = None,
    feature_weights: np.ndarray | None = None,
    names: tuple[str, ...] = STATIC_FEATURES,
) -> ClusterResult:
    """Cluster markets on hybrid features and score the hybrid, LSTM-only and static-only views.

    ``static`` is ``(n_markets, len(names))`` (the clustered static features, named ``names``),
    ``embedding`` ``(n_markets, embedding_dim)``, ``size`` ``(n_markets,)`` log market size
    (``market_size``; weighed by ``config.size_weight``), ``previous`` ``(n_markets,)`` last month's
    SegmentID per market (< 1: none), ``feature_weights`` ``(len(names),)`` the features' relative
    weights inside the static block (``hybrid_features``).

    K-Means: k by the gap statistic's 1-SE rule among the k whose segments all hold at least
    ``min_segment_share`` of the markets, and with a previous month, kept unless the gap says
    otherwise (``k_selection``); when k equals last month's, the final K-Means starts from last
    month's segments (their centroids in this month's space), so unchanged behaviour keeps its
    segment. The views are compared at the same k: K-Means with the final number of clusters on the
    standardized static block alone and on the embedding alone, silhouette in each view's own space.
    Above ``config.selection_sample`` markets, k is chosen and the views are scored on a seeded
    sample of that size; above ``config.minibatch_threshold`` the final K-Means is MiniBatchKMeans
    (see the module docstring). Raises ``ValueError`` for fewer than 3 markets, a requested k outside
    ``2 <= k <= n - 1``, or DBSCAN/HDBSCAN on more than ``config.density_max_markets`` markets.
    """
    from include.segmentation.core.autoencoder import passive_openmp

    passive_openmp()  # before scikit-learn's OpenMP runtime starts (see its docstring)
    n = len(static)
    _check_markets(static, n, config, names)
    hybrid = hybrid_features(static, embedding, config.static_weight, size, config.size_weight, feature_weights)
    if not hybrid.any():
        raise ValueError(f"all {n} markets have identical features: there is nothing to segment")
    result = ClusterResult(
        labels=np.empty(0, dtype=np.int64),
        algorithm=config.algorithm,
        n_clusters=0,
        noise_fraction=0.0,
        silhouette_hybrid=float("nan"),
        silhouette_lstm=float("nan"),
        silhouette_static=float("nan"),
    )
    pick = sample_rows(n, config.selection_sample, seed)  # None: every market takes part
    if config.algorithm == "kmeans":
        raw = _kmeans_segments(hybrid, config, seed, pick, previous, result)
    else:
        raw = _density_segments(hybrid, config, result)
    labels = relabel_by_size(raw)
    k_final = int(labels.max()) if (labels > 0).any() else 0
    result.labels, result.n_clusters = labels, k_final
    result.noise_fraction = float((labels < 0).mean())
    result.silhouette_hybrid = silhouette(hybrid, labels, seed)
    result.silhouette_lstm = _view_score(standardize(embedding), pick, k_final, seed)
    result.silhouette_static = _view_score(standardize(static), pick, k_final, seed)
    return result
