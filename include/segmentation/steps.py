"""The DAG's steps as plain functions: config + month + artifact paths in, small dicts out.

Each step reads its inputs from the previous steps' artifacts, writes its own under
``<artifacts_dir>/<YYYY-MM>/`` (overwriting: a re-run of a month is idempotent) and returns only
paths and small metrics, which is all the DAG passes through XCom.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from include.segmentation.adapters.storage import (
    as_path,
    read_json,
    read_npz,
    read_parquet,
    write_json,
    write_npz,
    write_parquet,
)
from include.segmentation.adapters.warehouse import connect, query_frame, render_sql
from include.segmentation.adapters.writeback import RunRecord, model_version, write_segments
from include.segmentation.config import SegmentationConfig
from include.segmentation.core import sequences as seq
from include.segmentation.core.clustering import STATIC_FEATURES, market_size
from include.segmentation.core.profiles import market_trends, segment_profiles

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)


def month_dir(config: SegmentationConfig, month: pd.Period) -> ObjectStoragePath:
    """The artifact folder of one month, e.g. ``file:///.../artifacts/2013-12`` or ``s3://bucket/.../2013-12``."""
    return as_path(config.artifacts_dir) / month.strftime("%Y-%m")


def month_seed(config: SegmentationConfig, month: pd.Period) -> int:
    """A seed derived from the month, so a re-run of the same month reproduces its results."""
    return config.seed * 1000 + month.year * 12 + month.month


def _bounds(month: pd.Period, n_months: int) -> dict[str, object]:
    # Half-open [start, end) on DATE values: the end is the first day after the month, so every
    # query is bounded by the end of the target month (no look-ahead).
    return {"start": (month - n_months + 1).start_time.date(), "end": (month + 1).start_time.date()}


def extract_static_features(config: SegmentationConfig, month: pd.Period) -> dict:
    """Query static features (``sql/static_features.sql``) over the ``seq_len`` months ending at ``month``.

    Writes ``static.parquet``: one row per market with ``market_key``, ``STATIC_FEATURES``,
    ``n_customers`` and the market's name, country and territory group.
    """
    w = config.warehouse
    b = _bounds(month, config.sequences.seq_len)
    with connect(w) as conn:
        static = query_frame(
            conn, render_sql("static_features.sql", w), {"window_start": b["start"], "window_end": b["end"]}
        )
        markets = query_frame(conn, render_sql("markets.sql", w))
    if static.empty:
        raise ValueError(
            f"no sales in {w.fact_sale.name} between {b['start']} and {b['end']} (exclusive): nothing to segment"
        )
    static["market_key"] = static["market_key"].astype(str)
    markets["market_key"] = markets["market_key"].astype(str)
    dup = markets["market_key"][markets["market_key"].duplicated()]
    if len(dup):
        raise ValueError(f"market {dup.iloc[0]!r} has more than one row in {w.territory.name}")
    static = static.merge(markets, on="market_key", how="left")
    path = write_parquet(static, month_dir(config, month) / "static.parquet")
    log.info("static features for %d markets in %s", len(static), month)
    if not w.customer.is_type2:
        log.warning(
            "%s has no valid_from/valid_to configured: loyalty status and lifetime value are current values, "
            "not as of %s (recorded in the run record)",
            w.customer.name,
            month,
        )
    return {"path": path, "n_markets": len(static)}


