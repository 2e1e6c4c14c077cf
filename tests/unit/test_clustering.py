import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from include.segmentation.config import ClusterConfig
from include.segmentation.core import clustering as cl


def blobs(n_per=20, seed=0):
    """Three planted groups, separated in both views: static (7 columns) and embedding (32)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1, 2], n_per)
    static = rng.normal(0, 0.1, (3 * n_per, 7)) + truth[:, None] * 1.0
    static[:, 4] = static[:, 4] * 1000 + 5000  # a currency column on a different scale
    embedding = rng.normal(0, 0.1, (3 * n_per, 32)) + (truth[:, None] == np.arange(32)[None, :] % 3) * 1.0
    return static, embedding, truth


def test_kmeans_recovers_planted_segments_and_picks_k():
    static, embedding, truth = blobs()
    result = cl.cluster_markets(static, embedding, ClusterConfig(), seed=1)
    assert result.n_clusters == 3
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert set(result.labels.tolist()) == {1, 2, 3}
    assert result.k_curve[3] == max(result.k_curve.values())
    # the gap statistic peaks at the planted k too, and the reason names the rule
    assert max(result.k_curve_gap, key=result.k_curve_gap.get) == 3
    assert result.k_reason.startswith("gap statistic 1-SE rule: gap(3)=")
    assert result.previous_k is None
    assert not result.warm_start
    for score in (result.silhouette_hybrid, result.silhouette_lstm, result.silhouette_static):
        assert 0.5 < score <= 1.0


def test_block_weights_give_each_block_its_variance_share():
    static, embedding, _ = blobs()
    hybrid = cl.hybrid_features(static, embedding, static_weight=0.3)
    assert hybrid.shape == (60, 39)
    np.testing.assert_allclose(hybrid[:, :7].var(axis=0).sum(), 0.3, rtol=1e-9)
    np.testing.assert_allclose(hybrid[:, 7:].var(axis=0).sum(), 0.7, rtol=1e-9)


def test_an_unscaled_currency_column_cannot_take_over():
    static, embedding, truth = blobs()
    rng = np.random.default_rng(5)
    static[:, 4] = rng.lognormal(12, 2, len(static))  # huge, pure noise, unrelated to the groups
    hybrid = cl.hybrid_features(static, embedding, static_weight=0.5)
    assert hybrid[:, 4].var() == pytest.approx(0.5 / 7)  # one column of seven in its block
    result = cl.cluster_markets(static, embedding, ClusterConfig(n_clusters=3), seed=1)
    assert adjusted_rand_score(truth, result.labels) == 1.0


def test_relabel_by_size_orders_segments():
    labels = np.array([5, 5, 0, 0, 0, -1, 7])
    np.testing.assert_array_equal(cl.relabel_by_size(labels), [2, 2, 1, 1, 1, -1, 3])


def test_k_curve_respects_n_minus_one():
    from include.segmentation.core.k_selection import k_curve

    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    curve = k_curve(x, 2, 10, seed=0, share=0.0, floor=1)
    assert sorted(curve.silhouette) == [2, 3]
    assert sorted(curve.gap) == [1, 2, 3]  # k = 1 and the look-ahead, never past n - 1


def test_too_few_markets_and_bad_k_are_refused():
    static, embedding, _ = blobs(n_per=1)
    with pytest.raises(ValueError, match="n_clusters=3 is invalid for 3 markets"):
        cl.cluster_markets(static, embedding, ClusterConfig(n_clusters=3), seed=0)
    with pytest.raises(ValueError, match="at least 3 markets, got 2"):
        cl.cluster_markets(static[:2], embedding[:2], ClusterConfig(), seed=0)


def test_dbscan_marks_noise_and_excludes_it_from_silhouette():
    static, embedding, truth = blobs()
    static = np.vstack([static, np.full((1, 7), 40.0)])  # one far outlier
    embedding = np.vstack([embedding, np.full((1, 32), 40.0)])
    result = cl.cluster_markets(static, embedding, ClusterConfig(algorithm="dbscan"), seed=0)
    assert result.labels[-1] == -1
    assert result.noise_fraction == pytest.approx(1 / 61)
    assert result.n_clusters == 3
    assert adjusted_rand_score(truth, result.labels[:-1]) == 1.0
    assert result.eps is not None
    assert result.eps > 0
    assert np.isfinite(result.silhouette_hybrid)


def test_hdbscan_finds_the_planted_groups():
    static, embedding, truth = blobs()
    result = cl.cluster_markets(static, embedding, ClusterConfig(algorithm="hdbscan"), seed=0)
    assert result.n_clusters == 3
    assert adjusted_rand_score(truth[result.labels > 0], result.labels[result.labels > 0]) == 1.0


def test_nan_features_are_refused():
    static, embedding, _ = blobs()
    static[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cl.hybrid_features(static, embedding, 0.5)


def test_identical_markets_are_not_split_on_rounding_noise():
    static = np.tile([0.1, 0.2, 0.3, 0.4, 3383.5657625189728, 4.0, 20.0], (6, 1))
    static[::2, 4] = np.nextafter(static[::2, 4], np.inf)  # a warehouse AVG() differing in the last bit
    embedding = np.ones((6, 32))
    with pytest.raises(ValueError, match="all 6 markets have identical features"):
        cl.cluster_markets(static, embedding, ClusterConfig(n_clusters=2), seed=0)


def test_values_too_large_to_scale_are_named():
    x = np.array([[1.0, 1e300], [2.0, -1e300], [3.0, 1e300]])
    with pytest.raises(ValueError, match=r"too large to standardize in column\(s\) \[1\]"):
        cl.standardize(x)


def test_non_finite_static_feature_is_named():
    static, embedding, _ = blobs()
    static[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"\['avg_ltv'\]"):
        cl.cluster_markets(static, embedding, ClusterConfig(), seed=0)


def test_small_warehouses_keep_the_full_kmeans_path():
    """Below selection_sample and minibatch_threshold every market takes part, exactly as before:
    KMeans with 10 inits on all markets for each k and for the final labels."""
    from sklearn.cluster import KMeans

    static, embedding, _ = blobs()
    config = ClusterConfig()
    result = cl.cluster_markets(static, embedding, config, seed=4)
    hybrid = cl.hybrid_features(static, embedding, config.static_weight)
    k = result.n_clusters
    expected = cl.relabel_by_size(KMeans(n_clusters=k, n_init=10, random_state=4).fit_predict(hybrid))
    np.testing.assert_array_equal(result.labels, expected)
    view = cl.standardize(static)
    assert result.silhouette_static == cl.silhouette(view, KMeans(k, n_init=10, random_state=4).fit_predict(view), 4)


def test_large_warehouses_choose_k_on_a_sample_and_fit_minibatch_kmeans(monkeypatch):
    static, embedding, truth = blobs(n_per=1000)
    fitted = []
    full_fit = cl._kmeans_model
    monkeypatch.setattr(cl, "_kmeans_model", lambda x, k, seed: fitted.append(len(x)) or full_fit(x, k, seed))
    config = ClusterConfig(selection_sample=300, minibatch_threshold=1000)
    result = cl.cluster_markets(static, embedding, config, seed=2)
    assert fitted
    assert max(fitted) == 300  # every KMeans (k curve, views) ran on the sample; the final fit is MiniBatch
    assert result.n_clusters == 3
    assert sorted(result.k_curve) == list(range(2, 11))
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert 0.5 < result.silhouette_lstm <= 1.0
    assert 0.5 < result.silhouette_static <= 1.0


def test_a_given_k_above_the_threshold_starts_minibatch_from_the_sample():
    static, embedding, truth = blobs(n_per=1000)
    config = ClusterConfig(n_clusters=3, selection_sample=300, minibatch_threshold=1000)
    result = cl.cluster_markets(static, embedding, config, seed=0)
    assert result.k_curve == {}
    assert adjusted_rand_score(truth, result.labels) == 1.0


def test_k_on_a_sample_is_seeded():
    static, embedding, _ = blobs(n_per=200)
    config = ClusterConfig(selection_sample=100, k_max=5)
    first = cl.cluster_markets(static, embedding, config, seed=1)
    again = cl.cluster_markets(static, embedding, config, seed=1)
    assert (first.n_clusters, first.k_curve_gap) == (3, again.k_curve_gap)
    assert len(cl.sample_rows(600, 100, seed=1)) == 100
    assert cl.sample_rows(600, 600, seed=1) is None


@pytest.mark.parametrize("algorithm", ["dbscan", "hdbscan"])
def test_density_clustering_is_refused_above_its_size_limit(algorithm):
    static, embedding, _ = blobs(n_per=50)
    with pytest.raises(ValueError, match=rf"{algorithm} on 150 markets is refused.*density_max_markets \(100\)"):
        cl.cluster_markets(static, embedding, ClusterConfig(algorithm=algorithm, density_max_markets=100), seed=0)


def test_feature_weights_are_variance_shares_inside_the_static_block():
    rng = np.random.default_rng(3)
    static, embedding = rng.normal(size=(200, 3)) * [1.0, 50.0, 0.01], rng.normal(size=(200, 4))
    x = cl.hybrid_features(static, embedding, static_weight=0.6, feature_weights=np.array([3.0, 1.0, 2.0]))
    variance = x.var(axis=0)
    assert variance[:3] == pytest.approx([0.3, 0.1, 0.2])  # 0.6 split 3:1:2, whatever the raw scales
    assert variance[3:].sum() == pytest.approx(0.4)
    # equal weights are exactly the unweighted block
    same = cl.hybrid_features(static, embedding, 0.6, feature_weights=np.array([2.0, 2.0, 2.0]))
    assert np.array_equal(same, cl.hybrid_features(static, embedding, 0.6))
    with pytest.raises(ValueError, match="feature_weights must be 3 values above 0"):
        cl.hybrid_features(static, embedding, 0.6, feature_weights=np.array([1.0, 0.0, 1.0]))
