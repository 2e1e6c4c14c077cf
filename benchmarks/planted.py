"""Planted segments: does the hybrid view recover segments that neither view alone can see?

    .venv/bin/python -m benchmarks.planted                  # 240 markets x 36 months, 5 seeds
    .venv/bin/python -m benchmarks.planted --markets 60 --seeds 1 --epochs 2 --min-steps 0

Synthetic markets fall into a design of temporal patterns x static mixes (default 2 x 2 = 4 true
segments): two segments with the same static mix differ ONLY in how monthly revenue moves, two with
the same pattern ONLY in discount, loyalty shares, lifetime value and product range. Everything else
(market size, unit price, basket size, noise) is drawn from the same distributions for all segments.

The library's own pieces run on them as the pipeline runs them: ``sequence_features`` ->
``training_windows`` -> ``FeatureScaler`` -> ``train_autoencoder`` -> ``embed`` (latest window) ->
``clustering.cluster_markets`` (hybrid, K-Means at the true k). The single views are K-Means at the same
k on the standardized embedding (LSTM-only) and on the standardized static features (static-only).
Printed: adjusted Rand index (ARI) against the planted segments per seed and mean ± sd. Figures,
not pass/fail.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.report import Report, mean_sd, output_path, table

#: Monthly revenue shapes. Trends are centred so every pattern has the same expected level in the
#: middle of the latest window: the patterns differ in shape, not in size.
TEMPORAL_PATTERNS = ("growing", "declining", "seasonal", "flat")

#: Static mixes: mean avg_discount, platinum, gold and silver shares (0-1), median avg_ltv (currency),
#: and the (inclusive) ranges of product line and subcategory counts; spreads are in ``_static_block``.
STATIC_MIXES: dict[str, tuple[float, float, float, float, float, tuple[int, int], tuple[int, int]]] = {
    "premium": (0.03, 0.25, 0.30, 0.25, 6000.0, (4, 5), (22, 30)),
    "value": (0.11, 0.06, 0.20, 0.34, 1500.0, (2, 4), (10, 18)),
    "mid": (0.06, 0.14, 0.26, 0.30, 3000.0, (3, 5), (15, 24)),
}

METHODS = ("hybrid", "lstm-only", "static-only")


@dataclass(frozen=True)
class PlantedMarkets:
    """Synthetic markets with known segments.

    ``grid``: ``(n_markets, n_months, 4)`` float64 monthly aggregates in ``sequences.MONTHLY_COLUMNS``
    order - revenue (currency), quantity (units), n_lines (order lines), n_customers (distinct
    customers). ``static``: ``(n_markets, 7)`` float64 in ``clustering.STATIC_FEATURES`` order -
    avg_discount (0-1), platinum/gold/silver shares (0-1), avg_ltv (currency), product line and
    subcategory counts. ``segment``: ``(n_markets,)`` int64 true segment, ``pattern * n_mixes + mix``;
    ``pattern`` / ``mix``: ``(n_markets,)`` int64 indices into ``patterns`` / ``mixes``. ``size``:
    ``(n_markets,)`` float64 planted market size (expected monthly revenue at the trend anchor, currency),
    drawn independently of the segment.
    """

    grid: np.ndarray
    static: np.ndarray
    segment: np.ndarray
    pattern: np.ndarray
    mix: np.ndarray
    size: np.ndarray
    patterns: tuple[str, ...]
    mixes: tuple[str, ...]


def revenue_shape(pattern: str, n_months: int, anchor: float, trend: float, amplitude: float) -> np.ndarray:
    """Expected revenue relative to market size, ``(n_months,)`` float64, month ``t = 0..n_months-1``.

    ``growing``/``declining``: ``exp(±trend * (t - anchor))`` (``trend`` in log-revenue per month; 1.0
    at month ``anchor``); ``seasonal``: ``1 + amplitude * sin(2 pi t / 12)`` (mean 1 over any 12
    months; ``amplitude`` 0-1); ``flat``: 1.
    """
    t = np.arange(n_months, dtype=np.float64)
    if pattern == "growing":
        return np.exp(trend * (t - anchor))
    if pattern == "declining":
        return np.exp(-trend * (t - anchor))
    if pattern == "seasonal":
        return 1.0 + amplitude * np.sin(2 * np.pi * t / 12)
    if pattern == "flat":
        return np.ones(n_months)
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {TEMPORAL_PATTERNS}")


def _static_block(mix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    discount, platinum, gold, silver, ltv, lines, subcats = STATIC_MIXES[mix]
    shares = np.clip(
        np.column_stack(
            [
                rng.normal(discount, 0.015, n),
                rng.normal(platinum, 0.03, n),
                rng.normal(gold, 0.03, n),
                rng.normal(silver, 0.03, n),
            ]
        ),
        0.0,
        1.0,
    )
    return np.column_stack(
        [
            shares,
            ltv * rng.lognormal(0.0, 0.2, n),
            rng.integers(lines[0], lines[1] + 1, n),
            rng.integers(subcats[0], subcats[1] + 1, n),
        ]
    ).astype(np.float64)


def planted_markets(
    n_markets: int,
    n_months: int,
    seed: int,
    patterns: tuple[str, ...] = ("growing", "declining"),
    mixes: tuple[str, ...] = ("premium", "value"),
    window: int = 12,
    size_sd: float = 0.5,
    noise_sd: float = 0.1,
    trend: float = 0.05,
    amplitude: float = 0.4,
) -> PlantedMarkets:
    """Draw ``n_markets`` markets split as evenly as possible over ``patterns x mixes`` segments.

    Market size: median 50,000 currency/month, log-normal with sd ``size_sd`` (the same for every
    segment). Revenue = size x ``revenue_shape(pattern)`` x monthly log-normal noise (sd ``noise_sd``);
    trends are anchored at the middle of the last ``window`` months. Quantity = revenue / unit price
    (market price ~120 currency, log-sd 0.2), order lines = quantity / basket (1.2-2.0 units), customers =
    lines / 1.1-1.6 lines each; counts rounded, at least 1. Pure: the same arguments give the same
    markets. Raises ``ValueError`` for fewer markets than segments or an unknown pattern/mix.
    """
    n_segments = len(patterns) * len(mixes)
    if n_markets < n_segments:
        raise ValueError(f"need at least one market per segment: {n_markets} markets < {n_segments} segments")
    unknown = [m for m in mixes if m not in STATIC_MIXES] + [p for p in patterns if p not in TEMPORAL_PATTERNS]
    if unknown:
        raise ValueError(f"unknown pattern(s)/mix(es) {unknown}")
    rng = np.random.default_rng(seed)
    segment = rng.permutation(np.arange(n_markets) % n_segments).astype(np.int64)
    pattern, mix = segment // len(mixes), segment % len(mixes)
    anchor = n_months - (window + 1) / 2

    shapes = np.stack([revenue_shape(p, n_months, anchor, trend, amplitude) for p in patterns])
    size = 50_000.0 * rng.lognormal(0.0, size_sd, (n_markets, 1))
    revenue = size * shapes[pattern] * rng.lognormal(0.0, noise_sd, (n_markets, n_months))
    price = 120.0 * rng.lognormal(0.0, 0.2, (n_markets, 1)) * rng.lognormal(0.0, 0.05, (n_markets, n_months))
    quantity = np.maximum(np.round(revenue / price), 1.0)
    lines = np.maximum(np.round(quantity / rng.uniform(1.2, 2.0, (n_markets, 1))), 1.0)
    customers = np.maximum(np.round(lines / rng.uniform(1.1, 1.6, (n_markets, 1))), 1.0)
    grid = np.stack([np.round(revenue, 2), quantity, lines, customers], axis=-1)

    static = np.empty((n_markets, 7), dtype=np.float64)
    for i, name in enumerate(mixes):
        rows = mix == i
        static[rows] = _static_block(name, int(rows.sum()), rng)
    return PlantedMarkets(grid, static, segment, pattern, mix, size[:, 0], tuple(patterns), tuple(mixes))


#: How windows are scaled before the autoencoder. ``per-feature`` is the library's ``FeatureScaler``
#: (what the pipeline does); the others are ablations that remove each window's level first.
SCALINGS = ("per-feature", "demeaned", "per-series")

#: Feature indices (``sequences.FEATURES``) that carry a market's size: log revenue, customers, quantity.
_LEVEL_FEATURES = [0, 2, 3]


def rescale_windows(windows: np.ndarray, how: str) -> np.ndarray:
    """Apply a window-level transform to ``(n, seq_len, 4)`` feature windows before ``FeatureScaler``.

    ``per-feature``: unchanged. ``demeaned``: the log-level features (revenue, customers, quantity)
    minus their mean over the window, so the window carries shape but not size (growth is kept).
    ``per-series``: every feature z-scored over the window (sd 0 -> 1). Returns float64 ``(n, seq_len, 4)``.
    """
    x = np.array(windows, dtype=np.float64)
    if how == "per-feature":
        return x
    if how == "demeaned":
        x[..., _LEVEL_FEATURES] -= x[..., _LEVEL_FEATURES].mean(axis=1, keepdims=True)
        return x
    if how == "per-series":
        sd = x.std(axis=1, keepdims=True)
        return (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 1e-12, sd, 1.0)
    raise ValueError(f"unknown scaling {how!r}; expected one of {SCALINGS}")


def embed_single_thread(trained: object, windows: np.ndarray) -> np.ndarray:
    """``autoencoder.embed`` of ``(n, seq_len, n_features)`` windows -> ``(n, embedding_dim)``, on one CPU thread.

    ``embed`` may set torch's thread count to every core (its ``cpu_threads`` default); the benchmarks
    run on one thread throughout, so pass ``cpu_threads=1`` where ``embed`` takes it.
    """
    import inspect

    from include.segmentation.autoencoder import embed

    one = {"cpu_threads": 1} if "cpu_threads" in inspect.signature(embed).parameters else {}
    return embed(trained, windows, **one)


def embed_latest(
    grid: np.ndarray, seq_len: int, model: object, seed: int, scaling: str = "per-feature"
) -> tuple[np.ndarray, float]:
    """Train the autoencoder on all windows of ``grid`` and embed each market's latest window.

    ``grid`` is ``(n_markets, n_months, 4)`` raw aggregates; ``model`` a ``ModelConfig``. With
    ``scaling="per-feature"`` exactly as ``pipeline.build_sequences`` / ``train_autoencoder`` /
    ``embed_markets`` do it (``min_active_months=3``); other scalings see ``rescale_windows``.
    Returns ``((n_markets, embedding_dim) float32, final training MSE)``.
    """
    from include.segmentation import sequences as seq
    from include.segmentation.autoencoder import train_autoencoder

    features = seq.sequence_features(grid)
    active = grid[..., 0] != 0
    train = rescale_windows(seq.training_windows(features, active, seq_len, min_active_months=3), scaling)
    latest = rescale_windows(features[:, -seq_len:], scaling)
    scaler = seq.FeatureScaler.fit(train)
    trained = train_autoencoder(scaler.transform(train), model, seed=seed)
    return embed_single_thread(trained, scaler.transform(latest)), trained.losses[-1]


def embedding_diagnostics(embedding: np.ndarray, pattern: np.ndarray, size: np.ndarray, seed: int) -> dict[str, float]:
    """Is the temporal pattern in the embedding, and what dominates it?

    ``probe``: 5-fold cross-validated accuracy (0-1) of a logistic regression predicting the planted
    pattern from the standardized ``(n, e)`` embedding - high while K-Means fails means the pattern is
    encoded but is not the embedding's main axis of variation. ``pc1_size``: |correlation| between the
    first principal component of the standardized embedding and log ``size`` (``(n,)`` planted market
    size, independent of the segments).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from include.segmentation.clustering import standardize

    z = standardize(embedding)
    folds = int(min(5, np.bincount(pattern).min()))
    probe = LogisticRegression(max_iter=2000)
    accuracy = float(cross_val_score(probe, z, pattern, cv=folds).mean()) if folds >= 2 else float("nan")
    pc1 = PCA(n_components=1, random_state=seed).fit_transform(z)[:, 0]
    return {"probe": accuracy, "pc1_size": float(abs(np.corrcoef(pc1, np.log(size))[0, 1]))}