def build_sequences(config: SegmentationConfig, month: pd.Period) -> dict:
    """Monthly aggregates (``sql/monthly_sales.sql``) over ``history_months`` -> per-market arrays.

    Writes ``sequences.npz`` for every market with sales in the history: ``markets`` ``(n,)``,
    ``features`` ``(n, history_months, 4)`` float32 (``sequences.FEATURES``, unscaled),
    ``revenue`` ``(n, history_months)`` net revenue per month (currency), ``n_lines`` (order lines
    per month) and ``active`` (months with sale lines); and ``trends.parquet``
    (``profiles.market_trends`` per market: ``TREND_FEATURES`` and ``avg_monthly_revenue``). Which markets
    are fit to segment is ``check_data_quality``'s decision. Raises ``ValueError`` when the history
    has no sales at all.
    """
    w, s = config.warehouse, config.sequences
    b = _bounds(month, s.history_months)
    with connect(w) as conn:
        monthly = query_frame(
            conn, render_sql("monthly_sales.sql", w), {"history_start": b["start"], "window_end": b["end"]}
        )
    if monthly.empty:
        raise ValueError(f"no sales at all in {w.fact_sale.name} between {b['start']} and {b['end']} (exclusive)")
    markets, grid = seq.monthly_grid(monthly, seq.month_range(month, s.history_months))
    trends = market_trends(grid[..., 0], s.seq_len)
    trends.insert(0, "market_key", markets.astype(str))
    trends_path = write_parquet(trends, month_dir(config, month) / "trends.parquet")
    path = write_npz(
        month_dir(config, month) / "sequences.npz",
        markets=markets.astype(str),
        features=seq.sequence_features(grid).astype(np.float32),
        revenue=grid[..., 0],
        active=grid[..., 2] > 0,  # a month with sale lines, even if returns net its revenue to zero
        n_lines=grid[..., 2],  # order lines per month: the data-quality gate's "thin" check counts them
    )
    return {"path": path, "trends_path": trends_path, "n_markets": len(markets)}


def check_data_quality(config: SegmentationConfig, month: pd.Period, static_path: str, sequences_path: str) -> dict:
    """The data-quality gate (``quality.py``), then the model's inputs for the markets that pass.

    Runs every check under its configured policy and writes ``quality.json`` (per check: policy,
    count, markets, examples) and ``excluded.parquet`` (market, check, reason). Then, for the
    eligible markets, writes ``inputs.npz`` (``sequences.model_inputs``): ``train``
    ``(n_windows, seq_len, 4)`` float32 (at most ``model.max_train_windows``, sampled with the
    month's seed), ``valid`` (windows of the ``model.validation_share`` of markets held out for
    early stopping), ``latest`` ``(n_markets, seq_len, 4)`` float32, ``markets`` and the scaler
    fitted on ``train``.

    Raises ``ValueError`` naming the check, the count and example markets when a ``fail`` check
    finds anything, or when too few markets remain to cluster.
    """
    from include.segmentation.core.quality import apply_policies, market_findings, warehouse_findings

    w, s, q = config.warehouse, config.sequences, config.quality
    history, window = _bounds(month, s.history_months), _bounds(month, s.seq_len)
    params = {"history_start": history["start"], "window_start": window["start"], "window_end": window["end"]}
    params |= {f"loyalty_{i}": value for i, value in enumerate(q.loyalty_values)}
    with connect(w) as conn:
        per_market = query_frame(conn, render_sql("quality_markets.sql", w, n_loyalty=len(q.loyalty_values)), params)
        table = query_frame(conn, render_sql("quality_table.sql", w)).iloc[0]
    static = read_parquet(static_path)
    data = read_npz(sequences_path)
    markets = data["markets"].astype(str)
    findings = market_findings(
        static,
        markets,
        data["revenue"],
        data["active"],
        s.seq_len,
        s.min_active_months,
        n_lines=data.get("n_lines"),  # absent from a sequences.npz written before it was stored
        min_lines=q.thin_min_lines,
        min_customers=q.thin_min_customers,
    )
    report = apply_policies(findings + warehouse_findings(per_market, table), q)
    folder = month_dir(config, month)
    quality_path = write_json(
        folder / "quality.json", {"checks": report.results, "failures": report.failures, "warnings": report.warnings}
    )
    excluded_path = write_parquet(report.excluded, folder / "excluded.parquet")
    for text in report.warnings:
        log.warning("data quality, %s: %s", month, text)
    if report.failures:
        raise ValueError(f"data-quality checks failed for {month}: " + "; ".join(report.failures))

    # numpy str arrays on both sides: np.isin sorts instead of comparing every pair (object arrays)
    static_keys = static["market_key"].to_numpy(dtype=str)
    eligible = np.isin(markets, static_keys) & ~np.isin(markets, np.array(list(report.excluded_markets), dtype=str))
    c = config.clustering
    needed = max(3, (c.n_clusters or c.k_min) + 1)
    if eligible.sum() < needed:
        raise ValueError(
            f"{int(eligible.sum())} market(s) left for {month} after the data-quality checks (excluded: "
            f"{len(report.excluded_markets)}); clustering into {c.n_clusters or c.k_min}+ segments needs at "
            f"least {needed}. Checks that excluded markets: {sorted(set(report.excluded['check']))}"
        )
    m = config.model
    inputs = seq.model_inputs(
        data["features"][eligible],
        data["active"][eligible],
        s.seq_len,
        s.min_active_months,
        m.max_train_windows,
        m.validation_share,
        month_seed(config, month),
    )
    path = write_npz(
        folder / "inputs.npz",
        train=inputs.train,
        valid=inputs.valid,
        latest=inputs.latest,
        markets=markets[eligible],
        features=np.array(seq.FEATURES),
        scaler_mean=inputs.scaler.mean,
        scaler_std=inputs.scaler.std,
    )
    _, previous_month, _ = previous_segments(config, month)
    return {
        "path": path,
        "previous_month": str(previous_month) if previous_month is not None else None,
        "quality_path": quality_path,
        "excluded_path": excluded_path,
        "n_markets": int(eligible.sum()),
        "n_excluded": len(report.excluded_markets),
        "n_train_windows": len(inputs.train),
        "n_valid_windows": len(inputs.valid),
        "flagged": {name: r["count"] for name, r in report.results.items() if r["count"]},
    }


