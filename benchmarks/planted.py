"""Planted segments: does the hybrid view recover segments that neither view alone can see?

    .venv/bin/python -m benchmarks.planted --jobs 2           # 3 designs x size log-sd 0/1/2, 5 seeds
    .venv/bin/python -m benchmarks.planted --sweep --jobs 2   # ablations, one change at a time
    .venv/bin/python -m benchmarks.planted --markets 60 --seeds 1 --epochs 2 --min-steps 0 --designs 0 --sizes 1

Synthetic markets fall into a design of temporal patterns x static mixes (e.g. 2 x 2 = 4 true
segments): two segments with the same static mix differ ONLY in how monthly revenue moves, two with
the same pattern ONLY in discount, loyalty shares, lifetime value and product range. Everything else
(market size, unit price, basket size, noise) is drawn from the same distributions for all segments.

The DAG's own steps embed them, with the library's default settings: ``extract_static_features``
... ``train_autoencoder`` -> ``embed_markets`` (latest window), on the markets' monthly aggregates
and static features as the warehouse would return them (``benchmarks.synthetic.offline_run``); then
``clustering.cluster_markets`` (hybrid, K-Means with k chosen by the library: nothing hands it the
planted k). The single views are K-Means at the hybrid's k on the standardized embedding (LSTM-only)
and on the standardized static features (static-only). Printed: adjusted Rand index (ARI) against
the planted segments, mean ± sd over seeds, and the k found per seed. Figures, not pass/fail.
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

    ``grid``: ``(n_markets, n_months, 4)`` float64 monthly aggregates in ``features.MONTHLY_COLUMNS``
    order - revenue (currency), quantity (units), n_lines (order lines), n_customers (distinct
    customers). ``static``: ``(n_markets, 7)`` float64 in ``features.STATIC_FEATURES`` order -
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


#: How windows are scaled before the autoencoder. ``pipeline`` is what the DAG's steps do (``shape_windows``
#: then ``FeatureScaler``, in ``prepare_inputs``); the others are ablations: ``levels`` keeps each window's
#: level (the pipeline before shape_windows: the embedding then follows market size), ``per-series``
#: z-scores every feature over the window (erases amplitude too).
SCALINGS = ("pipeline", "levels", "per-series")


def rescale_windows(windows: np.ndarray, how: str) -> np.ndarray:
    """Apply a window-level transform to ``(n, seq_len, 4)`` feature windows before ``FeatureScaler``.

    ``pipeline``: ``sequences.shape_windows``. ``levels``: unchanged. ``per-series``: every feature
    z-scored over the window (sd 0 -> 1). Returns float64 ``(n, seq_len, 4)``.
    """
    from include.segmentation.core.sequences import shape_windows

    x = np.array(windows, dtype=np.float64)
    if how == "pipeline":
        return shape_windows(x)
    if how == "levels":
        return x
    if how == "per-series":
        sd = x.std(axis=1, keepdims=True)
        return (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 1e-12, sd, 1.0)
    raise ValueError(f"unknown scaling {how!r}; expected one of {SCALINGS}")


def embed_single_thread(trained: object, windows: np.ndarray) -> np.ndarray:
    """``autoencoder.embed`` of ``(n, seq_len, n_features)`` windows -> ``(n, embedding_dim)``, on one CPU thread
    (the benchmarks run on one thread throughout; ``embed`` would otherwise use every core)."""
    from include.segmentation.core.autoencoder import embed

    return embed(trained, windows, cpu_threads=1)


def pipeline_embedding(planted: PlantedMarkets, seq_len: int, model: object, seed: int) -> tuple[np.ndarray, float]:
    """The DAG's steps from ``extract_static_features`` to ``embed_markets`` on ``planted`` (no warehouse:
    ``synthetic.offline_run``; ``config.seed`` = ``seed``; ``model`` a ``ModelConfig``).

    Returns ``((n_markets, embedding_dim) float32 in the planted markets' order, final training MSE)``.
    Raises ``ValueError`` when the data-quality gate excluded a planted market.
    """
    import tempfile

    from benchmarks import synthetic
    from include.segmentation.adapters.storage import read_json, read_parquet
    from include.segmentation.config import SegmentationConfig

    sequences = {"seq_len": seq_len, "history_months": planted.grid.shape[1]}
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        config = SegmentationConfig.model_validate(
            {"artifacts_dir": tmp, "seed": seed, "model": model.model_dump(), "sequences": sequences}
        )
        run = synthetic.offline_run(config, synthetic.planted_answers(planted), f"planted-{seed}", "embed_markets")
        frame = read_parquet(run.embeddings).set_index("market_key")
        loss = float(read_json(run.model)["final_loss"])
    keys = synthetic.market_keys(len(planted.grid)).astype(str)
    missing = keys[~np.isin(keys, frame.index.to_numpy(dtype=str))]
    if len(missing):
        raise ValueError(
            f"the data-quality gate excluded {len(missing)} planted market(s), e.g. {missing[:3].tolist()}"
        )
    return frame.loc[keys].to_numpy(dtype=np.float32), loss


def embed_latest(
    planted: PlantedMarkets, seq_len: int, model: object, seed: int, scaling: str = "pipeline"
) -> tuple[np.ndarray, float]:
    """Train the autoencoder on the windows of ``planted`` and embed each market's latest window.

    ``model`` is a ``ModelConfig``. ``scaling="pipeline"``: the DAG's steps do it (``pipeline_embedding``);
    other scalings (``rescale_windows``) train on all markets' windows but the held-out ones, as
    ``sequences.model_inputs`` does (``min_active_months=3``), with another window transform.
    Returns ``((n_markets, embedding_dim) float32, final training MSE)``.
    """
    from include.segmentation.core import sequences as seq
    from include.segmentation.core.autoencoder import train_autoencoder

    if scaling == "pipeline":
        return pipeline_embedding(planted, seq_len, model, seed)
    features = seq.sequence_features(planted.grid)
    active = planted.grid[..., 2] > 0
    held = seq.holdout_markets(len(features), model.validation_share, seed)
    train, valid = (
        rescale_windows(seq.training_windows(features, active, seq_len, 3, cap, seed, rows), scaling)
        for cap, rows in ((None, ~held), (4096, held))
    )
    scaler = seq.FeatureScaler.fit(train)
    train, valid = scaler.transform(train), scaler.transform(valid)
    latest = scaler.transform(rescale_windows(features[:, -seq_len:], scaling))
    trained = train_autoencoder(train, model, seed=seed, validation=valid)
    return embed_single_thread(trained, latest), trained.losses[-1]


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

    from include.segmentation.core.clustering import standardize

    z = standardize(embedding)
    folds = int(min(5, np.bincount(pattern).min()))
    probe = LogisticRegression(max_iter=2000)
    accuracy = float(cross_val_score(probe, z, pattern, cv=folds).mean()) if folds >= 2 else float("nan")
    pc1 = PCA(n_components=1, random_state=seed).fit_transform(z)[:, 0]
    return {"probe": accuracy, "pc1_size": float(abs(np.corrcoef(pc1, np.log(size))[0, 1]))}


def score_views(
    static: np.ndarray,
    embedding: np.ndarray,
    truth: np.ndarray,
    k: int | None,
    static_weight: float,
    seed: int,
    size: np.ndarray | None = None,
    size_weight: float = 0.0,
) -> dict[str, float]:
    """ARI of the hybrid, LSTM-only and static-only segmentations against ``truth``.

    ``static`` ``(n, 7)``, ``embedding`` ``(n, e)``, ``truth`` ``(n,)`` labels. Hybrid: the library's
    ``clustering.cluster_markets`` with k chosen by the library (``k=None``, what a user gets) or
    fixed at ``k``; single views: K-Means (10 inits) on ``clustering.standardize`` of that view at the
    hybrid's k. ``size`` ``(n,)`` log market size, weighed by ``size_weight``. ``k`` in the result: the
    hybrid's number of segments.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from include.segmentation.config import ClusterConfig
    from include.segmentation.core.clustering import cluster_markets, standardize

    config = ClusterConfig(n_clusters=k, static_weight=static_weight, size_weight=size_weight)
    result = cluster_markets(static, embedding, config, seed, size=size)
    k = result.n_clusters

    def view(x: np.ndarray) -> np.ndarray:
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(standardize(x))

    return {
        "hybrid": float(adjusted_rand_score(truth, result.labels)),
        "lstm-only": float(adjusted_rand_score(truth, view(embedding))),
        "static-only": float(adjusted_rand_score(truth, view(static))),
        "k": float(k),
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
    scaling: str = "pipeline"
    true_k: bool = False  # True: cluster at the planted k (hands the model the answer); False: the library chooses
    epochs: int | None = None  # None: ModelConfig's default
    min_steps: int | None = None
    static_weight: float | None = None  # None: ClusterConfig's default
    size_weight: float = 0.0  # ClusterConfig.size_weight (the library's default is 0)

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
    z, loss = embed_latest(planted, seq_len, setting.model(), seed, setting.scaling)
    weight = setting.weight()
    from include.segmentation.core.clustering import market_size

    size = market_size(planted.grid[:, -seq_len:, 0].mean(axis=1))
    out = score_views(
        planted.static, z, planted.segment, k if setting.true_k else None, weight, seed, size, setting.size_weight
    )
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


#: The default run: the issue's designs x market size spreads, everything else the library's defaults.
DESIGNS: tuple[tuple[str, dict], ...] = (
    ("growing/declining x 2 mixes", {"patterns": ("growing", "declining"), "mixes": ("premium", "value")}),
    ("seasonal/flat x 2 mixes", {"patterns": ("seasonal", "flat"), "mixes": ("premium", "value")}),
    (
        "3 patterns x 3 mixes",
        {"patterns": ("growing", "declining", "seasonal"), "mixes": ("premium", "value", "mid")},
    ),
)
SIZE_SDS = (0.0, 1.0, 2.0)

#: ``--sweep``: one change at a time from growing/declining x 2 mixes at size log-sd 1 (label, changes).
SWEEP: tuple[tuple[str, dict], ...] = (
    ("default (k chosen, pipeline scaling)", {}),
    ("  k fixed at the planted 4 (hands the answer)", {"true_k": True}),
    ("  scaling levels (window level kept)", {"scaling": "levels"}),
    ("  scaling per-series", {"scaling": "per-series"}),
    ("  size_weight 0.2", {"size_weight": 0.2}),
    ("  static_weight 0.3", {"static_weight": 0.3}),
    ("  static_weight 0.7", {"static_weight": 0.7}),
    ("  noise log-sd 0.3", {"noise_sd": 0.3}),
)


def _describe(setting: Setting) -> str:
    model = setting.model()
    k = len(setting.patterns) * len(setting.mixes)
    which = "the pipeline's" if setting.scaling == "pipeline" else "an ablation, not the pipeline's"
    how_k = f"K-Means at the planted k={k}" if setting.true_k else "K-Means, k chosen by the library (gap statistic)"
    return (
        f"design: {len(setting.patterns)} patterns {setting.patterns} x {len(setting.mixes)} static mixes "
        f"{setting.mixes} = {k} segments; {setting.markets} markets x {setting.months} months, size log-sd "
        f"{setting.size_sd}, noise log-sd {setting.noise_sd}\n"
        f"window scaling: {setting.scaling} ({which})\n"
        f"model: epochs {model.epochs}, min_steps {model.min_steps}, max_steps {model.max_steps}, early stopping "
        f"patience {model.patience}, batch {model.batch_size}, hidden {model.hidden_dim}, embedding "
        f"{model.embedding_dim}, lr {model.learning_rate}; clustering: {how_k}, static_weight {setting.weight()}, "
        f"size_weight {setting.size_weight}"
    )


DIAGNOSTICS_NOTE = (
    "k = segments the hybrid found; lstm-only / static-only = K-Means on that view alone at the hybrid's k;\n"
    "lstm:patterns / static:mixes = ARI of each single view on the half it can see (K-Means at that half's k);\n"
    "probe = 5-fold CV accuracy of a logistic regression predicting the pattern from the embedding;\n"
    "pc1~size = |corr| between the embedding's first principal component and log planted market size."
)

COLUMNS = (*METHODS, "k", "lstm:patterns", "static:mixes", "probe", "pc1_size")


def _rows(label: str, setting: Setting, seeds: int, jobs: int) -> tuple[list, list[dict[str, float]]]:
    from concurrent.futures import ProcessPoolExecutor

    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(run_setting, [setting] * seeds, range(seeds)))
    else:
        results = [run_setting(setting, seed) for seed in range(seeds)]
    row = [label]
    for c in COLUMNS:
        values = [r[c] for r in results]
        if c == "k":
            row.append(",".join(str(int(v)) for v in values))
        elif c in METHODS:
            row.append(mean_sd(values))
        else:
            row.append(float(np.mean(values)))
    row.append(f"{np.mean([r['seconds'] for r in results]):.0f}")
    print(f"  {label}: hybrid {row[1]}, k {row[4]}", flush=True)
    return row, results


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Run the benchmark; returns ``{row label: [hybrid ARI per seed]}``."""
    import torch

    defaults = Setting()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=defaults.markets)
    parser.add_argument("--months", type=int, default=defaults.months, help="months of history per market")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", default=",".join(map(str, SIZE_SDS)), help="market size log-sds of the grid")
    parser.add_argument("--designs", default="all", help="'all' or comma-separated indices into DESIGNS")
    parser.add_argument("--epochs", type=int, default=None, help="ModelConfig.epochs (default: the library's)")
    parser.add_argument("--min-steps", type=int, default=None, help="ModelConfig.min_steps (default: the library's)")
    parser.add_argument("--sweep", action="store_true", help="run the SWEEP settings (one change at a time)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes (1 thread each)")
    parser.add_argument("--output", default="default", help="'default' (results/planted[_sweep].txt), a path, none")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    base = Setting(markets=args.markets, months=args.months, epochs=args.epochs, min_steps=args.min_steps)
    from dataclasses import replace

    if args.sweep:
        report = Report("benchmarks.planted --sweep: what moves the hybrid ARI (one change at a time)")
        plan = [(label, replace(base, size_sd=1.0, **changes)) for label, changes in SWEEP]
        report.add("base " + _describe(plan[0][1]))
    else:
        report = Report("benchmarks.planted: planted segments, ARI by view, default settings (k chosen)")
        picked = DESIGNS if args.designs == "all" else [DESIGNS[int(i)] for i in args.designs.split(",")]
        sizes = [float(v) for v in args.sizes.split(",")]
        plan = [
            (f"{label}, size log-sd {sd:g}", replace(base, size_sd=sd, **changes))
            for label, changes in picked
            for sd in sizes
        ]
        report.add("base " + _describe(replace(base, **picked[0][1])) + "; rows vary the design and size")
    report.add(f"mean ± sd over {args.seeds} seed(s) per row (k: per seed); " + DIAGNOSTICS_NOTE)
    report.add()
    rows, scores = [], {}
    for label, setting in plan:
        row, results = _rows(label, setting, args.seeds, args.jobs)
        rows.append(row)
        scores[label] = [r["hybrid"] for r in results]
    headers = ["setting", *METHODS, "k per seed", "lstm:patterns", "static:mixes", "probe", "pc1~size", "s/seed"]
    report.add(table(headers, rows))
    report.save(output_path(args.output, "planted_sweep" if args.sweep else "planted"))
    return scores


if __name__ == "__main__":
    main()
