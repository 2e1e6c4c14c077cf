"""Choosing the number of segments: the gap statistic, a minimum segment size, and continuity.

Why not the highest silhouette: on nested structure (two static mixes that split sharply, each
holding two temporal patterns that split less sharply) the silhouette peaks at the coarse split
and misses half the segments; measured on planted 2 x 2 and 3 x 3 designs it chose k = 2 every time
(ARI 0.14-0.50). The gap statistic (Tibshirani, Walther & Hastie 2001, "Estimating the number of
clusters in a data set via the gap statistic", JRSS B 63(2)) compares the within-cluster dispersion
``log W_k`` with its expectation under a reference distribution without clusters, and its 1-SE
rule takes the smallest k whose gap is within one standard error of the next k's: on the same
designs it chose the planted k (4 and 9) with ARI 0.97-1.00 (``benchmarks.planted``). Prediction
strength and bootstrap stability were measured too and chose 2 on the 3 x 3 design.

Two constraints make the choice usable by a business:

- **minimum segment size**: a segment smaller than ``ClusterConfig.min_segment_share`` of the
  markets (and never fewer than ``min_segment_size``) is dissolved into its neighbours
  (``merge_small``), so one odd market does not become a segment of its own;
- **continuity**: with last month's segments, k changes only on evidence (``decide_k``).

scikit-learn is imported inside functions so the DAG file can import this package cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: How ``one_se_rule``'s reason starts when the gap statistic finds no cluster structure.
NO_STRUCTURE = "no clear cluster structure"

#: Evidence to change k from last month's: the gap must improve by this many standard errors. s_k
#: counts only the reference draws' noise, not the data's month-to-month noise, so one is too few:
#: on the stationary synthetic warehouse one standard error changed k in 3 of 15 month pairs.
K_CHANGE_SE = 2

#: The gap's reference data: this many uniform draws in the data's principal-axis box.
GAP_REFERENCES = 8


def min_size(n: int, share: float, floor: int) -> int:
    """The smallest admissible segment: ``max(floor, ceil(share * n))`` markets."""
    return max(floor, math.ceil(share * n))


def kmeans(x: np.ndarray, k: int, seed: int, n_init: int = 10):
    """A fitted scikit-learn ``KMeans`` (k-means++ inits, the best of ``n_init``) on ``(n, d)`` ``x``."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)


def gap_statistic(
    x: np.ndarray, inertia: dict[int, float], seed: int, n_references: int = GAP_REFERENCES
) -> tuple[dict[int, float], dict[int, float]]:
    """Gap(k) and its standard error s_k (Tibshirani et al. 2001, eq. 3 and step 3 of section 4).

    ``x`` is ``(n, d)`` float; ``inertia`` maps each k to the within-cluster sum of squares
    ``W_k`` of the data's K-Means (k = 1 is the total sum of squares). The reference data are
    ``n_references`` uniform draws over the box of ``x``'s principal axes (their method "b", which
    follows the data's shape); each is clustered with K-Means at every k (3 inits).
    ``Gap(k) = mean_b log W*_kb - log W_k``; ``s_k = sd_b(log W*_kb) * sqrt(1 + 1/B)``.
    """
    rng = np.random.default_rng(seed)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    rotated = centred @ vt.T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    ref_log_w: dict[int, list[float]] = {k: [] for k in inertia}
    for _ in range(n_references):
        reference = rng.uniform(low, high, size=rotated.shape)
        for k in inertia:
            if k == 1:
                w = float(((reference - reference.mean(axis=0)) ** 2).sum())
            else:
                w = float(kmeans(reference, k, seed, 3).inertia_)
            ref_log_w[k].append(math.log(max(w, 1e-300)))
    gap = {k: float(np.mean(ref_log_w[k]) - math.log(max(inertia[k], 1e-300))) for k in inertia}
    se = {k: float(np.std(ref_log_w[k]) * math.sqrt(1 + 1 / n_references)) for k in inertia}
    return gap, se


