"""Scale: wall time and peak memory of each of the DAG's steps, 1,000 to 1,000,000 markets x 36 months.

    .venv/bin/python -m benchmarks.scale                     # 1k, 10k, 100k, 1M markets; DTW at 1k and 5k
    .venv/bin/python -m benchmarks.scale --sizes 1000,10000 --dtw-sizes 1000 --output none

Each size runs in a fresh subprocess: ``steps.start_run``, then every step of ``steps.STEPS`` on that
run in the DAG's order (``extract_static_features`` ... ``write_segments``), each timed on its own.
It is the code the DAG's tasks run, catalogue files included; Airflow's scheduling and XCom are not.

The warehouse is the embedded one (fakesnow on DuckDB) served over the Snowflake protocol in its own
process, reached through the Airflow connection as the tasks reach Snowflake, and loaded with a
generated star schema (``benchmarks.synthetic``) of 1-2 fact lines per market and month. Above
``--sql-max`` markets its load would dominate the run: the steps' source queries (``SOURCE_QUERIES``)
are then answered with frames generated with those queries' columns, and the steps do the rest as
always (``read_previous`` and ``write_segments`` still on the served warehouse). The steps'
``render_sql`` / ``query_frame`` are wrapped (``synthetic.Warehouse``) to time each query and give those
answers; nothing else is replaced. The month is a first month (no earlier one in the warehouse): no
warm start, k and centres chosen afresh, every SegmentID new.

Peak memory: the process's resident-set high-water mark (VmHWM), reset at the start of each step
through ``/proc/self/clear_refs`` (write "5"), read at its end; it includes what the process holds
from earlier steps (for a generated size, the generated answers until their step asks for them). The
served warehouse's own peak is reported apart. Growth exponents are ``log(t2 / t1) / log(n2 / n1)``
between consecutive sizes.

Then: training throughput (sequences/s) of ``core.autoencoder.train_autoencoder`` on the training
windows ``prepare_inputs`` writes, against a bare loop of the same model's forward/backward/Adam step
on the same tensors, same batch and steps, 5 interleaved runs each (best run compared: interference
only adds time), with the configured threads and with one; and, on planted segments
(``benchmarks.planted``), the steps from ``extract_static_features`` to ``cluster_markets`` (k chosen
by the library) next to raw K-Means and tslearn's ``TimeSeriesKMeans(metric="dtw")`` at the true k,
in the same process (DTW skipped with a note without tslearn: ``pip install -r requirements-bench.txt``).
Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

from benchmarks import synthetic
from benchmarks.report import Report, output_path, table
from benchmarks.synthetic import HISTORY, MONTH, SOURCE_QUERIES
from include.segmentation import steps
from include.segmentation.adapters.storage import read_npz, read_parquet
from include.segmentation.config import ClusterConfig, ModelConfig, SegmentationConfig

ROOT = Path(__file__).resolve().parents[1]
STAGES = tuple(step.__name__ for step in steps.STEPS)
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------------------------
# The steps, measured
# --------------------------------------------------------------------------------------------


def bench_config(folder: Path, threads: int, max_steps: int | None) -> SegmentationConfig:
    """The default configuration, artifacts under ``folder``, ``threads`` torch threads, ``max_steps`` if given."""
    model = {"cpu_threads": threads} | ({"max_steps": max_steps} if max_steps else {})
    return SegmentationConfig.model_validate({"artifacts_dir": str(folder / "artifacts"), "model": model})


def _status_mib(field: str, pid: str = "self") -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else float("nan")


class Stages:
    """Wall time and VmHWM per stage."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str):
        with suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        start, cpu = time.perf_counter(), time.process_time()
        yield
        r = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}
        self.results[name] = r | {"peak_mib": _status_mib("VmHWM")}
        print(f"  {name:<24} {r['seconds']:8.1f} s  {self.results[name]['peak_mib']:8.0f} MiB", flush=True)


