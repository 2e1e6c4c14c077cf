"""Segmentation stability on AdventureWorks: across seeds (same month) and across consecutive months.

    .venv/bin/python -m benchmarks.stability                     # 2013-07..2013-12, 3 seeds
    .venv/bin/python -m benchmarks.stability --source synthetic --months 2013-11,2013-12 --seeds 2 --min-steps 5

Runs the DAG's steps (``steps.run_month``) month by month on the embedded warehouse (fakesnow,
in-process, its files in a temporary folder), once per ``config.seed`` (the per-month seed is
``steps.month_seed``), one warehouse and artifact folder per seed. Each month is written, as the
DAG writes it, so the next month continues from it (warm start of the encoder, k and segment
centres). Compares the ``segment_id`` of each run's ``segments.parquet`` (``RunArtifacts.segments``)
by adjusted Rand index (ARI) on the markets two runs share:

- seed stability: the same month, two seeds (every pair of seeds);
- month stability: the same seed, a month and the month after.

k is chosen per run by the library (``k_selection``) unless ``--n-clusters`` fixes it; each run's
reason for its k is printed. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from benchmarks.report import Report, mean_sd, output_path, table


def shared_ari(a: pd.Series, b: pd.Series) -> tuple[float, int]:
    """ARI between two segmentations (market key -> segment id) on their shared markets, and how many.

    NaN when fewer than 2 markets are shared.
    """
    from sklearn.metrics import adjusted_rand_score

    shared = a.index.intersection(b.index)
    if len(shared) < 2:
        return float("nan"), len(shared)
    return float(adjusted_rand_score(a.loc[shared].to_numpy(), b.loc[shared].to_numpy())), len(shared)


def run_grid(
    star: dict[str, pd.DataFrame],
    months: list[pd.Period],
    seeds: list[int],
    workdir: Path,
    overrides: dict,
    continuity: bool = True,
) -> tuple[dict[tuple[int, pd.Period], pd.Series], dict[tuple[int, pd.Period], dict]]:
    """Load ``star`` into one emulator per seed under ``workdir`` and run and write every (seed, month).

    ``continuity=False`` makes every run a dry run: nothing is written, so each month starts afresh.
    ``overrides`` are merged into the configuration (``load_config()``: ``SEGMENTATION_CONFIG`` if set)
    section by section. Returns ``({(seed, month): segment ids by market key}, {(seed, month): the
    run's metrics (``RunArtifacts.metrics``: k, why, silhouettes, training) plus wall seconds})``.
    """
    import fakesnow
    import snowflake.connector

    from include.segmentation.config import SegmentationConfig, load_config
    from include.segmentation.local.demo_data import load_star

    base = load_config().model_dump(by_alias=True)
    for section, values in overrides.items():
        base[section] = base[section] | values if isinstance(values, dict) else values
    segments, info = {}, {}
    for seed in seeds:
        # One warehouse per seed: each seed's months follow on from its own written months only.
        (workdir / f"warehouse-{seed}").mkdir(parents=True, exist_ok=True)
        with fakesnow.patch(db_path=str(workdir / f"warehouse-{seed}")):
            warehouse = SegmentationConfig.model_validate(base).warehouse
            conn = snowflake.connector.connect(database=warehouse.database, schema=warehouse.schema_)
            try:
                load_star(conn, star, warehouse)
            finally:
                conn.close()
            config = SegmentationConfig.model_validate(
                base | {"seed": seed, "artifacts_dir": str(workdir / f"artifacts-seed{seed}")}
            )
            for month in months:
                segments[(seed, month)], info[(seed, month)] = run_one(
                    config, month, f"stability-{seed}-{month}", continuity
                )
    return segments, info


def run_one(config: object, month: pd.Period, run_id: str, continuity: bool) -> tuple[pd.Series, dict]:
    """``steps.run_month`` for one month (a dry run without ``continuity``): the segment ids by market
    key, and the run's metrics plus wall seconds. Prints one line."""
    from include.segmentation import steps
    from include.segmentation.adapters.catalog import RunArtifacts
    from include.segmentation.adapters.storage import read_json, read_parquet

    start = time.perf_counter()
    result = steps.run_month(config, month, run_id=run_id, dry_run=not continuity)
    run = RunArtifacts.open(result["folder"])
    frame = read_parquet(run.segments)
    metrics = read_json(run.metrics) | {"seconds": time.perf_counter() - start}
    print(
        f"  {run_id}: {len(frame)} markets, k={metrics['n_clusters']}, {metrics['seconds']:.1f} s; "
        f"{metrics['k_reason']}; {metrics['training']}",
        flush=True,
    )
    return pd.Series(frame["segment_id"].to_numpy(), index=frame["market_key"].astype(str).to_numpy()), metrics


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--months", default="2013-07,2013-08,2013-09,2013-10,2013-11,2013-12")
    parser.add_argument("--seeds", type=int, default=3, help="config.seed = 2024, 2025, ...")
    parser.add_argument("--source", choices=["adventureworks", "synthetic"], default="adventureworks")
    parser.add_argument("--epochs", type=int, default=None, help="ModelConfig.epochs (default: the library's)")
    parser.add_argument("--min-steps", type=int, default=None, help="ModelConfig.min_steps (default: the library's)")
    parser.add_argument("--n-clusters", type=int, default=None, help="fix k (default: chosen by the library)")
    parser.add_argument("--output", default="default", help="'default' (results/stability.txt), a path, or none")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    """Configuration sections to override: one CPU thread, and the options given."""
    given = {"epochs": args.epochs, "min_steps": args.min_steps}
    overrides: dict = {"model": {"cpu_threads": 1} | {k: v for k, v in given.items() if v is not None}}
    if args.n_clusters is not None:
        overrides["clustering"] = {"n_clusters": args.n_clusters}
    return overrides


def _run_in_emulator(star: dict, months: list, seeds: list[int], overrides: dict) -> tuple[dict, dict, float]:
    """``run_grid`` in a temporary folder, the steps' Airflow connection answered in-process; and its seconds."""
    from include.segmentation.local.emulator import connection_json

    with tempfile.TemporaryDirectory(prefix="stability-") as tmp:
        # The steps reach the warehouse through an Airflow connection; fakesnow.patch answers it
        # in-process. Without an AIRFLOW_HOME, a throw-away one keeps Airflow from creating ~/airflow
        # (left set: Airflow reads it once, at import).
        os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.mkdtemp(prefix="stability-airflow-"))))
        with mock.patch.dict(os.environ, {"AIRFLOW_CONN_SNOWFLAKE_DEFAULT": connection_json(8765)}):
            start = time.perf_counter()
            segments, info = run_grid(star, months, seeds, Path(tmp), overrides)
            return segments, info, time.perf_counter() - start