def _fingerprint(config: SegmentationConfig, windows: list[np.ndarray], seed: int, warm_from: str = "") -> str:
    h = hashlib.sha256(config.model.model_dump_json().encode())
    h.update(str(seed).encode())
    h.update(warm_from.encode())  # the fingerprint of the model this one continued from, if any
    for w in windows:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _warm_start(config: SegmentationConfig, previous_month: str | None):
    """Last month's trained model and its fingerprint, when it exists and has this run's shape; else ``(None, "")``.

    A missing, unreadable or differently shaped model (another ``seq_len`` or architecture) starts
    training from scratch, said in the log: a warm start is an optimisation of continuity, never a
    reason to fail a month.
    """
    from include.segmentation.core.autoencoder import TrainedAutoencoder, model_shape

    if previous_month is None:
        return None, ""
    folder = month_dir(config, pd.Period(previous_month, "M"))
    try:
        meta = read_json(folder / "model.json")
        previous = TrainedAutoencoder.load(folder / "model.pt")
    except Exception as err:  # noqa: BLE001 - any unreadable model (truncated, garbage, old format): start fresh
        log.warning(
            "no warm start from %s (its model could not be read: %s); training from scratch", previous_month, err
        )
        return None, ""
    expected = model_shape(config.model, config.sequences.seq_len, len(seq.FEATURES))
    if previous.shape != expected:
        log.info(
            "no warm start from %s: its model has shape %s, this run needs %s; training from scratch",
            previous_month,
            previous.shape,
            expected,
        )
        return None, ""
    return previous, str(meta.get("fingerprint", ""))


def train_autoencoder(
    config: SegmentationConfig,
    month: pd.Period,
    inputs_path: str,
    force: bool = False,
    previous_month: str | None = None,
) -> dict:
    """Train the LSTM autoencoder on the month's training windows (``inputs.npz``); writes ``model.pt``.

    Continuity: with ``previous_month`` (``YYYY-MM``, the latest earlier month written to the
    warehouse, from ``check_data_quality``), training continues from that month's model when it has
    the same shape (``autoencoder.train_autoencoder``'s ``init``), so the latent space, and with it
    the segments, carry over. ``force`` (the ``force_retrain`` Param) starts from scratch and
    retrains even when this month's model exists. A model already trained for this month from the
    same windows, settings, seed and starting model is reused. Uses CUDA when the worker has it,
    else CPU. ``model.json`` records the losses per round, steps, how training stopped and the warm start.
    """
    from include.segmentation.core.autoencoder import train_autoencoder as fit

    data = read_npz(inputs_path)
    train, valid = data["train"], data["valid"]
    seed = month_seed(config, month)
    init, init_fingerprint = (None, "") if force else _warm_start(config, previous_month)
    fingerprint = _fingerprint(config, [train, valid], seed, init_fingerprint)
    path = month_dir(config, month) / "model.pt"
    meta_path = path.with_suffix(".json")
    keys = ("final_loss", "epochs", "steps", "stop_reason", "warm_start_from", "device")
    if not force and path.exists() and meta_path.exists():
        meta = read_json(meta_path)
        if meta.get("fingerprint") == fingerprint and all(k in meta for k in keys):
            log.info("reusing the model trained for %s (same data, settings, seed and starting model)", month)
            return {"path": str(path), **{k: meta[k] for k in keys}}
    trained = fit(train, config.model, seed=seed, init=init, validation=valid)
    saved = trained.save(path)
    meta = {
        "fingerprint": fingerprint,
        "final_loss": trained.losses[-1],
        "epochs": len(trained.losses),  # rounds: epochs, or ROUND_STEPS steps on large data
        "steps": trained.steps,
        "stop_reason": trained.stop_reason,
        "warm_start_from": previous_month if init is not None else None,
        "device": trained.device,
        "losses": trained.losses,
        "val_losses": trained.val_losses,
    }
    write_json(meta_path, meta)
    return {"path": saved, **{k: meta[k] for k in keys}}