def merge_small(
    x: np.ndarray, labels: np.ndarray, centers: np.ndarray, smallest: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Dissolve segments under ``smallest`` markets: ``(labels, centers, inertia)`` with fewer segments.

    ``x`` ``(n, d)``; ``labels`` ``(n,)`` 0..k-1; ``centers`` ``(k, d)``. The smallest segment's
    centroid is dropped and Lloyd's iterations restart from the others (one init), so its markets
    join their nearest segment and the rest settle around them; repeated until every segment has at
    least ``smallest`` markets or one segment is left. An odd market far from all others thus ends
    up in the segment nearest to it instead of in a segment of its own.
    """
    from sklearn.cluster import KMeans

    inertia = float(((x - centers[labels]) ** 2).sum())
    while len(centers) > 1:
        counts = np.bincount(labels, minlength=len(centers))
        if counts.min() >= smallest:
            break
        centers = np.delete(centers, int(counts.argmin()), axis=0)
        model = KMeans(n_clusters=len(centers), init=centers, n_init=1, random_state=seed).fit(x)
        labels, centers, inertia = model.labels_, model.cluster_centers_, float(model.inertia_)
    return labels, centers, inertia


@dataclass
class KCurve:
    """K-Means at every candidate k on one (sample of the) hybrid features, with the figures that judge k.

    Keys are the numbers of segments actually obtained: a K-Means solution with a segment under
    ``min_size`` markets is repaired by ``merge_small`` and counts for the k it then has.
    """

    labels: dict[int, np.ndarray]  # k -> (n,) labels 0..k-1
    centers: dict[int, np.ndarray]  # k -> (k, d) centroids
    smallest: dict[int, int]  # k -> markets in the smallest segment
    silhouette: dict[int, float]
    gap: dict[int, float]  # also k = 1, and the look-ahead past k_max (the 1-SE rule needs it)
    gap_se: dict[int, float]
    min_size: int  # markets a segment needs (on this sample)
    relaxed: bool = False  # no k met the minimum size (a handful of markets): it was not applied


def k_curve(x: np.ndarray, k_min: int, k_max: int, seed: int, share: float, floor: int) -> KCurve:
    """K-Means (10 inits) at every k in ``[k_min, min(k_max, n - 1)]`` and one past it, small segments merged.

    ``x`` is ``(n, d)`` hybrid features; ``share``/``floor``: ``min_size``. For each number of
    segments obtained, the solution with the least within-cluster dispersion is kept, with its
    silhouette (Rousseeuw 1987, for the report) and the gap statistic with its standard error.
    When every solution collapses to one segment under the minimum size (a handful of markets), the
    plain K-Means solutions are kept and ``relaxed`` says so. Raises ``ValueError`` when no k in
    the range is possible (``2 <= k <= n - 1``).
    """
    from include.segmentation.core.clustering import silhouette

    upper = min(k_max, len(x) - 1)
    if upper < max(k_min, 2):
        raise ValueError(f"cannot choose k in [{k_min}, {k_max}] for {len(x)} markets (need 2 <= k <= n - 1)")
    smallest_allowed = min_size(len(x), share, floor)
    labels, centers, inertia = {}, {}, {1: float(((x - x.mean(axis=0)) ** 2).sum())}
    for k in range(max(k_min, 2), min(upper + 1, len(x) - 1) + 1):
        model = kmeans(x, k, seed)
        lab, cen, w = merge_small(x, model.labels_, model.cluster_centers_, smallest_allowed, seed)
        got = len(cen)
        if got >= 2 and (got not in inertia or w < inertia[got]):
            labels[got], centers[got], inertia[got] = lab, cen, w
    relaxed = not centers
    if relaxed:  # a handful of markets: no k keeps every segment at the minimum size, so none is applied
        for k in range(max(k_min, 2), min(upper + 1, len(x) - 1) + 1):
            model = kmeans(x, k, seed)
            labels[k], centers[k], inertia[k] = model.labels_, model.cluster_centers_, float(model.inertia_)
    gap, se = gap_statistic(x, inertia, seed)
    chosen = [k for k in centers if k <= upper]
    return KCurve(
        labels={k: labels[k] for k in chosen},
        centers={k: centers[k] for k in chosen},
        smallest={k: int(np.bincount(labels[k]).min()) for k in chosen},
        silhouette={k: silhouette(x, labels[k], seed) for k in chosen},
        gap=gap,
        gap_se=se,
        min_size=1 if relaxed else smallest_allowed,
        relaxed=relaxed,
    )


@dataclass
class KChoice:
    """The chosen k and why (``decide_k``)."""

    k: int
    reason: str
    best_k: int  # what the 1-SE rule alone chose (before continuity)
    previous_k: int | None = None


def one_se_rule(curve: KCurve, fallback: int) -> tuple[int, str]:
    """The smallest k with ``Gap(k) >= Gap(k') - s_k'`` (Tibshirani et al. 2001), k' the next k obtained.

    The rule starts at k = 1: when ``Gap(1) >= Gap(k') - s_k'`` the data show no cluster structure
    (Tibshirani et al.'s answer would be one cluster). A business still needs segments, so then
    ``fallback`` (``clustering.k_fallback``, or the nearest k obtained) is used and the reason says
    the segments divide a continuum: picking the first local step of a flat, noisy curve instead
    would give a different k for every seed (AdventureWorks 2013-12: 2, 5 and 7 for three seeds).
    When no larger k was obtained, k itself stands; when the gap still rises at the largest k, that
    k. Returns ``(k, reason)``.
    """
    ks = sorted(curve.centers)
    ahead = sorted(curve.gap)
    first = next(j for j in ahead if j > 1)
    if 1 in curve.gap and curve.gap[1] >= curve.gap[first] - curve.gap_se[first]:
        k = min(ks, key=lambda j: (abs(j - fallback), j))
        return k, (
            f"{NO_STRUCTURE} (gap(1)={curve.gap[1]:.3f} >= gap({first}) - s = "
            f"{curve.gap[first] - curve.gap_se[first]:.3f}): k={k} from clustering.k_fallback; the segments divide "
            "a continuum of markets"
        )
    for k in ks:
        nxt = next((j for j in ahead if j > k), None)
        if nxt is None:
            return k, f"gap statistic 1-SE rule: k={k}, the largest with every segment >= {curve.min_size} markets"
        if curve.gap[k] >= curve.gap[nxt] - curve.gap_se[nxt]:
            return k, (
                f"gap statistic 1-SE rule: gap({k})={curve.gap[k]:.3f} >= gap({nxt}) - s = "
                f"{curve.gap[nxt] - curve.gap_se[nxt]:.3f}"
            )
    return ks[-1], f"gap statistic still rising at the largest k obtained, {ks[-1]}"


def decide_k(curve: KCurve, previous_k: int | None, fallback: int) -> KChoice:
    """k for this month: the 1-SE rule's, unless last month's k is as good within the evidence.

    Continuity (a business reads a change of k as "the market changed"): with a previous k that is
    obtained this month, k changes only when the gap says so beyond ``K_CHANGE_SE`` standard
    errors: to a larger k when ``Gap(k_new) - 2 s_new > Gap(k_prev)``, to a smaller one when
    ``Gap(k_new) > Gap(k_prev) + 2 s_prev`` (the extra segments of last month no longer separate).
    Otherwise last month's k is kept and the reason says what the rule alone would have chosen.
    When the data show no cluster structure (``one_se_rule`` falls back), last month's k is kept:
    the gap then rises with every k and says nothing about a change. ``fallback``: see ``one_se_rule``.
    """
    best, why = one_se_rule(curve, fallback)
    if curve.relaxed:
        why += "; no k keeps every segment at the minimum size for so few markets, so none is applied"
    if previous_k is None or previous_k == best:
        reason = why if previous_k is None else f"{why}; same as last month"
        return KChoice(best, reason, best, previous_k)
    if previous_k not in curve.centers:
        return KChoice(
            best, f"k changed from {previous_k}: k={previous_k} is not admissible this month; {why}", best, previous_k
        )
    if why.startswith(NO_STRUCTURE):
        # On a continuum the gap rises with every k: a "better" k is no evidence of a change.
        return KChoice(previous_k, f"k kept at last month's {previous_k}: {why}", best, previous_k)
    g_new, s_new = curve.gap[best], curve.gap_se[best]
    g_prev, s_prev = curve.gap[previous_k], curve.gap_se[previous_k]
    margin = K_CHANGE_SE * (s_new if best > previous_k else s_prev)
    if (best > previous_k and g_new - margin > g_prev) or (best < previous_k and g_new > g_prev + margin):
        return KChoice(
            best,
            f"k changed from {previous_k} to {best}: gap({best})={g_new:.3f} beats gap({previous_k})={g_prev:.3f} "
            f"by more than {K_CHANGE_SE} standard errors; {why}",
            best,
            previous_k,
        )
    return KChoice(
        previous_k,
        f"k kept at last month's {previous_k}: the 1-SE rule prefers {best}, but gap({best})={g_new:.3f} does not "
        f"beat gap({previous_k})={g_prev:.3f} by {K_CHANGE_SE} standard errors",
        best,
        previous_k,
    )
