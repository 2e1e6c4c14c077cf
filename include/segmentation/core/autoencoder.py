"""LSTM autoencoder: compress a market's monthly window into a fixed-size embedding.

torch is imported inside functions only, so importing this module (e.g. while Airflow parses the
DAG, or in a forked Celery worker) never initialises torch or CUDA.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from include.segmentation.config import ModelConfig

log = logging.getLogger(__name__)


def _build_model(n_features: int, hidden_dim: int, embedding_dim: int, num_layers: int):
    from torch import nn

    class LSTMAutoencoder(nn.Module):
        """Encoder LSTM -> linear bottleneck (the embedding) -> repeated -> decoder LSTM -> features.

        The sequence-to-sequence autoencoder of Srivastava et al. (2015, "Unsupervised Learning of
        Video Representations using LSTMs"), with the final hidden state projected to the embedding.
        """

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.LSTM(n_features, hidden_dim, num_layers, batch_first=True)
            self.to_embedding = nn.Linear(hidden_dim, embedding_dim)
            self.from_embedding = nn.Linear(embedding_dim, hidden_dim)
            self.decoder = nn.LSTM(hidden_dim, hidden_dim, num_layers, batch_first=True)
            self.to_features = nn.Linear(hidden_dim, n_features)

        def encode(self, x: torch.Tensor) -> torch.Tensor:  # (n, seq_len, f) -> (n, embedding_dim)
            _, (h, _) = self.encoder(x)
            return self.to_embedding(h[-1])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.encode(x)
            h = self.from_embedding(z).unsqueeze(1).expand(-1, x.shape[1], -1)
            out, _ = self.decoder(h)
            return self.to_features(out)

    return LSTMAutoencoder()


def pick_device(prefer: str | None = None) -> str:
    """``'cuda'`` when a GPU is visible to this process, else ``'cpu'`` (or ``prefer`` if given)."""
    import torch

    if prefer:
        return prefer
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_threads(configured: int | None) -> int:
    # Set explicitly: on a 2-core worker, torch's default under contention was measured 6x slower
    # than one thread. sched_getaffinity honours the cores a container or cgroup gives us.
    return configured or max(1, len(os.sched_getaffinity(0)))


def passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless set already.

    torch and scikit-learn run their CPU kernels on OpenMP threads, which by default spin between
    parallel regions; when other processes share the cores (other Airflow tasks on a worker), the
    spinning threads take turns with the ones doing the work. Encoding and clustering call this
    before torch / scikit-learn start their runtime in the process (it has no effect afterwards):
    their parallel regions are large, so sleeping costs nothing on a quiet machine (measured, 2 cores:
    encoding, K-Means and silhouette equal or faster) and helps a lot on a busy one (clustering 300
    markets: 15 s -> 2.5 s at a load of 6). Training does not: its 64-window steps are many tiny
    parallel regions, and waking sleeping threads for each made it 3.5x slower on a quiet machine (see
    ``ModelConfig.cpu_threads`` for shared machines). A value set in the environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class TrainedAutoencoder:
    """A trained model and what is needed to reuse it (saved with ``save``, read with ``load``)."""

    model: object  # the torch module
    n_features: int
    seq_len: int
    hidden_dim: int
    embedding_dim: int
    num_layers: int
    losses: list[float] = field(default_factory=list)  # mean reconstruction MSE per round (train_autoencoder)
    val_losses: list[float] = field(default_factory=list)  # held-out markets' MSE per round (may be empty)
    device: str = "cpu"
    steps: int = 0  # optimizer steps taken
    stop_reason: str = ""  # "converged", "max_steps" or "max_epochs" (the budget ran out first)
    warm_start: bool = False  # continued from an earlier model's weights

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(n_features, seq_len, hidden_dim, embedding_dim, num_layers)``: what a warm start must match."""
        return (self.n_features, self.seq_len, self.hidden_dim, self.embedding_dim, self.num_layers)

    def to_bytes(self) -> bytes:
        """The weights and hyper-parameters as one torch file's bytes (``from_bytes`` reads them back)."""
        import torch

        buffer = io.BytesIO()
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "n_features": self.n_features,
                "seq_len": self.seq_len,
                "hidden_dim": self.hidden_dim,
                "embedding_dim": self.embedding_dim,
                "num_layers": self.num_layers,
                "losses": self.losses,
                "val_losses": self.val_losses,
                "steps": self.steps,
                "stop_reason": self.stop_reason,
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device: str | None = None) -> TrainedAutoencoder:
        """A model from ``to_bytes``' output (``weights_only``: no pickled code is executed).

        Raises what ``torch.load`` raises for damaged bytes (``RuntimeError``, ``EOFError``...).
        """
        import torch

        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        device = pick_device(device)
        model = _build_model(blob["n_features"], blob["hidden_dim"], blob["embedding_dim"], blob["num_layers"])
        model.load_state_dict(blob["state_dict"])
        model.to(device).eval()
        return cls(
            model=model,
            n_features=blob["n_features"],
            seq_len=blob["seq_len"],
            hidden_dim=blob["hidden_dim"],
            embedding_dim=blob["embedding_dim"],
            num_layers=blob["num_layers"],
            losses=list(blob["losses"]),
            val_losses=list(blob.get("val_losses", [])),
            device=device,
            steps=int(blob.get("steps", 0)),
            stop_reason=str(blob.get("stop_reason", "")),
        )


