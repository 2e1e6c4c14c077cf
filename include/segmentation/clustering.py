"""Hybrid clustering: standardized static features + autoencoder embedding, K-Means / DBSCAN / HDBSCAN.

Cost at scale: k is chosen, and the single views are scored, on a seeded sample of at most
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

#: Static features from ``sql/static_features.sql``: discount rate (0-1), loyalty shares (0-1),
#: average customer lifetime value (currency), distinct product lines and subcategories (counts).
STATIC_FEATURES = (
    "avg_discount",
    "platinum_share",
    "gold_share",
    "silver_share",
    "avg_ltv",
    "total_product_lines",
    "total_subcategories",
)

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


def _block(x: np.ndarray, weight: float) -> np.ndarray:
    # After standardization a block's total variance equals its number of non-constant columns, so
    # 32 embedding dimensions would outvote 7 static features by count alone. Rescale so the block's
    # total variance is `weight`, whatever its width.
    z = standardize(x)
    width = int((z.std(axis=0) > 1e-12).sum())
    return z * np.sqrt(weight / width) if width else z


def hybrid_features(static: np.ndarray, embedding: np.ndarray, static_weight: float) -> np.ndarray:
    """Concatenate the weighted static block ``(n, s)`` and embedding block ``(n, e)`` -> ``(n, s + e)``.

    Each block is standardized column-wise, then scaled so the static block holds ``static_weight``
    (0-1) of the total variance and the embedding the rest. Raises ``ValueError`` on mismatched rows,
    NaN/inf, or a weight outside [0, 1].
    """
    if static.shape[0] != embedding.shape[0]:
        raise ValueError(f"static has {static.shape[0]} markets but embedding has {embedding.shape[0]}")
    if not 0.0 <= static_weight <= 1.0:
        raise ValueError(f"static_weight must be in [0, 1], got {static_weight}")
    return np.hstack([_block(static, static_weight), _block(embedding, 1.0 - static_weight)])


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
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    return _kmeans_model(x, k, seed).labels_


def _k_curve(
    x: np.ndarray, k_min: int, k_max: int, seed: int
) -> tuple[int, dict[int, float], dict[int, float], dict[int, np.ndarray]]:
    from sklearn.metrics import calinski_harabasz_score

    upper = min(k_max, len(x) - 1)
    if upper < max(k_min, 2):
        raise ValueError(f"cannot choose k in [{k_min}, {k_max}] for {len(x)} markets (need 2 <= k <= n - 1)")
    curve, alternative, centers = {}, {}, {}
    for k in range(max(k_min, 2), upper + 1):
        model = _kmeans_model(x, k, seed)
        labels = model.labels_
        curve[k] = silhouette(x, labels, seed)
        alternative[k] = float(calinski_harabasz_score(x, labels)) if len(set(labels)) > 1 else float("nan")
        centers[k] = model.cluster_centers_
    best = max(curve, key=lambda k: (np.nan_to_num(curve[k], nan=-2.0), -k))
    return best, curve, alternative, centers


def choose_k(
    x: np.ndarray, k_min: int, k_max: int, seed: int, sample: int | None = None
) -> tuple[int, dict[int, float], dict[int, float]]:
    """Pick k in ``[k_min, min(k_max, n - 1)]`` with the highest K-Means silhouette.

    Returns ``(k, {k: silhouette}, {k: Calinski-Harabasz})``: the second curve (Calinski & Harabasz
    1974, between- over within-cluster dispersion) is recorded as an alternative criterion, not
    used to choose. With ``sample``, both curves come from a seeded random sample of at most that
    many rows (``sample_rows``), so the cost does not grow with the number of markets. Raises
    ``ValueError`` when fewer than 3 markets make every k invalid (silhouette needs 2 <= k <= n - 1).
    """
    pick = sample_rows(len(x), sample, seed) if sample is not None else None
    best, curve, alternative, _ = _k_curve(x if pick is None else x[pick], k_min, k_max, seed)
    return best, curve, alternative


def _final_kmeans(
    x: np.ndarray, k: int, seed: int, config: ClusterConfig, pick: np.ndarray | None, centers: np.ndarray | None
) -> np.ndarray:
    # At or below the threshold: exactly the K-Means of every earlier release (10 inits on all points).
    if len(x) <= config.minibatch_threshold:
        return _kmeans(x, k, seed)
    from sklearn.cluster import MiniBatchKMeans

    if centers is None:  # k was given: the sample's K-Means centroids start the mini-batches
        centers = _kmeans_model(x if pick is None else x[pick], k, seed).cluster_centers_
    model = MiniBatchKMeans(n_clusters=k, init=centers, n_init=1, batch_size=MINIBATCH_SIZE, random_state=seed)
    return model.fit(x).labels_


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
    k_curve_calinski_harabasz: dict[int, float] = field(default_factory=dict)
    eps: float | None = None


def cluster_markets(static: np.ndarray, embedding: np.ndarray, config: ClusterConfig, seed: int) -> ClusterResult:
    """Cluster markets on hybrid features and score the hybrid, LSTM-only and static-only views.

    ``static`` is ``(n_markets, len(STATIC_FEATURES))``, ``embedding`` ``(n_markets, embedding_dim)``.
    The views are compared at the same k: K-Means with the final number of clusters on the
    standardized static block alone and on the embedding alone, silhouette in each view's own space.
    Above ``config.selection_sample`` markets, k is chosen and the views are scored on a seeded
    sample of that size; above ``config.minibatch_threshold`` the final K-Means is MiniBatchKMeans
    (see the module docstring). Raises ``ValueError`` for fewer than 3 markets, a requested k outside
    ``2 <= k <= n - 1``, or DBSCAN/HDBSCAN on more than ``config.density_max_markets`` markets.
    """
    from include.segmentation.autoencoder import passive_openmp

    passive_openmp()  # before scikit-learn's OpenMP runtime starts (see its docstring)
    from sklearn.cluster import DBSCAN, HDBSCAN

    n = len(static)
    if n < 3:
        raise ValueError(f"clustering needs at least 3 markets, got {n}")
    if config.algorithm != "kmeans" and n > config.density_max_markets:
        raise ValueError(
            f"{config.algorithm} on {n:,} markets is refused: above clustering.density_max_markets "
            f"({config.density_max_markets:,}) its neighbour search grows about quadratically with the number of "
            "markets (hours at a million). Use algorithm kmeans (MiniBatchKMeans at this size), or raise "
            "density_max_markets knowingly"
        )
    if static.shape[1] == len(STATIC_FEATURES):
        with np.errstate(over="ignore", invalid="ignore"):
            ok = np.isfinite(static).all(axis=0) & np.isfinite(static.std(axis=0))
        bad = [name for name, fine in zip(STATIC_FEATURES, ok, strict=True) if not fine]
        if bad:
            raise ValueError(f"static feature(s) {bad} contain NaN, infinite or too large values")
    hybrid = hybrid_features(static, embedding, config.static_weight)
    if not hybrid.any():
        raise ValueError(f"all {n} markets have identical features: there is nothing to segment")
    curve: dict[int, float] = {}
    alternative: dict[int, float] = {}
    eps = None
    pick = sample_rows(n, config.selection_sample, seed)  # None: every market takes part
    if config.algorithm == "kmeans":
        centers = None
        if config.n_clusters is not None:
            if not 2 <= config.n_clusters <= n - 1:
                raise ValueError(f"n_clusters={config.n_clusters} is invalid for {n} markets (need 2 <= k <= n - 1)")
            k = config.n_clusters
        else:
            sample = hybrid if pick is None else hybrid[pick]
            k, curve, alternative, all_centers = _k_curve(sample, config.k_min, config.k_max, seed)
            centers = all_centers[k]
        raw = _final_kmeans(hybrid, k, seed, config, pick, centers)
    elif config.algorithm == "dbscan":
        eps = config.dbscan_eps or kdistance_eps(hybrid, config.min_samples)
        raw = DBSCAN(eps=eps, min_samples=config.min_samples).fit_predict(hybrid)
    else:
        raw = HDBSCAN(min_cluster_size=max(config.min_samples, 2), copy=True).fit_predict(hybrid)
    labels = relabel_by_size(raw)
    k_final = int(labels.max()) if (labels > 0).any() else 0

    def view_score(view: np.ndarray) -> float:
        view = view if pick is None else view[pick]
        if not 2 <= k_final <= len(view) - 1:
            return float("nan")
        return silhouette(view, _kmeans(view, k_final, seed), seed)

    return ClusterResult(
        labels=labels,
        algorithm=config.algorithm,
        n_clusters=k_final,
        noise_fraction=float((labels < 0).mean()),
        silhouette_hybrid=silhouette(hybrid, labels, seed),
        silhouette_lstm=view_score(standardize(embedding)),
        silhouette_static=view_score(standardize(static)),
        k_curve=curve,
        k_curve_calinski_harabasz=alternative,
        eps=eps,
    )