@contextmanager
def served_warehouse(db_path: Path, warehouse: Any):
    """The embedded warehouse on ``db_path``, served on a free port in its own process and named by the
    Airflow connection ``warehouse.conn_id`` (as the tasks find Snowflake); yields the server's pid and
    stops the server (by its pid) afterwards. Its database and schema are created, and the steps'
    connection code imported, before anything is timed."""
    from include.segmentation.adapters.warehouse import connect
    from include.segmentation.local.emulator import connection_json, served

    with served(db_path, log=db_path.parent / "emulator.log", env=_child_env()) as server:
        connection = {f"AIRFLOW_CONN_{warehouse.conn_id.upper()}": connection_json(server.port)}
        with mock.patch.dict(os.environ, connection):
            with connect(warehouse) as conn:
                conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {warehouse.database}")
                conn.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {warehouse.database}.{warehouse.schema_}")
            yield server.pid


def load_warehouse(db_path: Path, n: int, seed: int, warehouse: Any) -> int:
    """Generate and load the star schema for ``n`` markets into emulator files at ``db_path`` (in-process);
    returns the fact lines loaded."""
    import warnings

    import fakesnow
    import snowflake.connector

    from include.segmentation.local import demo_data

    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    db_path.mkdir(parents=True, exist_ok=True)
    with fakesnow.patch(db_path=db_path):
        conn = snowflake.connector.connect(database=warehouse.database, schema=warehouse.schema_)
        try:
            return demo_data.load_star(conn, synthetic.synthetic_star(n, seed), warehouse)[warehouse.fact_sale.name]
        finally:
            conn.close()


def _figures(results: dict, stages: dict, config: SegmentationConfig) -> dict:
    """The run's figures from the steps' results and timings."""
    trained, windows = results["train_autoencoder"], results["prepare_inputs"]["n_train_windows"]
    batch = config.model.gpu_batch_size if trained["device"] == "cuda" else config.model.batch_size
    return {
        "eligible": results["check_data_quality"]["n_markets"],
        "excluded": results["check_data_quality"]["n_excluded"],
        "train_windows": windows,
        "train_steps": trained["steps"],
        "train_stop": trained["stop_reason"],
        "train_seq_per_s": trained["steps"] * min(batch, windows) / stages["train_autoencoder"]["seconds"],
        "encode_seq_per_s": results["embed_markets"]["n_markets"] / stages["embed_markets"]["seconds"],
        "k": results["cluster_markets"]["n_clusters"],
        "silhouette_hybrid": results["cluster_markets"]["silhouette_hybrid"],
        "rows_written": results["write_segments"]["rows_written"],
    }