def model_shape(config: ModelConfig, seq_len: int, n_features: int) -> tuple[int, int, int, int, int]:
    """``(n_features, seq_len, hidden_dim, embedding_dim, num_layers)`` of a model trained with ``config``:
    what ``TrainedAutoencoder.shape`` must equal for a warm start."""
    return (n_features, seq_len, config.hidden_dim, config.embedding_dim, config.num_layers)


#: Training loss is recorded, and convergence judged, once per round: an epoch, or this many steps
#: when an epoch is longer (at 200,000 windows an epoch is 3,125 steps, past the step budget).
ROUND_STEPS = 100


def _check_windows(windows: np.ndarray, config: ModelConfig, init: TrainedAutoencoder | None) -> tuple[int, int, int]:
    # Refuse bad input before torch is touched: (n_windows, seq_len, n_features) of the training set.
    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(f"windows must be a non-empty (n_windows, seq_len, n_features) array, got {windows.shape}")
    if not np.isfinite(windows).all():
        raise ValueError("training windows contain NaN or infinite values")
    n, seq_len, n_features = windows.shape
    if init is not None and init.shape != model_shape(config, seq_len, n_features):
        raise ValueError("the warm-start model was trained with another window length, feature count or architecture")
    return n, seq_len, n_features


@dataclass(frozen=True)
class _Budget:
    """How training is batched and when it may or must stop (in optimizer steps)."""

    batch: int  # windows per optimizer step
    round_steps: int  # steps per round: losses are recorded and convergence judged once per round
    min_steps: int  # no convergence stop before this many steps (0 for a warm start)
    max_steps: int  # stop here whatever the loss does


def _budget(config: ModelConfig, n: int, device: str, warm: bool) -> _Budget:
    batch = min(config.gpu_batch_size if device == "cuda" else config.batch_size, n)
    batches_per_epoch = math.ceil(n / batch)
    min_steps = 0 if warm else config.min_steps
    # Enough epochs to reach min_steps, so a small warehouse still trains that long.
    max_epochs = max(config.epochs, math.ceil(min_steps / batches_per_epoch))
    max_steps = max_epochs * batches_per_epoch
    if config.max_steps is not None:
        max_steps = min(max_steps, config.max_steps)
    return _Budget(batch, min(batches_per_epoch, ROUND_STEPS), min_steps, max_steps)


def _autocast(device: str):
    import torch

    # bf16 autocast only pays off on CUDA; on CPU it is slower and less accurate.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()


def _held_out_windows(validation: np.ndarray | None, windows: np.ndarray, device: str) -> torch.Tensor | None:
    # The held-out markets' windows on the device, or None when there are none to watch.
    import torch

    if validation is None or not len(validation):
        return None
    if validation.shape[1:] != windows.shape[1:] or not np.isfinite(validation).all():
        _, seq_len, n_features = windows.shape
        raise ValueError(f"validation windows must be finite (n, {seq_len}, {n_features}), got {validation.shape}")
    return torch.from_numpy(np.ascontiguousarray(validation, dtype=np.float32)).to(device)


def _held_out_loss(model, held: torch.Tensor, autocast, device: str) -> float:
    # Mean squared error over every held-out value, in chunks of 4,096 windows to bound memory.
    import torch

    total = torch.zeros((), device=device)
    with torch.no_grad(), autocast:
        for start in range(0, len(held), 4096):
            x = held[start : start + 4096]
            total += torch.nn.functional.mse_loss(model(x).float(), x, reduction="sum")
    return float(total) / held.numel()


