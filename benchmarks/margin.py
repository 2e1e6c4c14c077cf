"""Your features: planted segments that differ ONLY in margin, found when margin is a feature and not without.

    .venv/bin/python -m benchmarks.margin                  # 60 markets, 3 seeds
    .venv/bin/python -m benchmarks.margin --markets 24 --seeds 1 --min-steps 5

Markets are one planted segment in every other respect (``planted.planted_markets`` with one
temporal pattern and one static mix: the same distributions of revenue shape, size, discount,
loyalty, lifetime value and product range), and two by margin: a random half earns 8 % on sales,
the other half 28 % (sd 2 points). The DAG's own steps run on them offline
(``synthetic.offline_run``) with the library's defaults, k chosen by the library, in three
configurations: the seed's seven static features (margin is not one), and the seven plus
``margin`` (``line_ratio`` of profit over sales) at weight 1 (the default) and 3. Printed: adjusted
Rand index (ARI) of the segments against the margin halves, the k found and whether the reason was
"no cluster structure", per seed. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from benchmarks.report import Report, mean_sd, output_path, table

LOW, HIGH, SPREAD = 0.08, 0.28, 0.02
MARGIN = {"name": "margin", "template": "line_ratio", "column": "profit", "denominator": "sales_amount"}
ROWS = {"seed's seven (no margin)": None, "seven + margin, weight 1": 1.0, "seven + margin, weight 3": 3.0}


def margin_markets(n_markets: int, seed: int):
    """Planted markets alike in all but margin; returns ``(planted, margin (n,), half (n,) 0/1)``."""
    from benchmarks.planted import planted_markets

    planted = planted_markets(n_markets, 36, seed, patterns=("flat",), mixes=("mid",))
    rng = np.random.default_rng(seed + 101)
    half = rng.permutation(np.arange(n_markets) % 2)
    margin = np.where(half == 1, HIGH, LOW) + rng.normal(0.0, SPREAD, n_markets)
    return planted, margin, half


def run_row(n_markets: int, seed: int, weight: float | None, min_steps: int | None) -> dict[str, float]:
    """One configuration on one seed: the DAG's steps up to ``align_segments``; ARI against the halves."""
    from sklearn.metrics import adjusted_rand_score

    from benchmarks import synthetic
    from include.segmentation.adapters.storage import read_json, read_parquet
    from include.segmentation.config import DEFAULT_FEATURES, SegmentationConfig

    planted, margin, half = margin_markets(n_markets, seed)
    answers = synthetic.planted_answers(planted)
    answers["static_features"]["margin"] = margin
    data: dict = {"seed": seed, "sequences": {"seq_len": 12, "history_months": 36}}
    if min_steps is not None:
        data["model"] = {"min_steps": min_steps}
    if weight is not None:
        features = [f.model_dump() for f in DEFAULT_FEATURES] + [MARGIN | {"kind": "fraction", "weight": weight}]
        data |= {"static_features": features, "warehouse": {"fact_sale": {"profit": "PROFIT"}}}
    with tempfile.TemporaryDirectory(prefix="margin-") as tmp:
        config = SegmentationConfig.model_validate(data | {"artifacts_dir": tmp})
        run = synthetic.offline_run(config, answers, f"margin-{seed}", "align_segments")
        segments = read_parquet(run.segments).set_index("market_key")
        clustering = read_json(run.clustering)
    keys = synthetic.market_keys(n_markets).astype(str)
    labels = segments.loc[keys, "segment_id"].to_numpy()
    return {
        "ari": float(adjusted_rand_score(half, labels)),
        "k": float(clustering["n_clusters"]),
        "no_structure": float("no clear cluster structure" in clustering["k_reason"]),
    }


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markets", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--min-steps", type=int, default=None, help="model.min_steps (default: the library's)")
    parser.add_argument(
        "--output", default="default", help="results file (default: benchmarks/results/margin.txt; none)"
    )
    args = parser.parse_args(argv)
    report = Report("margin: planted segments that differ only in margin")
    rows, aris = [], {}
    for label, weight in ROWS.items():
        started = time.perf_counter()
        results = [run_row(args.markets, seed, weight, args.min_steps) for seed in range(args.seeds)]
        aris[label] = [r["ari"] for r in results]
        ks = "/".join(str(int(r["k"])) for r in results)
        flat = sum(int(r["no_structure"]) for r in results)
        rows.append([label, mean_sd(aris[label]), ks, f"{flat}/{len(results)}", f"{time.perf_counter() - started:.0f}"])
    report.add(f"{args.markets} markets, {args.seeds} seed(s); margin {LOW:.0%} vs {HIGH:.0%} (sd {SPREAD:.0%})")
    report.add(table(["configuration", "ARI vs margin halves", "k per seed", "no structure", "s"], rows))
    report.save(output_path(args.output, "margin"))
    return aris


if __name__ == "__main__":
    main()
