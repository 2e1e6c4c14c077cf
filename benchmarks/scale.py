"""Scale: wall time and peak memory per stage, 1,000 to 1,000,000 markets x 36 months, one machine.

    .venv/bin/python -m benchmarks.scale                     # 1k, 10k, 100k, 1M markets; DTW at 1k and 5k
    .venv/bin/python -m benchmarks.scale --sizes 1000,10000 --dtw-sizes 1000 --output none

Each size runs in a fresh subprocess, stage by stage, as the DAG's tasks do (artifact files and
Airflow scheduling excluded):

- ``sql``: the pipeline's queries (``static_features``, ``markets``, ``monthly_sales``,
  ``quality_markets``, ``quality_table``) on the embedded warehouse served over the Snowflake
  protocol (fakesnow on DuckDB, its own process), loaded with a generated fact table of 1-2 lines
  per market and month; results fetched as Arrow. Up to ``--sql-max`` markets; above it, the same
  frames are generated directly (the warehouse's load would dominate the run, not the pipeline).
- ``sequences``: ``monthly_grid``, ``market_trends``, ``sequence_features``;
- ``quality+windows``: ``quality.market_findings`` / ``warehouse_findings`` / ``apply_policies``,
  then ``training_windows`` (at most ``max_train_windows``), ``FeatureScaler``;
- ``training``: ``train_autoencoder`` with the library defaults (``max_steps`` bounds it);
- ``encoding``: ``embed`` of every market's latest window;
- ``clustering``: ``clustering.cluster_markets`` (k chosen in [2, 10]), ``align_segment_ids`` against
  a previous month, ``segment_profiles``;
- ``write-back``: ``writeback.write_segments`` (bulk loads of the stage tables, one transaction) to
  the served emulator.

Peak memory: the process's resident-set high-water mark (VmHWM), reset at the start of each stage
through ``/proc/self/clear_refs`` (write "5"), read at its end; it includes what the process holds
from earlier stages. The served warehouse's own peak is reported apart. Growth exponents are
``log(t2 / t1) / log(n2 / n1)`` between consecutive sizes.

Then: training throughput (sequences/s) of ``train_autoencoder`` against a bare loop of the same
model's forward/backward/Adam step on the same tensors, same batch and steps, 5 interleaved runs each
(best run compared: interference only adds time), with the configured threads and with one (a
64-window step is small: more threads can be slower); and, on
planted segments (``benchmarks.planted``), our time and ARI next to tslearn's
``TimeSeriesKMeans(metric="dtw")`` in the same process (skipped with a note without tslearn:
``pip install -r requirements-bench.txt``). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import Report, output_path, table

ROOT = Path(__file__).resolve().parents[1]
MONTH = pd.Period("2013-12", "M")
HISTORY = 36
STAGES = ("sql", "sequences", "quality+windows", "training", "encoding", "clustering", "write-back")
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)

#: Market archetypes of the generated warehouse: monthly revenue shape, discount, loyalty mix
#: (Platinum, Gold, Silver), LTV median and product lines used (of 5).
ARCHETYPES = (
    ("growing", 0.03, (0.25, 0.30, 0.25), 6000.0, 5),
    ("declining", 0.11, (0.06, 0.20, 0.34), 1500.0, 2),
    ("seasonal", 0.06, (0.14, 0.26, 0.30), 3000.0, 4),
    ("flat", 0.08, (0.10, 0.20, 0.30), 2500.0, 3),
)
CUSTOMERS_PER_MARKET = 8
N_PRODUCTS = 200


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------------------------
# Synthetic markets, vectorised (no loop over markets)
# --------------------------------------------------------------------------------------------


def market_keys(n: int) -> np.ndarray:
    """``M0000000``, ``M0000001``, ... as an array of str."""
    return np.char.add("M", np.char.zfill(np.arange(n).astype(str), 7)).astype(object)


def _monthly_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """Per market and month ``(n, HISTORY)``: expected revenue, lines (0 before a market opens), and
    the market's archetype ``(n,)``."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(ARCHETYPES), n)
    t = np.arange(HISTORY, dtype=np.float64)
    shapes = np.stack(
        [
            np.exp(0.04 * (t - HISTORY + 6)),
            np.exp(-0.04 * (t - HISTORY + 6)),
            1.0 + 0.5 * np.sin(2 * np.pi * t / 12),
            np.ones(HISTORY),
        ]
    )
    size = 20_000.0 * rng.lognormal(0.0, 1.0, (n, 1))
    revenue = size * shapes[kind] * rng.lognormal(0.0, 0.15, (n, HISTORY))
    opened = np.where(rng.random(n) < 0.85, 0, rng.integers(0, HISTORY - 6, n))
    lines = np.where(t[None, :] >= opened[:, None], 1 + (rng.random((n, HISTORY)) < 0.5), 0).astype(np.int64)
    return {"kind": kind, "revenue": np.round(revenue, 2), "lines": lines}