def run_metrics(clusters: dict, model: dict) -> dict:
    """What ``write_month`` records: ``cluster_markets``' result plus the final loss and ``training_summary``."""
    return clusters | {"final_loss": model["final_loss"], "training": training_summary(model)}


def training_summary(model: dict) -> str:
    """One line on how training ended, for the run record and the report, from ``train_autoencoder``'s result."""
    how = (
        "converged"
        if model.get("stop_reason") == "converged"
        else f"stopped at its budget ({model.get('stop_reason')})"
    )
    warm = f", warm start from {model['warm_start_from']}" if model.get("warm_start_from") else ", from scratch"
    return f"{how} after {model.get('steps', 0):,} steps{warm}"


def embed_markets(config: SegmentationConfig, month: pd.Period, inputs_path: str, model_path: str) -> dict:
    """Encode each eligible market's latest window; writes ``embeddings.parquet`` (market_key, e0..e{d-1})."""
    from include.segmentation.core.autoencoder import TrainedAutoencoder, embed, embedding_spread

    data = read_npz(inputs_path)
    z = embed(TrainedAutoencoder.load(model_path), data["latest"], cpu_threads=config.model.cpu_threads)
    spread = embedding_spread(z)
    if spread < config.model.collapse_threshold:
        log.warning(
            "embeddings for %s are nearly identical across markets (spread %.2e < %.0e): the LSTM block carries "
            "no information; train longer (epochs/min_steps) or check the sequence scaling",
            month,
            spread,
            config.model.collapse_threshold,
        )
    frame = pd.DataFrame(z, columns=[f"e{i}" for i in range(z.shape[1])])
    frame.insert(0, "market_key", data["markets"].astype(str))
    path = write_parquet(frame, month_dir(config, month) / "embeddings.parquet")
    return {"path": path, "n_markets": len(frame), "embedding_dim": int(z.shape[1]), "embedding_spread": spread}


def previous_segments(config: SegmentationConfig, month: pd.Period) -> tuple[pd.Series, pd.Period | None, int]:
    """The latest earlier month's SegmentIDs (market key -> id), that month, and the highest id used before.

    Empty, ``None`` and 0 on the first run (no segment table yet, or no earlier month).
    """
    w = config.warehouse
    with connect(w) as conn:
        exists = query_frame(conn, render_sql("table_exists.sql", w), {"table_name": w.market_segment_table})
        if int(exists["n"].iloc[0]) == 0:
            return pd.Series(dtype="float64"), None, 0
        prev = query_frame(conn, render_sql("previous_segments.sql", w), {"segment_month": month.start_time.date()})
    if prev.empty:
        return pd.Series(dtype="float64"), None, 0
    ids = pd.Series(pd.to_numeric(prev["segment_id"]).to_numpy(), index=prev["market_key"].astype(str))
    prev_month = pd.Timestamp(prev["segment_month"].iloc[0]).to_period("M")
    return ids, prev_month, int(pd.to_numeric(prev["max_id"]).max())