@dataclass
class _Progress:
    """The state of a training run across rounds: losses, the best round, steps, why it stopped."""

    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best: float = math.inf
    best_round: int = 0
    best_state: dict | None = None
    since_best: int = 0  # rounds without a relative improvement of min_delta
    steps: int = 0
    stop_reason: str = ""

    def watch(self, watched: float, model, min_delta: float) -> None:
        """Count a plateau round unless ``watched`` improved by ``min_delta`` (relative); keep the best weights."""
        if watched < self.best * (1.0 - min_delta):
            self.since_best = 0
        else:
            self.since_best += 1
        if watched < self.best:  # the weights early stopping returns (Prechelt 1998)
            self.best, self.best_round = watched, len(self.losses)
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _stop_reason(progress: _Progress, budget: _Budget, config: ModelConfig) -> str:
    # "" to go on; "converged" on a plateau past min_steps; else which budget ran out.
    if progress.since_best >= config.patience and progress.steps >= budget.min_steps:
        return "converged"
    if progress.steps >= budget.max_steps:
        at_budget = config.max_steps is not None and progress.steps >= config.max_steps
        return "max_steps" if at_budget else "max_epochs"
    return ""


def _end_round(
    progress: _Progress, train_loss: float, model, held, autocast, device: str, budget: _Budget, config: ModelConfig
) -> None:
    # Record the round's losses, track the best round, log, and decide whether to stop.
    progress.losses.append(train_loss)
    if held is not None:
        progress.val_losses.append(_held_out_loss(model, held, autocast, device))
    watched = progress.val_losses[-1] if held is not None else progress.losses[-1]
    progress.watch(watched, model, config.min_delta)
    held_text = f", held-out markets {progress.val_losses[-1]:.5f}" if held is not None else ""
    log.info(
        "round %d (%d steps) reconstruction MSE %.5f%s",
        len(progress.losses),
        progress.steps,
        progress.losses[-1],
        held_text,
    )
    progress.stop_reason = _stop_reason(progress, budget, config)


