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

    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(f"windows must be a non-empty (n_windows, seq_len, n_features) array, got {windows.shape}")
    if not np.isfinite(windows).all():
        raise ValueError("training windows contain NaN or infinite values")
    n, seq_len, n_features = windows.shape
    if init is not None and init.shape != model_shape(config, seq_len, n_features):
        raise ValueError("the warm-start model was trained with another window length, feature count or architecture")
    device = pick_device(device)
    if device == "cpu":
        torch.set_num_threads(_cpu_threads(config.cpu_threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    model = _build_model(n_features, config.hidden_dim, config.embedding_dim, config.num_layers).to(device)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    batch = min(config.gpu_batch_size if device == "cuda" else config.batch_size, n)
    batches_per_epoch = math.ceil(n / batch)
    round_steps = min(batches_per_epoch, ROUND_STEPS)
    min_steps = 0 if init is not None else config.min_steps
    max_epochs = max(config.epochs, math.ceil(min_steps / batches_per_epoch))
    max_steps = max_epochs * batches_per_epoch
    if config.max_steps is not None:
        max_steps = min(max_steps, config.max_steps)
    # bf16 autocast only pays off on CUDA; on CPU it is slower and less accurate.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()

    held = None
    if validation is not None and len(validation):
        if validation.shape[1:] != windows.shape[1:] or not np.isfinite(validation).all():
            raise ValueError(f"validation windows must be finite (n, {seq_len}, {n_features}), got {validation.shape}")
        held = torch.from_numpy(np.ascontiguousarray(validation, dtype=np.float32)).to(device)

    def held_out_loss() -> float:
        total = torch.zeros((), device=device)
        with torch.no_grad(), autocast:
            for start in range(0, len(held), 4096):
                x = held[start : start + 4096]
                total += torch.nn.functional.mse_loss(model(x).float(), x, reduction="sum")
        return float(total) / held.numel()

    losses: list[float] = []
    val_losses: list[float] = []
    best, best_round, best_state, since_best, steps, stop_reason = math.inf, 0, None, 0, 0, ""
    # Accumulate on the device: .item() every step would synchronise the GPU each time.
    total, seen = torch.zeros((), device=device), 0
    model.train()
    while not stop_reason:
        order = torch.from_numpy(rng.permutation(n)).to(device)
        for start in range(0, n, batch):
            x = data[order[start : start + batch]]
            with autocast:
                loss = torch.nn.functional.mse_loss(model(x).float(), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(x)
            seen += len(x)
            steps += 1
            if steps % round_steps and steps < max_steps:
                continue
            losses.append(float(total) / seen)
            total, seen = torch.zeros((), device=device), 0
            if held is not None:
                val_losses.append(held_out_loss())
            watched = val_losses[-1] if held is not None else losses[-1]
            if watched < best * (1.0 - config.min_delta):
                since_best = 0
            else:
                since_best += 1
            if watched < best:  # the weights early stopping returns (Prechelt 1998)
                best, best_round = watched, len(losses)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            held_text = f", held-out markets {val_losses[-1]:.5f}" if held is not None else ""
            log.info("round %d (%d steps) reconstruction MSE %.5f%s", len(losses), steps, losses[-1], held_text)
            if since_best >= config.patience and steps >= min_steps:
                stop_reason = "converged"
            elif steps >= max_steps:
                at_budget = config.max_steps is not None and steps >= config.max_steps
                stop_reason = "max_steps" if at_budget else "max_epochs"
            if stop_reason:
                break
    if stop_reason == "converged" and best_state is not None:
        model.load_state_dict(best_state)  # the best round's weights, not those `patience` rounds later
    model.eval()
    if stop_reason == "converged":
        log.info(
            "training converged after %d steps: best round %d of %d, loss %.5f", steps, best_round, len(losses), best
        )
    else:
        log.warning(
            "training stopped at its budget (%s, %d steps) before the loss settled (still improving %.1f%% within "
            "the last %d rounds): raise model.max_steps / epochs for a better-converged encoder",
            stop_reason,
            steps,
            100 * (1 - (val_losses or losses)[-1] / (val_losses or losses)[max(0, len(losses) - 1 - config.patience)]),
            config.patience,
        )
    return TrainedAutoencoder(
        model=model,
        n_features=n_features,
        seq_len=seq_len,
        hidden_dim=config.hidden_dim,
        embedding_dim=config.embedding_dim,
        num_layers=config.num_layers,
        losses=losses,
        val_losses=val_losses,
        device=device,
        steps=steps,
        stop_reason=stop_reason,
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
