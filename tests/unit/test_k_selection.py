"""k selection on generated data: nested structure, minimum segment size, continuity across months."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from include.segmentation.config import ClusterConfig
from include.segmentation.core import clustering as cl
from include.segmentation.core import k_selection as ks


def nested(n=160, seed=0, static_gap=3.0, temporal_gap=1.2):
    """2 static mixes x 2 temporal patterns: the static split is sharper than the temporal one."""
    rng = np.random.default_rng(seed)
    mix, pattern = np.arange(n) % 2, (np.arange(n) // 2) % 2
    static = rng.normal(0, 0.3, (n, 7)) + mix[:, None] * static_gap
    direction = rng.normal(0, 1, 32)
    direction /= np.linalg.norm(direction)
    embedding = rng.normal(0, 0.12, (n, 32)) + np.outer(pattern * temporal_gap, direction)
    return static, embedding, mix * 2 + pattern


def test_nested_structure_finds_both_splits_where_the_silhouette_stops_at_the_coarse_one():
    static, embedding, truth = nested()
    result = cl.cluster_markets(static, embedding, ClusterConfig(), seed=3)
    assert result.n_clusters == 4
    assert adjusted_rand_score(truth, result.labels) == 1.0
    # the old rule (highest silhouette) would have written 2 segments: the static split only
    assert max(result.k_curve, key=result.k_curve.get) == 2
    assert result.k_curve_gap[4] > result.k_curve_gap[2]


def test_a_lone_odd_market_does_not_become_a_segment():
    static, embedding, truth = nested(n=120)
    static[0] += 40.0  # one market far from every other
    result = cl.cluster_markets(static, embedding, ClusterConfig(), seed=1)
    sizes = np.bincount(result.labels)[1:]
    assert sizes.min() >= ks.min_size(120, ClusterConfig().min_segment_share, ClusterConfig().min_segment_size) == 5
    # with singletons allowed it is one: the constraint, not luck, keeps it out
    loose = cl.cluster_markets(static, embedding, ClusterConfig(min_segment_share=0, min_segment_size=1), seed=1)
    assert np.bincount(loose.labels)[1:].min() == 1


def curve_of(gap: dict[int, float], se: float, obtained: tuple[int, ...]) -> ks.KCurve:
    """A hand-made curve: solutions for ``obtained`` k, the gap for every key of ``gap``."""
    return ks.KCurve(
        labels={k: np.arange(20) % k for k in obtained},
        centers={k: np.zeros((k, 1)) for k in obtained},
        smallest={k: 20 // k for k in obtained},
        silhouette={},
        gap=gap,
        gap_se={k: se for k in gap},
        min_size=2,
    )


def test_one_se_rule_stops_where_the_next_k_adds_nothing_beyond_its_error():
    curve = curve_of({1: 0.0, 2: 0.50, 3: 0.70, 4: 0.90, 5: 0.91}, 0.02, (2, 3, 4))
    k, reason = ks.one_se_rule(curve, 4)
    assert k == 4
    assert reason == "gap statistic 1-SE rule: gap(4)=0.900 >= gap(5) - s = 0.890"
    # the look-ahead past k_max collapsed into a smaller k under the minimum size: the largest k stands
    k, reason = ks.one_se_rule(curve_of({1: 0.0, 2: 0.50, 3: 0.70, 4: 0.90}, 0.02, (2, 3, 4)), 4)
    assert k == 4
    assert "largest with every segment >= 2 markets" in reason


def test_a_flat_curve_means_no_structure_and_takes_the_fallback_k():
    # AdventureWorks-like: the gap rises steadily but gap(1) is within one s of gap(2)
    curve = curve_of({1: 0.843, 2: 0.857, 3: 0.902, 4: 0.959, 5: 1.01, 6: 1.014}, 0.029, (2, 3, 4, 5))
    k, reason = ks.one_se_rule(curve, 4)
    assert k == 4
    assert reason.startswith("no clear cluster structure (gap(1)=0.843 >= gap(2) - s = 0.828)")
    assert ks.one_se_rule(curve, 9)[0] == 5  # the nearest k obtained
    # month to month on such a continuum the gap rises with k: last month's k stays
    kept = ks.decide_k(curve, previous_k=3, fallback=4)
    assert (kept.k, kept.best_k) == (3, 4)
    assert kept.reason.startswith("k kept at last month's 3: no clear cluster structure")


def test_merge_small_dissolves_a_lone_market_into_its_nearest_segment():
    x = np.array([[0.0], [0.2], [0.1], [5.0], [5.2], [5.1], [9.0]])
    labels, centers, inertia = ks.merge_small(x, np.array([0, 0, 0, 1, 1, 1, 2]), np.array([[0.1], [5.1], [9.0]]), 2, 0)
    assert len(centers) == 2
    np.testing.assert_array_equal(labels[3:], [labels[3]] * 4)  # 9.0 joined the segment at 5
    assert inertia == pytest.approx(((x[3:] - x[3:].mean()) ** 2).sum() + 0.02)


def test_k_changes_across_months_only_on_evidence():
    curve = curve_of({1: 0.0, 2: 0.50, 3: 0.80, 4: 0.81, 5: 0.79, 6: 0.75}, 0.03, (2, 3, 4, 5))
    assert ks.one_se_rule(curve, 4)[0] == 3
    kept = ks.decide_k(curve, previous_k=4, fallback=4)  # gap(3) is within one s of gap(4): keep 4
    assert (kept.k, kept.best_k) == (4, 3)
    assert kept.reason.startswith("k kept at last month's 4")
    changed = ks.decide_k(curve, previous_k=2, fallback=4)  # gap(3) - 2s = 0.74 > gap(2) = 0.50: new structure
    assert changed.k == 3
    assert changed.reason.startswith("k changed from 2 to 3")
    assert ks.decide_k(curve, previous_k=None, fallback=4).k == 3


def test_unchanged_markets_keep_their_segment_from_last_month():
    static, embedding, truth = nested(seed=5)
    first = cl.cluster_markets(static, embedding, ClusterConfig(), seed=1)
    # next month: the same markets with a little noise; a different seed (as a re-trained model would be)
    rng = np.random.default_rng(9)
    moved_static = static + rng.normal(0, 0.05, static.shape)
    moved_embedding = embedding + rng.normal(0, 0.02, embedding.shape)
    second = cl.cluster_markets(moved_static, moved_embedding, ClusterConfig(), seed=2, previous=first.labels)
    assert second.warm_start
    assert second.previous_k == 4
    assert second.n_clusters == 4
    assert adjusted_rand_score(first.labels, second.labels) == 1.0
    assert "same as last month" in second.k_reason


def test_previous_centers_map_last_months_segments_into_this_space():
    x = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0], [5.0, 5.0]])
    centers, k = cl.previous_centers(x, np.array([3, 3, 7, 7, -1]))
    assert k == 2
    np.testing.assert_allclose(centers, [[0.0, 1.0], [10.0, 1.0]])
    assert cl.previous_centers(x, None) == (None, None)
    assert cl.previous_centers(x, np.array([1, 1, -1, -1, -1])) == (None, None)


def test_size_enters_only_with_its_weight():
    static, embedding, _ = nested(n=40)
    size = np.linspace(8, 14, 40)
    without = cl.hybrid_features(static, embedding, 0.5, size, 0.0)
    assert without.shape == (40, 39)
    weighted = cl.hybrid_features(static, embedding, 0.4, size, 0.2)
    assert weighted.shape == (40, 40)
    np.testing.assert_allclose(weighted.var(axis=0)[7], 0.2)
    np.testing.assert_allclose(weighted[:, 8:].var(axis=0).sum(), 0.4)
    np.testing.assert_allclose(cl.market_size(np.array([0.0, 9.0, -9.0])), [0.0, np.log(10), -np.log(10)])