def _train_step(model, optimizer, x: torch.Tensor, autocast) -> torch.Tensor:
    # One Adam step on the reconstruction MSE of batch `x`; returns the (attached) loss.
    import torch

    with autocast:
        loss = torch.nn.functional.mse_loss(model(x).float(), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def _fit(model, optimizer, data, rng, held, autocast, device: str, budget: _Budget, config: ModelConfig) -> _Progress:
    # Epochs of shuffled batches until a round ends with a stop reason.
    import torch

    n = len(data)
    progress = _Progress()
    # Accumulate on the device: .item() every step would synchronise the GPU each time.
    total, seen = torch.zeros((), device=device), 0
    model.train()
    while not progress.stop_reason:
        order = torch.from_numpy(rng.permutation(n)).to(device)
        for start in range(0, n, budget.batch):
            x = data[order[start : start + budget.batch]]
            loss = _train_step(model, optimizer, x, autocast)
            total += loss.detach() * len(x)
            seen += len(x)
            progress.steps += 1
            if progress.steps % budget.round_steps and progress.steps < budget.max_steps:
                continue
            train_loss = float(total) / seen
            total, seen = torch.zeros((), device=device), 0
            _end_round(progress, train_loss, model, held, autocast, device, budget, config)
            if progress.stop_reason:
                break
    return progress


def _log_stop(progress: _Progress, patience: int) -> None:
    if progress.stop_reason == "converged":
        log.info(
            "training converged after %d steps: best round %d of %d, loss %.5f",
            progress.steps,
            progress.best_round,
            len(progress.losses),
            progress.best,
        )
        return
    # How much the watched loss still fell over the last `patience` rounds: why more budget would help.
    watched = progress.val_losses or progress.losses
    log.warning(
        "training stopped at its budget (%s, %d steps) before the loss settled (still improving %.1f%% within "
        "the last %d rounds): raise model.max_steps / epochs for a better-converged encoder",
        progress.stop_reason,
        progress.steps,
        100 * (1 - watched[-1] / watched[max(0, len(progress.losses) - 1 - patience)]),
        patience,
    )


def train_autoencoder(
    windows: np.ndarray,
    config: ModelConfig,
    seed: int,
    device: str | None = None,
    init: TrainedAutoencoder | None = None,
    validation: np.ndarray | None = None,
) -> TrainedAutoencoder:
    """Train the autoencoder to reconstruct ``windows`` (MSE, Adam) until the loss stops improving.

    ``windows`` is ``(n_windows, seq_len, n_features)`` float32, already scaled; ``validation``
    (same shape but rows; held-out markets' windows, may be empty) is what early stopping watches.
    The training loss is the mean over a round (an epoch, or ``ROUND_STEPS`` steps when an epoch is
    longer); the validation loss is computed at the end of each round. Early stopping on a plateau
    (Prechelt 1998, "Early stopping - but when?"): training stops once the best round's validation
    loss (the training loss without validation windows) has not improved by ``config.min_delta``
    (relative) for ``config.patience`` rounds (``stop_reason`` ``"converged"``; the best round's
    weights are returned), but not before
    ``config.min_steps`` optimizer steps when training from scratch, so a small warehouse still
    trains. Watching held-out markets matters: with 32 dimensions for 12 x 4 values the training
    loss keeps falling as the model memorises noise (measured: still -50 % over the last 8 rounds
    at 3,000 steps on planted markets), while the held-out loss settles once the shapes are learned.
    It also stops at ``config.max_steps`` steps or after ``max(config.epochs, ceil(min_steps /
    batches per epoch))`` epochs (``"max_steps"`` / ``"max_epochs"``: the budget ran out first).

    ``init``: a model trained before (last month's) with the same shape; training continues from its
    weights (warm start) with no ``min_steps`` floor, so a month whose sales move as before costs a
    few rounds and keeps the previous latent space. Batches hold ``batch_size`` windows on CPU and
    ``gpu_batch_size`` on CUDA, where the LSTMs run as fused cuDNN kernels under bf16 autocast.
    Deterministic for a given ``seed`` (and ``init``) on a given device. Logs each round's loss and
    the stop. Raises ``ValueError`` on an empty or non-finite input, or an ``init`` of another shape.
    """
    import torch

    n, seq_len, n_features = _check_windows(windows, config, init)
    device = pick_device(device)
    if device == "cpu":
        torch.set_num_threads(_cpu_threads(config.cpu_threads))
    # Seeding, then building the model (its initial weights draw from torch's RNG), then shuffling
    # with `rng`: this order is what makes a run reproducible for a seed.
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    model = _build_model(n_features, config.hidden_dim, config.embedding_dim, config.num_layers).to(device)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    budget = _budget(config, n, device, warm=init is not None)
    autocast = _autocast(device)
    held = _held_out_windows(validation, windows, device)

    progress = _fit(model, optimizer, data, rng, held, autocast, device, budget, config)
    if progress.stop_reason == "converged" and progress.best_state is not None:
        model.load_state_dict(progress.best_state)  # the best round's weights, not those `patience` rounds later
    model.eval()
    _log_stop(progress, config.patience)
    return TrainedAutoencoder(
        model=model,
        n_features=n_features,
        seq_len=seq_len,
        hidden_dim=config.hidden_dim,
        embedding_dim=config.embedding_dim,
        num_layers=config.num_layers,
        losses=progress.losses,
        val_losses=progress.val_losses,
        device=device,
        steps=progress.steps,
        stop_reason=progress.stop_reason,
        warm_start=init is not None,
    )


def embed(
    trained: TrainedAutoencoder, windows: np.ndarray, batch_size: int = 4096, cpu_threads: int | None = None
) -> np.ndarray:
    """Encode ``(n_markets, seq_len, n_features)`` float32 windows to ``(n_markets, embedding_dim)`` float32.

    Batches of ``batch_size`` windows without autograd; on CPU, torch uses ``cpu_threads`` threads
    (default: the cores this process may use, as in training). Memory beyond the input and output is
    one batch. Raises ``ValueError`` when the window length or feature count differs from the
    trained model's.
    """
    passive_openmp()
    import torch

    if windows.ndim != 3 or windows.shape[1:] != (trained.seq_len, trained.n_features):
        raise ValueError(
            f"windows must be (n, {trained.seq_len}, {trained.n_features}) like the training data, got {windows.shape}"
        )
    if trained.device == "cpu":
        torch.set_num_threads(_cpu_threads(cpu_threads))
    out = np.empty((len(windows), trained.embedding_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size], dtype=np.float32))
            out[start : start + len(x)] = trained.model.encode(x.to(trained.device)).float().cpu().numpy()
    return out


def embedding_spread(z: np.ndarray) -> float:
    """How much embeddings differ across markets: mean per-dimension std over mean absolute value.

    ``z`` is ``(n_markets, embedding_dim)``. Near 0 means the encoder embeds every market alike
    (collapse): it may still reconstruct well on average, but the LSTM block then carries no
    information for clustering. NaN for fewer than 2 markets.
    """
    if len(z) < 2:
        return float("nan")
    return float(z.std(axis=0).mean() / (np.abs(z).mean() + 1e-12))


def training_summary(meta: dict) -> str:
    """One line on how training ended, from a ``model.json`` (``stop_reason``, ``steps``, ``warm_start_from``).

    E.g. "converged after 1,200 steps, warm start from 2013-11" or "stopped at its budget (max_steps)
    after 3,000 steps, from scratch": for the run record and the report.
    """
    how = (
        "converged" if meta.get("stop_reason") == "converged" else f"stopped at its budget ({meta.get('stop_reason')})"
    )
    warm = f", warm start from {meta['warm_start_from']}" if meta.get("warm_start_from") else ", from scratch"
    return f"{how} after {meta.get('steps', 0):,} steps{warm}"
