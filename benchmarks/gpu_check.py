"""GPU check: train and encode the LSTM autoencoder on a large synthetic set and print throughput.

    scripts/gpu_check.sh                       # 1,000,000 markets x 24 months on the GPU
    scripts/gpu_check.sh --markets 20000       # a quick look on a CPU

Prints sequences/s for training (optimizer steps x batch / wall time) and for encoding, the final
reconstruction loss, and peak GPU memory. Figures, not pass/fail: this is a benchmark.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic_windows(n_markets: int, months: int, seed: int = 0) -> np.ndarray:
    """``(n_markets, months, 4)`` float32 windows: trend + yearly season + noise, scaled like real features."""
    rng = np.random.default_rng(seed)
    t = np.arange(months, dtype=np.float32)
    level = rng.normal(0, 1, (n_markets, 1)).astype(np.float32)
    trend = rng.normal(0, 0.05, (n_markets, 1)).astype(np.float32)
    season = rng.uniform(0, 1, (n_markets, 1)).astype(np.float32) * np.sin(2 * np.pi * t / 12)
    revenue = level + trend * t + season + rng.normal(0, 0.1, (n_markets, months)).astype(np.float32)
    growth = np.diff(revenue, axis=1, prepend=revenue[:, :1])
    customers = 0.8 * revenue + rng.normal(0, 0.1, (n_markets, months)).astype(np.float32)
    quantity = 0.9 * revenue + rng.normal(0, 0.1, (n_markets, months)).astype(np.float32)
    return np.stack([revenue, growth, customers, quantity], axis=-1).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    import torch

    from include.segmentation.config import ModelConfig
    from include.segmentation.core.autoencoder import embed, pick_device, train_autoencoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps to time")
    parser.add_argument("--batch", type=int, default=4096, help="windows per step (the GPU batch size)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    windows = synthetic_windows(args.markets, args.months)
    config = ModelConfig(epochs=1, min_steps=0, max_steps=args.steps, batch_size=args.batch, gpu_batch_size=args.batch)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    start = time.perf_counter()
    trained = train_autoencoder(windows, config, seed=0, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    steps = min(args.steps, -(-args.markets // args.batch) * len(trained.losses))
    start = time.perf_counter()
    z = embed(trained, windows, batch_size=65536)
    encode_s = time.perf_counter() - start
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else "n/a (CPU)"
    print(f"device            {device} ({name}), torch {torch.__version__}")
    print(f"data              {args.markets:,} markets x {args.months} months x 4 features")
    print(
        f"training          {steps} steps x {args.batch} windows in {train_s:.1f} s = "
        f"{steps * args.batch / train_s:,.0f} sequences/s (final MSE {trained.losses[-1]:.4f})"
    )
    print(f"encoding          {len(z):,} windows in {encode_s:.1f} s = {len(z) / encode_s:,.0f} sequences/s")
    print(f"peak GPU memory   {peak}")


if __name__ == "__main__":
    main()