def synthetic_star(n: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A star schema (the roles of ``demo_data.load_star``) with ``n`` markets, 36 months to 2013-12,
    1-2 fact lines per market and month (``CUSTOMERS_PER_MARKET`` customers each, ``N_PRODUCTS``
    products). Vectorised: a few seconds for 100,000 markets (5.4 million lines)."""
    rng = np.random.default_rng(seed + 1)
    m = _monthly_arrays(n, seed)
    keys = market_keys(n)
    market, month = np.nonzero(m["lines"])
    per_cell = m["lines"][market, month]
    line_market = np.repeat(market, per_cell)
    line_month = np.repeat(month, per_cell)
    line_no = np.arange(len(line_market)) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell) + 1
    n_lines = len(line_market)
    kind = m["kind"][line_market]
    share = rng.uniform(0.5, 1.5, n_lines)
    amount = m["revenue"][line_market, line_month] * share / np.repeat(per_cell, per_cell)
    first = pd.Timestamp((MONTH - HISTORY + 1).start_time)
    month_starts = pd.date_range(first, periods=HISTORY, freq="MS").to_numpy().astype("datetime64[D]")
    order_date = month_starts[line_month] + rng.integers(0, 28, n_lines).astype("timedelta64[D]")
    lines_used = np.array([a[4] for a in ARCHETYPES])[kind]
    product = rng.integers(0, 40, n_lines) * 5 + rng.integers(0, lines_used)  # product line = key % 5
    discount = np.clip(rng.normal(np.array([a[1] for a in ARCHETYPES])[kind], 0.02), 0.0, 0.5)
    fact = pd.DataFrame(
        {
            "SALES_ORDER_NUMBER": pd.Series(np.arange(n_lines)).astype(str).radd("SO").to_numpy(),
            "SALES_ORDER_LINE": line_no,
            "CHANNEL": "Internet",
            "ORDER_DATE": pd.to_datetime(order_date),
            "MARKET_KEY": keys[line_market],
            "CUSTOMER_KEY": line_market * CUSTOMERS_PER_MARKET + rng.integers(0, CUSTOMERS_PER_MARKET, n_lines),
            "PRODUCT_KEY": product,
            "SALES_AMOUNT": np.round(amount, 2),
            "DISCOUNT_PCT": np.round(discount, 4),
            "QUANTITY": rng.integers(1, 6, n_lines),
        }
    )
    n_customers = n * CUSTOMERS_PER_MARKET
    cust_kind = m["kind"][np.arange(n_customers) // CUSTOMERS_PER_MARKET]
    mix = np.array([[*a[2], 1 - sum(a[2])] for a in ARCHETYPES])[cust_kind]
    status = (rng.random(n_customers)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1)
    customers = pd.DataFrame(
        {
            "CUSTOMER_KEY": np.arange(n_customers),
            "CUSTOMER_TYPE": "Individual",
            "LOYALTY_STATUS": np.array(["Platinum", "Gold", "Silver", "Standard"])[status],
            "LIFETIME_VALUE": np.round(np.array([a[3] for a in ARCHETYPES])[cust_kind] * rng.lognormal(0, 0.3), 2),
        }
    )
    products = pd.DataFrame(
        {
            "PRODUCT_KEY": np.arange(N_PRODUCTS),
            "PRODUCT_NAME": [f"P{i}" for i in range(N_PRODUCTS)],
            "PRODUCT_LINE": np.array(list("MRTSA"))[np.arange(N_PRODUCTS) % 5],
            "SUBCATEGORY": [f"Sub{i % 30}" for i in range(N_PRODUCTS)],
            "CATEGORY": "Bikes",
        }
    )
    days = pd.date_range(first - pd.DateOffset(months=1), (MONTH + 1).end_time.normalize(), freq="D")
    dates = pd.DataFrame(
        {
            "DATE_KEY": days.strftime("%Y%m%d").astype(int),
            "FULL_DATE": days,
            "CALENDAR_YEAR": days.year,
            "CALENDAR_MONTH": days.month,
        }
    )
    return {
        "fact_sale": fact,
        "territory": territory(n),
        "customer": customers,
        "product": products,
        "date": dates,
    }


def territory(n: int) -> pd.DataFrame:
    """The market dimension: key, name, country (50) and territory group (5)."""
    keys = market_keys(n)
    idx = np.arange(n)
    return pd.DataFrame(
        {
            "MARKET_KEY": keys,
            "MARKET_NAME": np.char.add("Market ", keys.astype(str)),
            "COUNTRY": np.char.add("C", (idx % 50).astype(str)),
            "TERRITORY_GROUP": np.array(["Europe", "North America", "Pacific", "Asia", "Latin America"])[idx % 5],
        }
    )


def generated_frames(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What the warehouse returns for ``n`` markets, generated directly (for sizes above ``--sql-max``):
    ``(monthly, static, markets)`` frames with ``query_frame``'s columns and dtypes."""
    rng = np.random.default_rng(seed + 2)
    m = _monthly_arrays(n, seed)
    keys = pd.array(market_keys(n).astype(str), dtype="str")
    market, month = np.nonzero(m["lines"])  # market-major, month order: as ORDER BY 1, 2
    lines = m["lines"][market, month]
    first = pd.Timestamp((MONTH - HISTORY + 1).start_time)
    starts = pd.date_range(first, periods=HISTORY, freq="MS").to_numpy().astype("datetime64[us]")
    monthly = pd.DataFrame(
        {
            "market_key": keys.take(market),
            "month_start": starts[month],
            "revenue": m["revenue"][market, month],
            "quantity": (lines * rng.integers(1, 6, len(lines))).astype(np.float64),
            "n_lines": lines,
            "n_customers": np.minimum(lines, CUSTOMERS_PER_MARKET),
        }
    )
    kind = m["kind"]
    mix = np.array([a[2] for a in ARCHETYPES])[kind] + rng.normal(0, 0.05, (n, 3))
    static = pd.DataFrame(
        {
            "market_key": keys,
            "avg_discount": np.clip(np.array([a[1] for a in ARCHETYPES])[kind] + rng.normal(0, 0.01, n), 0, 0.5),
            "platinum_share": np.clip(mix[:, 0], 0, 1),
            "gold_share": np.clip(mix[:, 1], 0, 1),
            "silver_share": np.clip(mix[:, 2], 0, 1),
            "avg_ltv": np.array([a[3] for a in ARCHETYPES])[kind] * rng.lognormal(0, 0.2, n),
            "total_product_lines": np.array([a[4] for a in ARCHETYPES])[kind],
            "total_subcategories": rng.integers(5, 30, n),
            "n_customers": np.full(n, CUSTOMERS_PER_MARKET),
            "n_known_customers": np.full(n, CUSTOMERS_PER_MARKET),
        }
    )
    markets = territory(n).rename(columns=str.lower)
    markets["market_key"] = markets["market_key"].astype("str")
    return monthly, static, markets


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _status_mib(field: str, pid: str = "self") -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else float("nan")


def _reset_peak() -> None:
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


class Stages:
    """Wall time and VmHWM per stage."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str):
        _reset_peak()
        start = time.perf_counter()
        cpu = time.process_time()
        yield
        self.results[name] = {
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
            "peak_mib": _status_mib("VmHWM"),
        }
        print(
            f"  {name:<16} {self.results[name]['seconds']:8.1f} s  {self.results[name]['peak_mib']:8.0f} MiB",
            flush=True,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served_warehouse(db_path: Path):
    """The embedded warehouse on ``db_path``, served on a free port in its own process; yields
    ``(connection, server pid)`` and stops the server (by its pid) afterwards."""
    import snowflake.connector

    from include.segmentation.config import SegmentationConfig
    from include.segmentation.local.emulator import connection_json

    port = _free_port()
    log = open(db_path.parent / f"emulator-{port}.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "include.segmentation.local.emulator",
            "serve",
            "--db-path",
            str(db_path),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the emulator exited while starting; see {log.name}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start within 120 s")
            time.sleep(0.2)
        extra = json.loads(connection_json(port))["extra"]
        w = SegmentationConfig().warehouse
        conn = snowflake.connector.connect(
            user="fakesnow",
            password="fakesnow-local",
            account=extra["account"],
            host=extra["host"],
            port=extra["port"],
            protocol=extra["protocol"],
            network_timeout=extra["network_timeout"],
            session_parameters=extra["session_parameters"],
            database=w.database,
            schema=w.schema_,
        )
        try:
            cur = conn.cursor()
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {w.database}")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {w.database}.{w.schema_}")
            cur.execute(f"USE SCHEMA {w.database}.{w.schema_}")
            yield conn, server.pid
        finally:
            conn.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def load_warehouse(db_path: Path, n: int, seed: int) -> dict[str, int]:
    """Generate and load the star schema for ``n`` markets into emulator files at ``db_path`` (in-process)."""
    import warnings

    import fakesnow
    import snowflake.connector

    from include.segmentation.config import SegmentationConfig
    from include.segmentation.local import demo_data

    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    w = SegmentationConfig().warehouse
    tables = synthetic_star(n, seed)
    with fakesnow.patch(db_path=db_path):
        conn = snowflake.connector.connect(database=w.database, schema=w.schema_)
        try:
            return demo_data.load_star(conn, tables, w)
        finally:
            conn.close()


# --------------------------------------------------------------------------------------------
# One size, in a fresh process
# --------------------------------------------------------------------------------------------


def run_size(n: int, sql: bool, threads: int, max_steps: int | None, seed: int = 0) -> dict:
    """Every stage for ``n`` markets; returns ``{"stages": {name: {seconds, cpu_seconds, peak_mib}}, ...}``."""
    # No passive_openmp() here: as in the DAG's training task, torch keeps its default spin-waiting;
    # the library's encoding and clustering set it for scikit-learn, which starts later in this process.
    import torch

    from include.segmentation.adapters.warehouse import query_frame, render_sql
    from include.segmentation.adapters.writeback import RunRecord, model_version, write_segments
    from include.segmentation.config import ClusterConfig, ModelConfig, SegmentationConfig
    from include.segmentation.core import sequences as seq
    from include.segmentation.core.alignment import align_segment_ids, stability
    from include.segmentation.core.autoencoder import embed, train_autoencoder
    from include.segmentation.core.clustering import cluster_markets
    from include.segmentation.core.features import STATIC_FEATURES
    from include.segmentation.core.profiles import market_trends, segment_profiles
    from include.segmentation.core.quality import apply_policies, market_findings, warehouse_findings

    torch.set_num_threads(threads)
    config = SegmentationConfig()
    w, s, q = config.warehouse, config.sequences, config.quality
    model_config = ModelConfig(cpu_threads=threads, **({"max_steps": max_steps} if max_steps else {}))
    stages = Stages()
    info: dict[str, object] = {"markets": n, "threads": threads}
    history_start = (MONTH - s.history_months + 1).start_time.date()
    window_start = (MONTH - s.seq_len + 1).start_time.date()
    window_end = (MONTH + 1).start_time.date()

    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        db_path = Path(tmp) / "warehouse"
        db_path.mkdir()
        start = time.perf_counter()
        if sql:
            loaded = load_warehouse(db_path, n, seed)
            info["fact_lines"] = loaded[w.fact_sale.name]
        else:
            monthly, static, markets = generated_frames(n, seed)
        info["setup_seconds"] = time.perf_counter() - start

        with served_warehouse(db_path) as (conn, server_pid):
            per_market = table_counts = None
            if sql:
                timings: dict[str, float] = {}

                def timed(name: str, sql: str, params: dict | None = None) -> pd.DataFrame:
                    start = time.perf_counter()
                    frame = query_frame(conn, sql, params)
                    timings[name] = time.perf_counter() - start
                    return frame

                params = {"history_start": history_start, "window_start": window_start, "window_end": window_end}
                params |= {f"loyalty_{i}": v for i, v in enumerate(q.loyalty_values)}
                with stages.stage("sql"):
                    static = timed(
                        "static_features",
                        render_sql("static_features.sql", w),
                        {"window_start": window_start, "window_end": window_end},
                    )
                    markets = timed("markets", render_sql("markets.sql", w))
                    monthly = timed(
                        "monthly_sales",
                        render_sql("monthly_sales.sql", w),
                        {"history_start": history_start, "window_end": window_end},
                    )
                    per_market = timed(
                        "quality_markets", render_sql("quality_markets.sql", w, n_loyalty=len(q.loyalty_values)), params
                    )
                    table_counts = timed("quality_table", render_sql("quality_table.sql", w)).iloc[0]
                info["sql_queries"] = timings
                info["monthly_rows"] = len(monthly)
            static["market_key"] = static["market_key"].astype(str)
            markets["market_key"] = markets["market_key"].astype(str)
            static = static.merge(markets, on="market_key", how="left")
            del markets

            with stages.stage("sequences"):
                keys, grid = seq.monthly_grid(monthly, seq.month_range(MONTH, s.history_months))
                del monthly
                trends = market_trends(grid[..., 0], s.seq_len)
                trends.insert(0, "market_key", keys.astype(str))
                features = seq.sequence_features(grid).astype(np.float32)
                revenue, active = grid[..., 0], grid[..., 2] > 0
                del grid

            with stages.stage("quality+windows"):
                keys = keys.astype(str)
                findings = market_findings(static, keys, revenue, active, s.seq_len, s.min_active_months)
                if per_market is not None:
                    findings += warehouse_findings(per_market, table_counts)
                report = apply_policies(findings, q)
                eligible = np.isin(keys, static["market_key"].to_numpy(dtype=str))
                eligible &= ~np.isin(keys, np.array(sorted(report.excluded_markets), dtype=str))
                features, active = features[eligible], active[eligible]
                inputs = seq.model_inputs(
                    features,
                    active,
                    s.seq_len,
                    s.min_active_months,
                    model_config.max_train_windows,
                    model_config.validation_share,
                    seed,
                )
                train, valid, latest = inputs.train, inputs.valid, inputs.latest
                del inputs
                keys = keys[eligible]
                del features, active, revenue
            info["eligible"] = int(eligible.sum())
            info["excluded"] = len(report.excluded_markets)
            info["train_windows"] = len(train)

            with stages.stage("training"):
                trained = train_autoencoder(train, model_config, seed=seed, validation=valid)
            steps = trained.steps
            info["train_steps"] = steps
            info["train_stop"] = trained.stop_reason
            info["train_seq_per_s"] = (
                steps * min(model_config.batch_size, len(train)) / stages.results["training"]["seconds"]
            )
            del train

            with stages.stage("encoding"):
                z = embed(trained, latest)
            info["encode_seq_per_s"] = len(z) / stages.results["encoding"]["seconds"]
            del latest

            with stages.stage("clustering"):
                frame = static.set_index("market_key").loc[keys].reset_index()
                result = cluster_markets(
                    frame[list(STATIC_FEATURES)].to_numpy(dtype=np.float64),
                    z.astype(np.float64),
                    ClusterConfig(),
                    seed=seed,
                )
                # last month's SegmentIDs: this month's with a tenth of the markets moved
                rng = np.random.default_rng(seed)
                previous_ids = np.where(
                    rng.random(len(keys)) < 0.1, rng.integers(1, result.n_clusters + 1, len(keys)), result.labels
                )
                previous = pd.Series(previous_ids, index=keys)
                ids = align_segment_ids(keys, result.labels, previous, first_new_id=int(previous_ids.max()) + 1)
                info["stability"] = stability(keys, ids, previous)
                segments = frame.assign(segment_id=ids, previous_segment_id=previous_ids)
                profiles = segment_profiles(segments.merge(trends, on="market_key", how="left"))
            info["k"] = result.n_clusters
            info["silhouette_hybrid"] = result.silhouette_hybrid

            with stages.stage("write-back"):
                record = RunRecord(
                    run_id="scale-bench",
                    model_version=model_version(config.model_version_prefix, MONTH),
                    algorithm=result.algorithm,
                    n_clusters=result.n_clusters,
                    n_markets=len(segments),
                    n_excluded=len(report.excluded_markets),
                    noise_fraction=result.noise_fraction,
                    seq_len=s.seq_len,
                    silhouette_hybrid=result.silhouette_hybrid,
                    silhouette_lstm=result.silhouette_lstm,
                    silhouette_static=result.silhouette_static,
                    final_loss=trained.losses[-1],
                )
                written = write_segments(
                    conn,
                    w,
                    segments[["market_key", "segment_id", "previous_segment_id"]],
                    MONTH,
                    record,
                    MONTH - 1,
                    profiles,
                )
            info["rows_written"] = written
            info["warehouse_peak_mib"] = _status_mib("VmHWM", str(server_pid))
    return {"stages": stages.results, "info": info}


# --------------------------------------------------------------------------------------------
# Training throughput: the library's loop against a bare loop
# --------------------------------------------------------------------------------------------


def throughput(n_markets: int, steps: int, threads: int, repeats: int = 5, seed: int = 0) -> dict:
    """Sequences/s of ``train_autoencoder`` and of a bare forward/backward/step loop of the same model on
    the same (scaled) training windows, same batch size and steps, interleaved ``repeats`` times."""
    import torch

    from include.segmentation.config import ModelConfig
    from include.segmentation.core import sequences as seq
    from include.segmentation.core.autoencoder import _build_model, train_autoencoder

    torch.set_num_threads(threads)
    monthly, _, _ = generated_frames(n_markets, seed)
    _, grid = seq.monthly_grid(monthly, seq.month_range(MONTH, HISTORY))
    features = seq.sequence_features(grid).astype(np.float32)
    train = seq.training_windows(features, grid[..., 2] > 0, 12, 3, 200_000, seed)
    train = seq.FeatureScaler.fit(train).transform(train)
    config = ModelConfig(epochs=1, min_steps=0, max_steps=steps, cpu_threads=threads)
    batch = config.batch_size
    data = torch.from_numpy(train)

    def library() -> float:
        start = time.perf_counter()
        train_autoencoder(train, config, seed=seed)
        return time.perf_counter() - start

    def bare() -> float:
        torch.manual_seed(seed)
        model = _build_model(train.shape[2], config.hidden_dim, config.embedding_dim, config.num_layers)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train)))
        start = time.perf_counter()
        for i in range(steps):
            x = data[order[i * batch : (i + 1) * batch]]
            loss = torch.nn.functional.mse_loss(model(x), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    lib_s, bare_s = [], []
    for _ in range(repeats):
        lib_s.append(library())
        bare_s.append(bare())
    work = steps * batch
    return {
        "threads": threads,
        "steps": steps,
        "batch": batch,
        "windows": len(train),
        "library": [work / t for t in lib_s],
        "bare": [work / t for t in bare_s],
    }


# --------------------------------------------------------------------------------------------
# Peers: DTW K-Means on planted segments
# --------------------------------------------------------------------------------------------


def peer_comparison(n_markets: int, threads: int, max_steps: int | None, seed: int = 0) -> dict:
    """Our pipeline (grid -> labels, k chosen by the library) against raw K-Means on flattened windows +
    static and tslearn's DTW K-Means (both at the true k: they are handed the answer), same data, same process."""
    import torch
    from sklearn.metrics import adjusted_rand_score

    from benchmarks.planted import planted_markets
    from include.segmentation.config import ClusterConfig, ModelConfig, SequenceConfig
    from include.segmentation.core import sequences as seq
    from include.segmentation.core.autoencoder import embed, train_autoencoder
    from include.segmentation.core.clustering import cluster_markets, standardize

    torch.set_num_threads(threads)
    planted = planted_markets(n_markets, HISTORY, seed)
    k = len(planted.patterns) * len(planted.mixes)
    seq_len = SequenceConfig().seq_len
    rows = []

    def ours(steps: int | None) -> tuple[float, float]:
        # As the pipeline runs it, default settings: k is chosen by the library, not handed over.
        start = time.perf_counter()
        features = seq.sequence_features(planted.grid)
        config = ModelConfig(cpu_threads=threads, **({"max_steps": steps} if steps else {}))
        inputs = seq.model_inputs(
            features, planted.grid[..., 2] > 0, seq_len, 3, config.max_train_windows, config.validation_share, seed
        )
        trained = train_autoencoder(inputs.train, config, seed=seed, validation=inputs.valid)
        z = embed(trained, inputs.latest)
        labels = cluster_markets(planted.static, z, ClusterConfig(), seed).labels
        return time.perf_counter() - start, float(adjusted_rand_score(planted.segment, labels))

    default_steps = max_steps or ModelConfig().max_steps
    seconds, ari = ours(default_steps)
    rows.append({"method": f"ours (LSTM-AE hybrid, {default_steps} steps)", "seconds": seconds, "ari": ari})
    if default_steps > 500:
        seconds, ari = ours(500)
        rows.append({"method": "ours, max_steps=500", "seconds": seconds, "ari": ari})
    # The floor any model must beat: K-Means on the flattened scaled windows + static, weighted as our
    # hybrid blocks are, at the true k.
    start = time.perf_counter()
    features = seq.sequence_features(planted.grid)
    flat = seq.FeatureScaler.fit(features).transform(features[:, -seq_len:]).reshape(n_markets, -1)
    labels = cluster_markets(planted.static, flat, ClusterConfig(n_clusters=k), seed).labels
    rows.append(
        {
            "method": "raw K-Means, flattened windows + static (true k)",
            "seconds": time.perf_counter() - start,
            "ari": float(adjusted_rand_score(planted.segment, labels)),
        }
    )
    try:
        from tslearn.clustering import TimeSeriesKMeans
    except ImportError:
        return {"markets": n_markets, "k": k, "rows": rows, "note": "tslearn not installed: DTW skipped"}
    features = seq.sequence_features(planted.grid)
    series = seq.FeatureScaler.fit(features).transform(features)  # (n, 36, 4), our scaling
    static = standardize(planted.static).astype(np.float32)
    with_static = np.concatenate([series, np.repeat(static[:, None, :], series.shape[1], axis=1)], axis=2)
    for label, x in (
        ("tslearn DTW K-Means, 36 x 4 series", series),
        ("tslearn DTW K-Means, + 7 static channels", with_static),
    ):
        start = time.perf_counter()
        labels = TimeSeriesKMeans(n_clusters=k, metric="dtw", random_state=seed, n_jobs=threads).fit_predict(x)
        rows.append(
            {
                "method": label,
                "seconds": time.perf_counter() - start,
                "ari": float(adjusted_rand_score(planted.segment, labels)),
            }
        )
    return {"markets": n_markets, "k": k, "rows": rows}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _child(kind: str, args: list[str], timeout: float | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", "--child", kind, "--child-out", path, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}"}
        return json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)


