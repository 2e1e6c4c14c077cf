import numpy as np
import pytest

from include.segmentation.config import ModelConfig
from include.segmentation.core.autoencoder import TrainedAutoencoder, embed, train_autoencoder

SMALL = ModelConfig(epochs=1, min_steps=150, hidden_dim=16, embedding_dim=8, batch_size=16, cpu_threads=1)


def waves(n=48, seq_len=12, seed=0):
    """Two kinds of series: rising lines and seasonal waves, 2 features, float32."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, seq_len)
    kind = np.arange(n) % 2
    level = np.where(kind[:, None] == 0, 2 * t[None, :] - 1, np.sin(2 * np.pi * t)[None, :])
    x = np.stack([level, -level], axis=-1) + rng.normal(0, 0.05, (n, seq_len, 2))
    return x.astype(np.float32), kind


def test_training_reduces_reconstruction_error_and_respects_min_steps():
    x, _ = waves()
    trained = train_autoencoder(x, SMALL, seed=3)
    # 48 windows / batch 16 = 3 steps per epoch; min_steps=150 forces 50 epochs although epochs=1.
    assert len(trained.losses) == 50
    assert trained.losses[-1] < 0.25 * trained.losses[0]
    assert trained.device == "cpu"


def test_embeddings_have_the_bottleneck_shape_and_separate_the_kinds():
    x, kind = waves()
    trained = train_autoencoder(x, SMALL, seed=3)
    z = embed(trained, x)
    assert z.shape == (48, 8)
    assert z.dtype == np.float32
    centroid_gap = np.linalg.norm(z[kind == 0].mean(0) - z[kind == 1].mean(0))
    spread = max(z[kind == 0].std(0).mean(), z[kind == 1].std(0).mean())
    assert centroid_gap > 3 * spread


def test_same_seed_same_model_and_save_load_round_trip(tmp_path):
    x, _ = waves()
    a = train_autoencoder(x, SMALL, seed=11)
    b = train_autoencoder(x, SMALL, seed=11)
    np.testing.assert_array_equal(embed(a, x), embed(b, x))
    loaded = TrainedAutoencoder.from_bytes(a.to_bytes(), device="cpu")
    np.testing.assert_array_equal(embed(loaded, x), embed(a, x))
    assert loaded.losses == a.losses
    assert loaded.seq_len == 12


def test_bad_inputs_are_refused():
    x, _ = waves()
    with pytest.raises(ValueError, match="non-empty"):
        train_autoencoder(x[:0], SMALL, seed=0)
    bad = x.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        train_autoencoder(bad, SMALL, seed=0)
    trained = train_autoencoder(x[:16], SMALL.model_copy(update={"min_steps": 1}), seed=0)
    with pytest.raises(ValueError, match=r"\(n, 12, 2\)"):
        embed(trained, x[:, :6])


def test_max_steps_bounds_training():
    x, _ = waves()
    # 48 windows / batch 16 = 3 steps per epoch; 4 steps = one full epoch and one step of the next
    trained = train_autoencoder(x, SMALL.model_copy(update={"max_steps": 4}), seed=3)
    assert len(trained.losses) == 2


def test_training_stops_when_the_loss_stops_improving():
    x, _ = waves()
    config = SMALL.model_copy(update={"epochs": 2000, "max_steps": 6000, "patience": 5})
    trained = train_autoencoder(x, config, seed=3)
    assert trained.stop_reason == "converged"
    assert trained.steps < 6000  # well inside the budget
    best_before = min(trained.losses[: -config.patience])
    # no round of the last `patience` improved on the best before them by min_delta (1 %)
    assert min(trained.losses[-config.patience :]) >= best_before * (1 - config.min_delta)
    capped = train_autoencoder(x, config.model_copy(update={"max_steps": 30}), seed=3)
    assert (capped.stop_reason, capped.steps) == ("max_steps", 30)


def test_a_warm_start_continues_from_the_previous_model():
    x, _ = waves()
    previous = train_autoencoder(x, SMALL, seed=3)
    fresh_next = train_autoencoder(x, SMALL.model_copy(update={"epochs": 300}), seed=4)
    warm_next = train_autoencoder(x, SMALL.model_copy(update={"epochs": 300}), seed=4, init=previous)
    assert warm_next.warm_start
    assert not fresh_next.warm_start
    # it starts where the previous model ended, not from scratch, and needs far fewer steps
    assert warm_next.losses[0] < 0.5 * fresh_next.losses[0]
    assert warm_next.steps < fresh_next.steps
    other = SMALL.model_copy(update={"hidden_dim": 8})
    with pytest.raises(ValueError, match="another window length, feature count or architecture"):
        train_autoencoder(x, other, seed=4, init=previous)


def test_collapsed_embeddings_are_detected():
    import torch

    from include.segmentation.core.autoencoder import embedding_spread

    x, _ = waves()
    trained = train_autoencoder(x, SMALL, seed=3)
    assert embedding_spread(embed(trained, x)) > 0.1
    with torch.no_grad():  # an encoder whose output ignores its input: every market embeds alike
        trained.model.to_embedding.weight.zero_()
    assert embedding_spread(embed(trained, x)) < 1e-6  # float32 rounding only, far below the 1e-3 alarm


def test_embedding_does_not_depend_on_the_batch_size():
    x, _ = waves(n=50)
    trained = train_autoencoder(x, SMALL, seed=5)
    whole = embed(trained, x)
    np.testing.assert_allclose(embed(trained, x, batch_size=7), whole, rtol=1e-5, atol=1e-6)
    assert whole.dtype == np.float32
    assert embed(trained, x[:0]).shape == (0, 8)


def test_passive_openmp_is_a_default_not_an_override(monkeypatch):
    import os

    from include.segmentation.core.autoencoder import passive_openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