def cluster_markets(
    config: SegmentationConfig,
    month: pd.Period,
    static_path: str,
    embeddings_path: str,
    trends_path: str,
    fresh: bool = False,
) -> dict:
    """Cluster the hybrid features, carry last month's SegmentIDs over (``alignment.py``) and profile
    the segments (``profiles.py``).

    Continuity: last month's SegmentIDs (from the warehouse) keep k unless the gap statistic says
    otherwise and start the final K-Means (``clustering.cluster_markets``' ``previous``); ``fresh``
    (the ``force_retrain`` Param) chooses k and centres afresh. Either way the segments are then
    matched to last month's SegmentIDs. Market size (``market_size`` of ``avg_monthly_revenue`` in
    ``trends.parquet``) enters with ``clustering.size_weight``.

    Writes ``segments.parquet`` (with ``segment_id`` and ``previous_segment_id``),
    ``profiles.parquet`` (one row per SegmentID with its description) and ``metrics.json``; returns
    both paths, k, silhouettes, noise share, stability and the previous month.
    """
    from include.segmentation.core.alignment import align_segment_ids, stability
    from include.segmentation.core.clustering import cluster_markets as fit

    if config.clustering.n_clusters is not None and config.clustering.algorithm != "kmeans":
        log.warning(
            "n_clusters=%d ignored: %s finds the number of segments itself",
            config.clustering.n_clusters,
            config.clustering.algorithm,
        )
    emb = read_parquet(embeddings_path)
    static = read_parquet(static_path).set_index("market_key").loc[emb["market_key"]].reset_index()
    trends = read_parquet(trends_path)
    size = trends.set_index("market_key")["avg_monthly_revenue"].reindex(emb["market_key"]).to_numpy()
    previous, previous_month, max_id = previous_segments(config, month)
    last_ids = static["market_key"].map(previous).fillna(-1).to_numpy(dtype=np.int64)
    result = fit(
        static[list(STATIC_FEATURES)].to_numpy(dtype=np.float64),
        emb.drop(columns="market_key").to_numpy(dtype=np.float64),
        config.clustering,
        seed=month_seed(config, month),
        size=market_size(size),
        previous=None if fresh else last_ids,
    )
    if result.n_clusters == 0:
        raise ValueError(
            f"{result.algorithm} labelled all {len(result.labels)} markets as noise for {month}: no segment to write; "
            "set clustering.dbscan_eps / min_samples, or use kmeans"
        )
    log.info("%s: k=%d, %s", month, result.n_clusters, result.k_reason)
    markets = static["market_key"].to_numpy(dtype=object)
    ids = align_segment_ids(markets, result.labels, previous, first_new_id=max_id + 1)
    segments = static.assign(segment_id=ids, previous_segment_id=static["market_key"].map(previous))
    path = write_parquet(segments, month_dir(config, month) / "segments.parquet")
    profiles = segment_profiles(segments.merge(trends, on="market_key", how="left"))
    profiles_path = write_parquet(profiles, month_dir(config, month) / "profiles.parquet")
    for row in profiles.itertuples():
        log.info("segment %d (%d markets): %s", row.segment_id, row.n_markets, row.description)
    metrics = {
        "algorithm": result.algorithm,
        "n_clusters": result.n_clusters,
        "noise_fraction": result.noise_fraction,
        "silhouette_hybrid": result.silhouette_hybrid,
        "silhouette_lstm": result.silhouette_lstm,
        "silhouette_static": result.silhouette_static,
        "stability": stability(markets, ids, previous),
        "previous_month": str(previous_month) if previous_month is not None else None,
        "k_reason": result.k_reason,
        "previous_k": result.previous_k,
        "warm_start": result.warm_start,
        "k_curve": {str(k): v for k, v in result.k_curve.items()},
        "k_curve_gap": {str(k): v for k, v in result.k_curve_gap.items()},
        "k_curve_gap_se": {str(k): v for k, v in result.k_curve_gap_se.items()},
    }
    write_json(month_dir(config, month) / "metrics.json", metrics)
    log.info(
        "%s: k=%d silhouettes hybrid=%.3f lstm=%.3f static=%.3f",
        month,
        result.n_clusters,
        result.silhouette_hybrid,
        result.silhouette_lstm,
        result.silhouette_static,
    )
    if previous_month is not None:
        log.info("%.0f%% of markets keep their %s SegmentID", 100 * metrics["stability"], previous_month)
    # XCom is JSON: undefined figures travel as null, not NaN.
    small = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}
    return {
        "path": path,
        "profiles_path": profiles_path,
        **{k: v for k, v in small.items() if not k.startswith("k_curve")},
    }