def _exponent(t1: float, t2: float, n1: int, n2: int) -> str:
    return f"{math.log(t2 / t1) / math.log(n2 / n1):.2f}" if t1 > 0 and t2 > 0 else "n/a"


def _fmt_size(n: int) -> str:
    return (
        f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    )


def _load_line() -> str:
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
        return f"load average {' '.join(load)} on {_cores()} cores"
    except OSError:
        return "load average n/a"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the per-size results (also printed and saved)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="markets, comma-separated")
    parser.add_argument("--sql-max", type=int, default=100_000, help="largest size run through the warehouse's SQL")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores given)")
    parser.add_argument("--max-steps", type=int, default=None, help="ModelConfig.max_steps (default: the library's)")
    parser.add_argument("--dtw-sizes", default="1000,5000", help="planted markets for the DTW comparison; none: skip")
    parser.add_argument("--throughput-steps", type=int, default=600, help="steps per throughput run; 0: skip")
    parser.add_argument("--throughput-markets", type=int, default=10_000)
    parser.add_argument("--output", default="default", help="'default' (results/scale.txt), a path, or none")
    parser.add_argument("--child", choices=["size", "throughput", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-sql", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or _cores()

    if args.child:
        if args.child == "size":
            result = run_size(args.child_n, bool(args.child_sql), threads, args.max_steps)
        elif args.child == "throughput":
            result = throughput(args.child_n, args.throughput_steps, threads)
        else:
            result = peer_comparison(args.child_n, threads, args.max_steps)
        Path(args.child_out).write_text(json.dumps(result))
        return result

    from include.segmentation.config import ClusterConfig, ModelConfig

    report = Report("benchmarks.scale: stages from 1k to 1M markets x 36 months")
    model = ModelConfig(**({"max_steps": args.max_steps} if args.max_steps else {}))
    cluster = ClusterConfig()
    report.add(
        f"settings: torch threads {threads}; training max_steps {model.max_steps} x batch {model.batch_size}, "
        f"max_train_windows {model.max_train_windows:,}; k chosen in [{cluster.k_min}, {cluster.k_max}] on a "
        f"{cluster.selection_sample:,}-market sample, MiniBatchKMeans above {cluster.minibatch_threshold:,} markets"
    )
    report.add(f"at start: {_load_line()}")
    sizes = [int(v) for v in args.sizes.split(",") if v]
    results: dict[int, dict] = {}
    for n in sizes:
        print(f"{n:,} markets ...", flush=True)
        child = ["--child-n", str(n), "--child-sql", str(int(n <= args.sql_max)), "--threads", str(threads)]
        if args.max_steps:
            child += ["--max-steps", str(args.max_steps)]
        results[n] = _child("size", child)
        if "error" in results[n]:
            report.add(f"{n:,} markets: FAILED ({results[n]['error']})")
        print(f"  ({_load_line()})", flush=True)
    done = [n for n in sizes if "error" not in results[n]]

    report.add("")
    report.add("Wall time per stage, seconds (peak resident memory of the process during the stage, MiB)")
    headers = ["stage", *(f"{_fmt_size(n)} markets" for n in done)]
    rows = []
    for name in STAGES:
        row = [name]
        for n in done:
            r = results[n]["stages"].get(name)
            row.append(f"{r['seconds']:.1f} ({r['peak_mib']:,.0f})" if r else "-")
        rows.append(row)
    totals = {n: sum(r["seconds"] for r in results[n]["stages"].values()) for n in done}
    no_sql = {n: sum(r["seconds"] for k, r in results[n]["stages"].items() if k != "sql") for n in done}
    peaks = {n: max(r["peak_mib"] for r in results[n]["stages"].values()) for n in done}
    rows.append(["end to end", *(f"{totals[n]:.1f} ({peaks[n]:,.0f})" for n in done)])
    rows.append(["end to end, no sql", *(f"{no_sql[n]:.1f}" for n in done)])
    report.add(table(headers, rows))
    report.add("")
    details = []
    for n in done:
        i = results[n]["info"]
        details.append(
            [
                _fmt_size(n),
                f"{i.get('fact_lines', 0):,}" if i.get("fact_lines") else "generated",
                f"{i['eligible']:,}",
                f"{i['train_windows']:,}",
                f"{i['train_steps']:,}",
                f"{i['train_seq_per_s']:,.0f}",
                f"{i['encode_seq_per_s']:,.0f}",
                i["k"],
                f"{i['silhouette_hybrid']:.3f}",
                f"{i['rows_written']:,}",
                f"{i['warehouse_peak_mib']:,.0f}",
            ]
        )
    report.add(
        table(
            [
                "size",
                "fact lines",
                "segmented",
                "train windows",
                "steps",
                "train seq/s",
                "encode seq/s",
                "k",
                "silhouette",
                "rows written",
                "warehouse MiB",
            ],
            details,
        )
    )
    for n in done:
        i = results[n]["info"]
        if i.get("sql_queries"):
            queries = ", ".join(f"{k} {v:.1f}" for k, v in i["sql_queries"].items())
            report.add(
                f"{_fmt_size(n)}: sql seconds per query: {queries}; {i['monthly_rows']:,} monthly rows fetched; "
                f"warehouse generated and loaded in {i['setup_seconds']:.0f} s (not timed above)"
            )
    if len(done) > 1:
        report.add("")
        report.add("Growth exponent log(t2/t1)/log(n2/n1) between consecutive sizes (1.0 = linear)")
        grow = []
        for a, b in zip(done, done[1:], strict=False):
            row = [f"{_fmt_size(a)} -> {_fmt_size(b)}"]
            for name in (*STAGES, None):
                if name is None:
                    t1, t2 = (totals[a], totals[b]) if "sql" in results[b]["stages"] else (no_sql[a], no_sql[b])
                else:
                    r1, r2 = results[a]["stages"].get(name), results[b]["stages"].get(name)
                    if not (r1 and r2):
                        row.append("-")
                        continue
                    t1, t2 = r1["seconds"], r2["seconds"]
                row.append(_exponent(t1, t2, a, b))
            grow.append(row)
        report.add(table(["sizes", *STAGES, "end to end"], grow))
        report.add("(end to end without sql where the larger size has no sql stage)")

    if args.throughput_steps:
        # The configured threads (the target), and one thread for comparison when more are given.
        for count in dict.fromkeys([threads, 1]):
            report.add("")
            tp = _child(
                "throughput",
                [
                    "--child-n",
                    str(args.throughput_markets),
                    "--throughput-steps",
                    str(args.throughput_steps),
                    "--threads",
                    str(count),
                ],
            )
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
            report.add(
                table(
                    ["loop", "sequences/s (each run)", "best"],
                    [
                        ["train_autoencoder", ", ".join(f"{v:,.0f}" for v in tp["library"]), f"{lib:,.0f}"],
                        ["bare forward/backward/step", ", ".join(f"{v:,.0f}" for v in tp["bare"]), f"{bare:,.0f}"],
                    ],
                )
            )
            report.add(f"library / bare = {lib / bare:.0%} (target >= 90%)")

    dtw_sizes = [] if args.dtw_sizes in ("", "none") else [int(v) for v in args.dtw_sizes.split(",")]
    for n in dtw_sizes:
        report.add("")
        extra = ["--child-n", str(n), "--threads", str(threads)]
        if args.max_steps:
            extra += ["--max-steps", str(args.max_steps)]
        peer = _child("peer", extra)
        if "error" in peer:
            report.add(f"peer comparison at {n:,} markets: FAILED ({peer['error']})")
            continue
        report.add(
            f"Planted segments (benchmarks.planted, {peer['k']} segments), {n:,} markets x {HISTORY} months, "
            f"{threads} thread(s): time to labels and ARI"
        )
        ours = peer["rows"][0]["seconds"]
        report.add(
            table(
                ["method", "seconds", "ARI", "time vs ours"],
                [
                    [r["method"], f"{r['seconds']:.1f}", f"{r['ari']:.3f}", f"{r['seconds'] / ours:.2f}x"]
                    for r in peer["rows"]
                ],
            )
        )
        if peer.get("note"):
            report.add(peer["note"])
    report.add("")
    report.add(f"at end: {_load_line()}")
    report.save(output_path(args.output, "scale"))
    return results


if __name__ == "__main__":
    main()