def _runs_table(segments: dict, info: dict) -> str:
    rows = []
    for (seed, month), i in info.items():
        markets = str(len(segments[(seed, month)]))
        silhouette = i["silhouette_hybrid"] or np.nan
        rows.append([str(seed), str(month), str(i["n_clusters"]), markets, silhouette, f"{i['seconds']:.1f}"])
    return table(["seed", "month", "k", "markets", "silhouette", "s"], rows)


def _seed_pairs(segments: dict, info: dict, months: list, seeds: list[int]) -> tuple[list, list[float]]:
    """Per month: the ARI of every pair of seeds (rows for the table, and all the scores)."""
    rows, scores = [], []
    for month in months:
        pairs = [shared_ari(segments[(a, month)], segments[(b, month)]) for a, b in itertools.combinations(seeds, 2)]
        scores += [v for v, _ in pairs]
        ks = sorted({info[(s, month)]["n_clusters"] for s in seeds})
        rows.append([str(month), str(len(pairs)), mean_sd([v for v, _ in pairs]), ",".join(map(str, ks))])
    return rows, scores


def _month_pairs(segments: dict, months: list, seeds: list[int]) -> tuple[list, list[float]]:
    """Per seed: the ARI of each month and the month after (rows for the table, and the scores)."""
    rows, scores = [], []
    for seed in seeds:
        for a, b in itertools.pairwise(months):
            value, n = shared_ari(segments[(seed, a)], segments[(seed, b)])
            scores.append(value)
            rows.append([str(seed), f"{a} -> {b}", str(n), value])
    return rows, scores


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Run the benchmark; returns ``{"seed": [ARI per month, seed pair], "month": [ARI per seed, month pair]}``."""
    import torch

    from include.segmentation.local import demo_data

    args = _parser().parse_args(argv)
    torch.set_num_threads(1)
    months = [pd.Period(m, "M") for m in args.months.split(",")]
    seeds = [2024 + i for i in range(args.seeds)]
    overrides = _overrides(args)
    report = Report("benchmarks.stability: ARI between segmentations across seeds and consecutive months")
    star = demo_data.adventureworks_star() if args.source == "adventureworks" else demo_data.synthetic_star()
    report.add(
        f"data: {args.source} ({len(star['fact_sale']):,} fact rows, {star['territory'].shape[0]} markets); "
        f"months {args.months}; config.seed {seeds}; overrides {overrides}"
    )
    segments, info, total = _run_in_emulator(star, months, seeds, overrides)
    report.add()
    report.add("runs (k chosen, markets segmented, silhouette of the hybrid view)")
    report.add(_runs_table(segments, info))
    seed_rows, seed_scores = _seed_pairs(segments, info, months, seeds)
    month_rows, month_scores = _month_pairs(segments, months, seeds)
    report.add()
    report.add("seed stability: same month, every pair of seeds (ARI on shared markets)")
    report.add(table(["month", "pairs", "ARI", "k per seed"], seed_rows))
    report.add()
    report.add("month stability: same seed, consecutive months (ARI on shared markets)")
    report.add(table(["seed", "months", "shared", "ARI"], month_rows))
    report.add()
    summary = [
        ["across seeds (same month)", mean_sd(seed_scores)],
        ["across months (same seed)", mean_sd(month_scores)],
    ]
    report.add(table(["summary", "ARI"], summary))
    report.add(f"total {total:.0f} s for {len(info)} runs")
    report.save(output_path(args.output, "stability"))
    return {"seed": seed_scores, "month": month_scores}


if __name__ == "__main__":
    main()