def score_views(
    static: np.ndarray, embedding: np.ndarray, truth: np.ndarray, k: int, static_weight: float, seed: int
) -> dict[str, float]:
    """ARI of the hybrid, LSTM-only and static-only segmentations against ``truth``, all at ``k``.

    ``static`` ``(n, 7)``, ``embedding`` ``(n, e)``, ``truth`` ``(n,)`` labels. Hybrid: the library's
    ``clustering.cluster_markets`` (K-Means, ``n_clusters=k``); single views: K-Means (10 inits) on
    ``clustering.standardize`` of that view.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from include.segmentation.clustering import cluster_markets, standardize
    from include.segmentation.config import ClusterConfig

    hybrid = cluster_markets(static, embedding, ClusterConfig(n_clusters=k, static_weight=static_weight), seed).labels

    def view(x: np.ndarray) -> np.ndarray:
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(standardize(x))

    return {
        "hybrid": float(adjusted_rand_score(truth, hybrid)),
        "lstm-only": float(adjusted_rand_score(truth, view(embedding))),
        "static-only": float(adjusted_rand_score(truth, view(static))),
    }


@dataclass(frozen=True)
class Setting:
    """One benchmark configuration: the planted design, the window scaling and the library settings."""

    markets: int = 240
    months: int = 36
    patterns: tuple[str, ...] = ("growing", "declining")
    mixes: tuple[str, ...] = ("premium", "value")
    size_sd: float = 0.5
    noise_sd: float = 0.1
    scaling: str = "per-feature"
    epochs: int | None = None  # None: ModelConfig's default
    min_steps: int | None = None
    static_weight: float | None = None  # None: ClusterConfig's default

    def model(self) -> object:
        """The ``ModelConfig`` (1 CPU thread, library defaults unless set here)."""
        from include.segmentation.config import ModelConfig

        given = {"epochs": self.epochs, "min_steps": self.min_steps}
        return ModelConfig(cpu_threads=1, **{k: v for k, v in given.items() if v is not None})

    def weight(self) -> float:
        """``ClusterConfig.static_weight``: the library default unless set here."""
        from include.segmentation.config import ClusterConfig

        return ClusterConfig().static_weight if self.static_weight is None else self.static_weight


def run_setting(setting: Setting, seed: int) -> dict[str, float]:
    """Draw the markets of ``seed``, embed, cluster; ARIs per method, half-view ARIs and diagnostics.

    Keys: ``METHODS`` (ARI vs the planted segments), ``lstm:patterns`` / ``static:mixes`` (each single
    view against the half it can see, at that half's k), ``probe``, ``pc1_size``
    (``embedding_diagnostics``), ``final_mse`` and ``seconds`` (wall time).
    """
    from include.segmentation.config import SequenceConfig

    start = time.perf_counter()
    seq_len = SequenceConfig().seq_len
    k = len(setting.patterns) * len(setting.mixes)
    planted = planted_markets(
        setting.markets,
        setting.months,
        seed,
        setting.patterns,
        setting.mixes,
        seq_len,
        setting.size_sd,
        setting.noise_sd,
    )
    z, loss = embed_latest(planted.grid, seq_len, setting.model(), seed, setting.scaling)
    weight = setting.weight()
    out = score_views(planted.static, z, planted.segment, k, weight, seed)
    out["lstm:patterns"] = score_views(planted.static, z, planted.pattern, len(setting.patterns), weight, seed)[
        "lstm-only"
    ]
    out["static:mixes"] = score_views(planted.static, z, planted.mix, len(setting.mixes), weight, seed)["static-only"]
    return (
        out
        | embedding_diagnostics(z, planted.pattern, planted.size, seed)
        | {
            "final_mse": loss,
            "seconds": time.perf_counter() - start,
        }
    )


#: ``--sweep``: one change at a time from the default setting (label, changes).
SWEEP: tuple[tuple[str, dict], ...] = (
    ("default (growing/declining x 2 mixes)", {}),
    ("  scaling demeaned", {"scaling": "demeaned"}),
    ("  scaling per-series", {"scaling": "per-series"}),
    ("size log-sd 1.0", {"size_sd": 1.0}),
    ("  scaling demeaned", {"size_sd": 1.0, "scaling": "demeaned"}),
    ("  scaling per-series", {"size_sd": 1.0, "scaling": "per-series"}),
    ("  static_weight 0.3", {"size_sd": 1.0, "static_weight": 0.3}),
    ("  static_weight 0.7", {"size_sd": 1.0, "static_weight": 0.7}),
    ("  epochs 240 (4x)", {"size_sd": 1.0, "epochs": 240}),
    ("  epochs 10, min_steps 0", {"size_sd": 1.0, "epochs": 10, "min_steps": 0}),
    ("size log-sd 2.0 (AdventureWorks: 1.9)", {"size_sd": 2.0}),
    ("  scaling demeaned", {"size_sd": 2.0, "scaling": "demeaned"}),
    ("noise log-sd 0.3", {"noise_sd": 0.3}),
    ("  scaling demeaned", {"noise_sd": 0.3, "scaling": "demeaned"}),
    ("seasonal/flat x 2 mixes", {"patterns": ("seasonal", "flat")}),
    ("  scaling demeaned", {"patterns": ("seasonal", "flat"), "scaling": "demeaned"}),
    ("  scaling per-series", {"patterns": ("seasonal", "flat"), "scaling": "per-series"}),
    ("3 patterns x 3 mixes", {"patterns": ("growing", "declining", "seasonal"), "mixes": ("premium", "value", "mid")}),
    (
        "  scaling demeaned",
        {"patterns": ("growing", "declining", "seasonal"), "mixes": ("premium", "value", "mid"), "scaling": "demeaned"},
    ),
)


def _describe(setting: Setting) -> str:
    model = setting.model()
    k = len(setting.patterns) * len(setting.mixes)
    which = "the pipeline's" if setting.scaling == "per-feature" else "an ablation, not the pipeline's"
    return (
        f"design: {len(setting.patterns)} patterns {setting.patterns} x {len(setting.mixes)} static mixes "
        f"{setting.mixes} = {k} segments; {setting.markets} markets x {setting.months} months, size log-sd "
        f"{setting.size_sd}, noise log-sd {setting.noise_sd}\n"
        f"window scaling: {setting.scaling} ({which})\n"
        f"model: epochs {model.epochs}, min_steps {model.min_steps}, batch {model.batch_size}, hidden "
        f"{model.hidden_dim}, embedding {model.embedding_dim}, lr {model.learning_rate}; clustering: K-Means at the "
        f"true k={k}, static_weight {setting.weight()}"
    )


DIAGNOSTICS_NOTE = (
    "lstm:patterns / static:mixes = ARI of each single view on the half it can see (K-Means at that half's k);\n"
    "probe = 5-fold CV accuracy of a logistic regression predicting the pattern from the embedding;\n"
    "pc1~size = |corr| between the embedding's first principal component and log planted market size."
)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Run the benchmark; returns ``{method: [ARI per seed]}`` (``--sweep``: of the last setting)."""
    import torch

    defaults = Setting()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=defaults.markets)
    parser.add_argument("--months", type=int, default=defaults.months, help="months of history per market")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--patterns", default=",".join(defaults.patterns), help=f"comma-separated, of {TEMPORAL_PATTERNS}"
    )
    parser.add_argument("--mixes", default=",".join(defaults.mixes), help=f"comma-separated, of {tuple(STATIC_MIXES)}")
    parser.add_argument("--size-sd", type=float, default=defaults.size_sd, help="log-sd of market size (all segments)")
    parser.add_argument("--noise-sd", type=float, default=defaults.noise_sd, help="log-sd of monthly revenue noise")
    parser.add_argument("--epochs", type=int, default=None, help="ModelConfig.epochs (default: the library's)")
    parser.add_argument("--min-steps", type=int, default=None, help="ModelConfig.min_steps (default: the library's)")
    parser.add_argument("--static-weight", type=float, default=None, help="ClusterConfig.static_weight")
    parser.add_argument("--scaling", choices=SCALINGS, default="per-feature", help="per-feature = the pipeline's")
    parser.add_argument("--sweep", action="store_true", help="run the SWEEP settings (one change at a time)")
    parser.add_argument("--output", default="default", help="'default' (results/planted[_sweep].txt), a path, none")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    setting = Setting(
        markets=args.markets,
        months=args.months,
        patterns=tuple(args.patterns.split(",")),
        mixes=tuple(args.mixes.split(",")),
        size_sd=args.size_sd,
        noise_sd=args.noise_sd,
        scaling=args.scaling,
        epochs=args.epochs,
        min_steps=args.min_steps,
        static_weight=args.static_weight,
    )
    if args.sweep:
        return _sweep(setting, args.seeds, args.output)

    report = Report("benchmarks.planted: planted segments, ARI by view")
    report.add(_describe(setting))
    report.add()
    rows, scores = [], {m: [] for m in METHODS}
    columns = [*METHODS, "lstm:patterns", "static:mixes", "probe", "pc1_size", "final_mse"]
    for seed in range(args.seeds):
        result = run_setting(setting, seed)
        for m in METHODS:
            scores[m].append(result[m])
        rows.append([str(seed), *(result[c] for c in columns), f"{result['seconds']:.1f}"])
    report.add("ARI against the planted segments, per seed, and diagnostics:")
    report.add(DIAGNOSTICS_NOTE)
    report.add(table(["seed", *columns[:-2], "pc1~size", "final MSE", "s"], rows))
    report.add()
    report.add(f"summary over {args.seeds} seed(s) (mean ± sd of ARI)")
    report.add(table(["method", "ARI"], [[m, mean_sd(scores[m])] for m in METHODS]))
    report.save(output_path(args.output, "planted"))
    return scores