def run_size(n: int, sql: bool, threads: int, max_steps: int | None, seed: int = 0) -> dict:
    """Every step for ``n`` markets; returns ``{"stages": {step: {seconds, cpu_seconds, peak_mib}}, "info": ...}``."""
    # No passive_openmp() here: as in the DAG's training task, torch keeps its default spin-waiting.
    import torch

    torch.set_num_threads(threads)
    stages, info = Stages(), {"markets": n, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        config, db_path = bench_config(Path(tmp), threads, max_steps), Path(tmp) / "warehouse"
        start = time.perf_counter()
        if sql:
            info["fact_lines"] = load_warehouse(db_path, n, seed, config.warehouse)
        source = synthetic.Warehouse(None if sql else synthetic.generated_answers(n, seed))
        info["setup_seconds"] = time.perf_counter() - start
        with served_warehouse(db_path, config.warehouse) as server_pid, source.patched():
            run = steps.start_run(config, MONTH, "scale-bench")
            results = synthetic.run_steps(run, stage=stages.stage)
            info["warehouse_peak_mib"] = _status_mib("VmHWM", str(server_pid))
    info |= {"sql_queries": source.seconds, "monthly_rows": source.rows.get("monthly_sales", 0)}
    return {"stages": stages.results, "info": info | _figures(results, stages.results, config)}


# --------------------------------------------------------------------------------------------
# Training throughput: the library's loop against a bare loop
# --------------------------------------------------------------------------------------------


def throughput(n_markets: int, n_steps: int, threads: int, repeats: int = 5, seed: int = 0) -> dict:
    """Sequences/s of ``train_autoencoder`` and of a bare forward/backward/step loop of the same model on
    the training windows ``prepare_inputs`` writes, same batch size and steps, interleaved ``repeats`` times."""
    import torch

    from include.segmentation.core.autoencoder import _build_model, train_autoencoder

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="scale-throughput-") as tmp:
        config = bench_config(Path(tmp), threads, None)
        run = synthetic.offline_run(
            config, synthetic.generated_answers(n_markets, seed), "scale-throughput", "prepare_inputs"
        )
        train = read_npz(run.inputs)["train"]
    model = ModelConfig(epochs=1, min_steps=0, max_steps=n_steps, cpu_threads=threads)
    batch, data = model.batch_size, torch.from_numpy(train)

    def library() -> float:
        start = time.perf_counter()
        train_autoencoder(train, model, seed=seed)
        return time.perf_counter() - start

    def bare() -> float:
        torch.manual_seed(seed)
        net = _build_model(train.shape[2], model.hidden_dim, model.embedding_dim, model.num_layers)
        optimizer = torch.optim.Adam(net.parameters(), lr=model.learning_rate)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train)))
        start = time.perf_counter()
        for i in range(n_steps):
            x = data[order[i * batch : (i + 1) * batch]]
            loss = torch.nn.functional.mse_loss(net(x), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    runs = [(library(), bare()) for _ in range(repeats)]
    work = n_steps * batch
    return {
        "threads": threads,
        "steps": n_steps,
        "batch": batch,
        "windows": len(train),
        "library": [work / lib for lib, _ in runs],
        "bare": [work / b for _, b in runs],
    }


# --------------------------------------------------------------------------------------------
# Peers: raw K-Means and DTW K-Means on planted segments
# --------------------------------------------------------------------------------------------


def _ours(planted: Any, config: SegmentationConfig, run_id: str) -> tuple[float, float]:
    """Seconds and ARI of the steps ``extract_static_features`` ... ``cluster_markets`` on ``planted``."""
    from sklearn.metrics import adjusted_rand_score

    answers = synthetic.planted_answers(planted)
    start = time.perf_counter()
    run = synthetic.offline_run(config, answers, run_id, "cluster_markets")
    seconds = time.perf_counter() - start
    clusters = read_parquet(run.clusters)
    truth = pd.Series(planted.segment, index=synthetic.market_keys(len(planted.segment)).astype(str))
    return seconds, float(adjusted_rand_score(truth.loc[clusters["market_key"]], clusters["label"]))


def _peers(planted: Any, k: int, seed: int, threads: int) -> list[dict]:
    """Raw K-Means (the floor any model must beat) and tslearn's DTW K-Means, both at the true k."""
    from sklearn.metrics import adjusted_rand_score

    from include.segmentation.config import SequenceConfig
    from include.segmentation.core import sequences as seq
    from include.segmentation.core.clustering import cluster_markets, standardize

    seq_len = SequenceConfig().seq_len
    rows = []

    def timed(method: str, fit: Any) -> None:
        start = time.perf_counter()
        labels = fit()
        ari = float(adjusted_rand_score(planted.segment, labels))
        rows.append({"method": method, "seconds": time.perf_counter() - start, "ari": ari})

    features = seq.sequence_features(planted.grid)
    series = seq.FeatureScaler.fit(features).transform(features)  # (n, 36, 4), our scaling
    flat = series[:, -seq_len:].reshape(len(series), -1)
    # The flattened scaled windows + static, weighted as our hybrid blocks are.
    method = "raw K-Means, flattened windows + static (true k)"
    timed(method, lambda: cluster_markets(planted.static, flat, ClusterConfig(n_clusters=k), seed).labels)
    try:
        from tslearn.clustering import TimeSeriesKMeans
    except ImportError:
        return rows
    static = standardize(planted.static).astype(np.float32)
    with_static = np.concatenate([series, np.repeat(static[:, None, :], series.shape[1], axis=1)], axis=2)
    for method, x in (
        ("tslearn DTW K-Means, 36 x 4 series", series),
        ("tslearn DTW K-Means, + 7 static channels", with_static),
    ):
        dtw = TimeSeriesKMeans(n_clusters=k, metric="dtw", random_state=seed, n_jobs=threads)
        timed(method, lambda x=x, dtw=dtw: dtw.fit_predict(x))
    return rows


def peer_comparison(n_markets: int, threads: int, max_steps: int | None, seed: int = 0) -> dict:
    """Our steps (k chosen by the library) against raw K-Means on flattened windows + static and tslearn's
    DTW K-Means (both at the true k: they are handed the answer), same planted markets, same process."""
    import torch

    from benchmarks.planted import planted_markets

    torch.set_num_threads(threads)
    planted = planted_markets(n_markets, HISTORY, seed)
    k = len(planted.patterns) * len(planted.mixes)
    budget = max_steps or ModelConfig().max_steps
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-peers-") as tmp:
        for limit in [budget, 500] if budget > 500 else [budget]:
            seconds, ari = _ours(planted, bench_config(Path(tmp), threads, limit), f"planted-{limit}")
            label = f"ours (LSTM-AE hybrid, {limit} steps)" if limit == budget else f"ours, max_steps={limit}"
            rows.append({"method": label, "seconds": seconds, "ari": ari})
    rows += _peers(planted, k, seed, threads)
    note = {} if importlib.util.find_spec("tslearn") else {"note": "tslearn not installed: DTW skipped"}
    return {"markets": n_markets, "k": k, "rows": rows} | note


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


#: What runs in a child process (``_child``).
CHILDREN = {"run_size": run_size, "throughput": throughput, "peer_comparison": peer_comparison}


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _child(function: str, **kwargs: Any) -> dict:
    """``function(**kwargs)`` (of ``CHILDREN``) in a fresh process, its memory and threads its own;
    ``{"error": ...}`` when it fails."""
    with tempfile.TemporaryDirectory(prefix="scale-child-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.scale", "--child", function, json.dumps(kwargs), str(out)]
        proc = subprocess.run(command, cwd=ROOT, env=_child_env(), check=False)
        return json.loads(out.read_text()) if proc.returncode == 0 else {"error": f"exit {proc.returncode}"}


def _exponent(t1: float, t2: float, n1: int, n2: int) -> str:
    return f"{math.log(t2 / t1) / math.log(n2 / n1):.2f}" if t1 > 0 and t2 > 0 else "n/a"


def _fmt_size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _load_line() -> str:
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
        return f"load average {' '.join(load)} on {_cores()} cores"
    except OSError:
        return "load average n/a"


def _seconds(result: dict, name: str | None = None) -> float:
    """A step's seconds; with no name, the whole run's."""
    if name is None:
        return sum(r["seconds"] for r in result["stages"].values())
    return result["stages"].get(name, {}).get("seconds", 0.0)


def _source_sql(result: dict) -> float:
    return sum(v for k, v in result["info"]["sql_queries"].items() if k in SOURCE_QUERIES)


def _stage_table(results: dict[int, dict]) -> str:
    done = list(results)
    rows = []
    for name in STAGES:
        cells = [results[n]["stages"].get(name) for n in done]
        rows.append([name, *(f"{r['seconds']:.1f} ({r['peak_mib']:,.0f})" if r else "-" for r in cells)])
    peaks = [max(r["peak_mib"] for r in results[n]["stages"].values()) for n in done]
    rows.append(["end to end", *(f"{_seconds(results[n]):.1f} ({p:,.0f})" for n, p in zip(done, peaks, strict=True))])
    rows.append(["of which source sql", *(f"{_source_sql(results[n]):.1f}" for n in done)])
    rows.append(["end to end, no sql", *(f"{_seconds(results[n]) - _source_sql(results[n]):.1f}" for n in done)])
    return table(["step", *(f"{_fmt_size(n)} markets" for n in done)], rows)


def _details_table(results: dict[int, dict]) -> str:
    headers = ["size", "fact lines", "segmented", "train windows", "steps", "train seq/s", "encode seq/s", "k"]
    rows = []
    for n, result in results.items():
        i = result["info"]
        silhouette = i["silhouette_hybrid"] if i["silhouette_hybrid"] is not None else float("nan")
        rows.append(
            [
                _fmt_size(n),
                f"{i['fact_lines']:,}" if i.get("fact_lines") else "generated",
                *(f"{i[key]:,.0f}" for key in ("eligible", "train_windows", "train_steps", "train_seq_per_s")),
                f"{i['encode_seq_per_s']:,.0f}",
                i["k"],
                f"{silhouette:.3f}",
                f"{i['rows_written']:,}",
                f"{i['warehouse_peak_mib']:,.0f}",
            ]
        )
    return table([*headers, "silhouette", "rows written", "warehouse MiB"], rows)


def _query_lines(results: dict[int, dict]) -> list[str]:
    lines = []
    for n, result in results.items():
        i = result["info"]
        queries = ", ".join(f"{k} {v:.1f}" for k, v in i["sql_queries"].items())
        source = (
            f"{i['monthly_rows']:,} monthly rows fetched; warehouse generated and loaded in {i['setup_seconds']:.0f} s"
            if i.get("fact_lines")
            else f"source queries answered by frames generated in {i['setup_seconds']:.0f} s"
        )
        lines.append(f"{_fmt_size(n)}: sql seconds per query: {queries} (within the steps); {source} (not timed)")
    return lines


def _growth_table(results: dict[int, dict]) -> str:
    pairs = list(itertools.pairwise(results))
    rows = [
        [name, *(_exponent(_seconds(results[a], name), _seconds(results[b], name), a, b) for a, b in pairs)]
        for name in STAGES
    ]

    def total(n: int, sql: bool) -> float:
        return _seconds(results[n]) - (0.0 if sql else _source_sql(results[n]))

    ends = []
    for a, b in pairs:
        sql = bool(results[b]["info"].get("fact_lines"))
        ends.append(_exponent(total(a, sql), total(b, sql), a, b))
    rows.append(["end to end", *ends])
    return table(["step", *(f"{_fmt_size(a)} -> {_fmt_size(b)}" for a, b in pairs)], rows)


def _report_sizes(report: Report, results: dict[int, dict]) -> None:
    report.add("")
    report.add("Wall time per stage (step), seconds (peak resident memory of the process during the step, MiB)")
    report.add(_stage_table(results))
    report.add("")
    report.add(_details_table(results))
    for line in _query_lines(results):
        report.add(line)
    if len(results) > 1:
        report.add("")
        report.add("Growth exponent log(t2/t1)/log(n2/n1) between consecutive sizes (1.0 = linear)")
        report.add(_growth_table(results))
        report.add("(a step with source queries has them in the warehouse at one size and generated at the other")
        report.add(" where only one size is above --sql-max; end to end is then compared without source sql)")


def _report_throughput(report: Report, args: argparse.Namespace, threads: int) -> None:
    # The configured threads (the target), and one thread for comparison when more are given.
    for count in dict.fromkeys([threads, 1]):
        report.add("")
        tp = _child("throughput", n_markets=args.throughput_markets, n_steps=args.throughput_steps, threads=count)
        if "error" in tp:
            report.add(f"training throughput, {count} thread(s): FAILED ({tp['error']})")
            continue
        # Best of the interleaved runs: other processes on the machine only ever add time.
        lib, bare = max(tp["library"]), max(tp["bare"])
        report.add(
            f"Training throughput, {tp['steps']} steps x {tp['batch']} windows, {tp['threads']} thread(s), "
            f"{tp['windows']:,} windows of {_fmt_size(args.throughput_markets)} markets; "
            f"{len(tp['library'])} interleaved runs each"
        )
        rows = [
            ["train_autoencoder", ", ".join(f"{v:,.0f}" for v in tp["library"]), f"{lib:,.0f}"],
            ["bare forward/backward/step", ", ".join(f"{v:,.0f}" for v in tp["bare"]), f"{bare:,.0f}"],
        ]
        report.add(table(["loop", "sequences/s (each run)", "best"], rows))
        report.add(f"library / bare = {lib / bare:.0%} (target >= 90%)")


def _report_peers(report: Report, n: int, args: argparse.Namespace, threads: int) -> None:
    report.add("")
    peer = _child("peer_comparison", n_markets=n, threads=threads, max_steps=args.max_steps)
    if "error" in peer:
        report.add(f"peer comparison at {n:,} markets: FAILED ({peer['error']})")
        return
    report.add(
        f"Planted segments (benchmarks.planted, {peer['k']} segments), {n:,} markets x {HISTORY} months, "
        f"{threads} thread(s): time to labels and ARI"
    )
    ours = peer["rows"][0]["seconds"]
    rows = [
        [r["method"], f"{r['seconds']:.1f}", f"{r['ari']:.3f}", f"{r['seconds'] / ours:.2f}x"] for r in peer["rows"]
    ]
    report.add(table(["method", "seconds", "ARI", "time vs ours"], rows))
    if peer.get("note"):
        report.add(peer["note"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="markets, comma-separated")
    parser.add_argument("--sql-max", type=int, default=100_000, help="largest size run through the warehouse's SQL")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores given)")
    parser.add_argument("--max-steps", type=int, default=None, help="ModelConfig.max_steps (default: the library's)")
    parser.add_argument("--dtw-sizes", default="1000,5000", help="planted markets for the DTW comparison; none: skip")
    parser.add_argument("--throughput-steps", type=int, default=600, help="steps per throughput run; 0: skip")
    parser.add_argument("--throughput-markets", type=int, default=10_000)
    parser.add_argument("--output", default="default", help="'default' (results/scale.txt), a path, or none")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # function, JSON arguments, output file
    return parser


def _run_sizes(report: Report, args: argparse.Namespace, threads: int) -> dict[int, dict]:
    """Each size in its own process; returns the sizes that completed."""
    results: dict[int, dict] = {}
    for n in [int(v) for v in args.sizes.split(",") if v]:
        print(f"{n:,} markets ...", flush=True)
        result = _child("run_size", n=n, sql=n <= args.sql_max, threads=threads, max_steps=args.max_steps)
        if "error" in result:
            report.add(f"{n:,} markets: FAILED ({result['error']})")
        else:
            results[n] = result
        print(f"  ({_load_line()})", flush=True)
    return results


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the per-size results (also printed and saved)."""
    args = _parser().parse_args(argv)
    threads = args.threads or _cores()
    if args.child:
        function, kwargs, out = args.child
        result = CHILDREN[function](**json.loads(kwargs))
        Path(out).write_text(json.dumps(result))
        return result
    # The steps reach the warehouse through an Airflow connection; without an AIRFLOW_HOME, a throw-away
    # one keeps Airflow (in the child processes) from creating ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="scale-airflow-"))
    report = Report("benchmarks.scale: the DAG's steps from 1k to 1M markets x 36 months")
    config = bench_config(Path("."), threads, args.max_steps)
    model, cluster = config.model, config.clustering
    report.add(
        f"settings: torch threads {threads}; training max_steps {model.max_steps} x batch {model.batch_size}, "
        f"max_train_windows {model.max_train_windows:,}; k chosen in [{cluster.k_min}, {cluster.k_max}] on a "
        f"{cluster.selection_sample:,}-market sample, MiniBatchKMeans above {cluster.minibatch_threshold:,} markets; "
        f"source queries on the warehouse up to {args.sql_max:,} markets, generated above"
    )
    report.add(f"at start: {_load_line()}")
    results = _run_sizes(report, args, threads)
    if results:
        _report_sizes(report, results)
    if args.throughput_steps:
        _report_throughput(report, args, threads)
    for n in [] if args.dtw_sizes in ("", "none") else [int(v) for v in args.dtw_sizes.split(",")]:
        _report_peers(report, n, args, threads)
    report.add("")
    report.add(f"at end: {_load_line()}")
    report.save(output_path(args.output, "scale"))
    return results


if __name__ == "__main__":
    main()