def write_month(
    config: SegmentationConfig,
    month: pd.Period,
    segments_path: str,
    profiles_path: str,
    metrics: dict,
    run_id: str,
    dry_run: bool = False,
) -> dict:
    """Write the month's SegmentIDs, segment profiles and run record (``writeback.write_segments``);
    nothing if ``dry_run``."""
    segments = read_parquet(segments_path)
    excluded = read_parquet(month_dir(config, month) / "excluded.parquet")
    quality = read_json(month_dir(config, month) / "quality.json")
    record = RunRecord(
        run_id=run_id,
        model_version=model_version(config.model_version_prefix, month),
        algorithm=metrics["algorithm"],
        n_clusters=int(metrics["n_clusters"]),
        n_markets=len(segments),
        n_excluded=excluded["market_key"].nunique(),
        noise_fraction=float(metrics["noise_fraction"]),
        seq_len=config.sequences.seq_len,
        silhouette_hybrid=metrics["silhouette_hybrid"],
        silhouette_lstm=metrics["silhouette_lstm"],
        silhouette_static=metrics["silhouette_static"],
        final_loss=metrics.get("final_loss"),
        stability=metrics.get("stability"),
        customer_attributes="as of month end" if config.warehouse.customer.is_type2 else "current",
        quality=json.dumps(quality["checks"], sort_keys=True),
        k_reason=metrics.get("k_reason"),
        training=metrics.get("training"),
    )
    if dry_run:
        log.info("dry run: %d segment rows for %s computed, nothing written", len(segments), month)
        return {"rows_written": 0, "model_version": record.model_version, "dry_run": True}
    previous_month = pd.Period(metrics["previous_month"], "M") if metrics.get("previous_month") else None
    columns = ["market_key", "segment_id", "previous_segment_id"]
    with connect(config.warehouse) as conn:
        written = write_segments(
            conn, config.warehouse, segments[columns], month, record, previous_month, read_parquet(profiles_path)
        )
    return {"rows_written": written, "model_version": record.model_version, "dry_run": False}


def build_report(config: SegmentationConfig, month: pd.Period) -> dict:
    """Write the month's self-contained ``report.html`` (``report.build_report``); returns its path."""
    from include.segmentation.report import build_report as build

    return {"path": build(config, month)}


#: Airflow Params that override configuration fields for one run (see ``SegmentationConfig.with_overrides``).
CONFIG_PARAMS = ("seq_len", "epochs", "algorithm", "n_clusters", "static_weight")


def settings_from_context(context: dict) -> tuple[SegmentationConfig, pd.Period]:
    """The run's configuration (file + Params) and target month, from an Airflow task context.

    Raises ``ValueError`` / ``pydantic.ValidationError`` naming the bad Param.
    """
    from include.segmentation.config import load_config
    from include.segmentation.months import resolve_target_month

    params = context["params"]
    config = load_config().with_overrides(**{k: params.get(k) for k in CONFIG_PARAMS})
    dag_run = context.get("dag_run")
    month = resolve_target_month(
        params.get("target_month"),
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        context.get("logical_date"),
        getattr(dag_run, "run_after", None),
    )
    return config, month


def run_month(
    config: SegmentationConfig, month: pd.Period, run_id: str, dry_run: bool = False, fresh: bool = False
) -> dict:
    """All eight steps for one month in this process, as the DAG runs them (for notebooks and tests).

    ``fresh``: as the ``force_retrain`` Param (no warm start of the model, k or centres).

    Returns each step's result by task name. Raises what the steps raise.
    """
    static = extract_static_features(config, month)
    sequences = build_sequences(config, month)
    checked = check_data_quality(config, month, static["path"], sequences["path"])
    model = train_autoencoder(config, month, checked["path"], fresh, checked["previous_month"])
    embeddings = embed_markets(config, month, checked["path"], model["path"])
    clusters = cluster_markets(config, month, static["path"], embeddings["path"], sequences["trends_path"], fresh)
    metrics = run_metrics(clusters, model)
    report = build_report(config, month)
    written = write_month(config, month, clusters["path"], clusters["profiles_path"], metrics, run_id, dry_run)
    return {
        "extract_static_features": static,
        "build_sequences": sequences,
        "check_data_quality": checked,
        "train_autoencoder": model,
        "embed_markets": embeddings,
        "cluster_markets": clusters,
        "build_report": report,
        "write_segments": written,
    }