def _sweep(base: Setting, seeds: int, output: str) -> dict[str, list[float]]:
    from dataclasses import replace

    report = Report("benchmarks.planted --sweep: what moves the hybrid ARI (one change at a time)")
    report.add("base " + _describe(base))
    report.add(f"mean over {seeds} seed(s) per row; " + DIAGNOSTICS_NOTE)
    report.add()
    rows, scores = [], {}
    for label, changes in SWEEP:
        setting = replace(base, **changes)
        results = [run_setting(setting, seed) for seed in range(seeds)]
        scores = {m: [r[m] for r in results] for m in METHODS}

        def avg(key: str, results: list[dict[str, float]] = results) -> float:
            return float(np.mean([r[key] for r in results]))

        rows.append(
            [label, *(avg(c) for c in (*METHODS, "lstm:patterns", "static:mixes", "probe", "pc1_size"))]
            + [f"{avg('seconds'):.0f}"]
        )
        print(f"  {label}: hybrid {avg('hybrid'):.3f}", flush=True)
    headers = ["setting", *METHODS, "lstm:patterns", "static:mixes", "probe", "pc1~size", "s/seed"]
    report.add(table(headers, rows))
    report.save(output_path(output, "planted_sweep"))
    return scores


if __name__ == "__main__":
    main()
