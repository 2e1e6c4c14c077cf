"""The DAG's steps: each reads its inputs from the run's catalogue, calls pure functions, writes its outputs.

The flow (one DAG task per step, in this order)::

    start_run -> check_warehouse -> extract_static_features, build_sequences -> check_data_quality -> prepare_inputs
              -> read_previous -> train_autoencoder -> embed_markets -> cluster_markets
              -> align_segments -> profile_segments -> build_report -> decide_approval
              -> (approve_segments: the DAG's human-in-the-loop task) -> write_segments -> record_outcome

Every step takes the run (``adapters.catalog.RunArtifacts``: the configuration snapshot, month,
run id and the paths of every file) and returns only small figures, which is all the DAG passes
through XCom besides the run's folder. The numbers come from ``core`` (numpy, pandas, torch,
scikit-learn; no Airflow, no warehouse, no files); the warehouse from ``adapters.warehouse``.
A step that is re-run overwrites its own files (atomically), never another run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

import numpy as np
import pandas as pd

from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import (
    ArtifactError,
    read_bytes,
    read_json,
    read_npz,
    read_parquet,
    sha256,
    write_bytes,
    write_json,
    write_npz,
    write_parquet,
    write_text,
)
from include.segmentation.adapters.warehouse import connect, feature_params, query_frame, render_sql, table_exists
from include.segmentation.config import SegmentationConfig
from include.segmentation.core import sequences as seq
from include.segmentation.core.features import SEQUENCE_FEATURES

log = logging.getLogger(__name__)


def month_seed(config: SegmentationConfig, month: pd.Period) -> int:
    """A seed derived from the month, so a re-run of the same month reproduces its results."""
    return config.seed * 1000 + month.year * 12 + month.month


def _bounds(month: pd.Period, n_months: int) -> dict[str, object]:
    # Half-open [start, end) on DATE values: the end is the first day after the month, so every
    # query is bounded by the end of the target month (no look-ahead).
    return {"start": (month - n_months + 1).start_time.date(), "end": (month + 1).start_time.date()}


def start_run(
    config: SegmentationConfig, month: pd.Period, run_id: str, info: dict[str, Any] | None = None
) -> RunArtifacts:
    """Open a run: write its configuration snapshot and ``run.json`` (``info``: Params, dry run, times).

    Every later step reads the snapshot, never the configuration file, so an edit made while the run
    is under way does not reach it. Returns the run; ``str(run.folder)`` is what the DAG passes on.
    """
    run = RunArtifacts(config, month, run_id, dict(info or {}))
    run.start()
    reason = run.info.get("month_reason", "given")
    log.info("run %s segments %s (%s); its files are in %s", run_id, month, reason, run.folder)
    c = config.clustering
    log.info(
        "effective settings: seq_len=%d epochs=%d algorithm=%s n_clusters=%s static_weight=%g dry_run=%s "
        "force_retrain=%s overwrite_history=%s; static features %s",
        config.sequences.seq_len,
        config.model.epochs,
        c.algorithm,
        c.n_clusters if c.n_clusters is not None else "chosen (gap statistic)",
        c.static_weight,
        run.dry_run,
        run.fresh,
        run.overwrite_history,
        ", ".join(f"{f.name} (weight {f.weight:g})" for f in config.static_features),
    )
    return run


def check_warehouse(run: RunArtifacts) -> dict:
    """Check the warehouse against the configuration before any feature query (``adapters.contract``).

    Writes ``run.contract``: each mapped table's columns and types, the columns a loader derived
    (``warehouse.derived_columns_table``) and the static features that read them. Raises
    ``contract.WarehouseContractError`` (a ``ValueError``: not retried) naming the config field,
    table and column of every missing or unusable column and every duplicated dimension key.
    """
    from include.segmentation.adapters.contract import check_contract, derived_columns, derived_features

    w = run.config.warehouse
    with connect(w) as conn:
        types = check_contract(conn, w)
        derived = derived_columns(conn, w)
    made_up = derived_features(run.config.static_features, w, derived)
    if made_up:
        log.warning(
            "static feature(s) %s read columns the loader derived (%s): %s",
            made_up,
            ", ".join(f"{d['table']}.{d['column']}: {d['how']}" for d in derived),
            "clustered anyway (cluster_derived_features)"
            if run.config.cluster_derived_features
            else "profiled, not clustered",
        )
    write_json(run.contract, {"types": types, "derived_columns": derived, "derived_features": made_up})
    return {"tables": len(types), "derived_features": made_up}


def extract_static_features(run: RunArtifacts) -> dict:
    """Query static features (``sql/static_features.sql``) over the ``seq_len`` months ending at the month.

    Writes ``run.static``: one row per market with ``market_key``, the configured static features,
    ``n_customers`` and the market's name, country and territory group. Raises ``ValueError`` when
    the window has no sales, or a market has two rows in the territory table.
    """
    w, features = run.config.warehouse, run.config.static_features
    b = _bounds(run.month, run.config.sequences.seq_len)
    params = {"window_start": b["start"], "window_end": b["end"]} | feature_params(features)
    with connect(w) as conn:
        static = query_frame(conn, render_sql("static_features.sql", w, features=features), params)
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
    write_parquet(static, run.static)
    log.info("static features for %d markets in %s", len(static), run.month)
    if not w.customer.is_type2:
        log.warning(
            "%s has no valid_from/valid_to configured: loyalty status and lifetime value are current values, "
            "not as of %s (recorded in the run record)",
            w.customer.name,
            run.month,
        )
    return {"n_markets": len(static)}


def build_sequences(run: RunArtifacts) -> dict:
    """Monthly aggregates (``sql/monthly_sales.sql``) over ``history_months`` -> per-market arrays.

    Writes ``run.sequences`` for every market with sales in the history: ``markets`` ``(n,)``,
    ``features`` ``(n, history_months, 4)`` float32 (``SEQUENCE_FEATURES``, unscaled), ``revenue``
    ``(n, history_months)`` net revenue per month (currency), ``n_lines`` (order lines per month)
    and ``active`` (months with sale lines); and ``run.trends`` (``profiles.market_trends`` per
    market: ``TREND_FEATURES`` and ``avg_monthly_revenue``). Raises ``ValueError`` when the
    history has no sales at all.
    """
    from include.segmentation.core.profiles import market_trends

    w, s = run.config.warehouse, run.config.sequences
    b = _bounds(run.month, s.history_months)
    with connect(w) as conn:
        monthly = query_frame(
            conn, render_sql("monthly_sales.sql", w), {"history_start": b["start"], "window_end": b["end"]}
        )
    if monthly.empty:
        raise ValueError(f"no sales at all in {w.fact_sale.name} between {b['start']} and {b['end']} (exclusive)")
    markets, grid = seq.monthly_grid(monthly, seq.month_range(run.month, s.history_months))
    trends = market_trends(grid[..., 0], s.seq_len)
    trends.insert(0, "market_key", markets.astype(str))
    write_parquet(trends, run.trends)
    write_npz(
        run.sequences,
        markets=markets.astype(str),
        features=seq.sequence_features(grid).astype(np.float32),
        revenue=grid[..., 0],
        active=grid[..., 2] > 0,  # a month with sale lines, even if returns net its revenue to zero
        n_lines=grid[..., 2],  # order lines per month: the data-quality gate's "thin" check counts them
    )
    return {"n_markets": len(markets)}


def _eligible(run: RunArtifacts, markets: np.ndarray) -> np.ndarray:
    """Markets (of ``sequences``' order) with static features that the gate did not exclude: a bool mask."""
    static_keys = read_parquet(run.static)["market_key"].to_numpy(dtype=str)
    excluded = read_parquet(run.excluded)["market_key"].to_numpy(dtype=str)
    # numpy str arrays on both sides: np.isin sorts instead of comparing every pair (object arrays)
    return np.isin(markets, static_keys) & ~np.isin(markets, excluded)


def check_data_quality(run: RunArtifacts) -> dict:
    """The data-quality gate (``core/quality.py``): which markets may be segmented this month.

    Runs every check under its configured policy and writes ``run.quality`` (per check: policy,
    count, markets, examples) and ``run.excluded`` (market, check, reason). Raises ``ValueError``
    naming the check, the count and example markets when a ``fail`` check finds anything, when the
    checks exclude more than ``quality.max_excluded_share`` of the markets (naming the top checks), or
    when too few markets remain to cluster.
    """
    from include.segmentation.core.quality import (
        apply_policies,
        excluded_share_problem,
        market_findings,
        warehouse_findings,
    )

    config, month = run.config, run.month
    w, s, q = config.warehouse, config.sequences, config.quality
    history, window = _bounds(month, s.history_months), _bounds(month, s.seq_len)
    params = {"history_start": history["start"], "window_start": window["start"], "window_end": window["end"]}
    params["outlier_z"] = q.outlier_z
    params |= {f"loyalty_{i}": value for i, value in enumerate(q.loyalty_values)}
    with connect(w) as conn:
        per_market = query_frame(conn, render_sql("quality_markets.sql", w, n_loyalty=len(q.loyalty_values)), params)
        table = query_frame(conn, render_sql("quality_table.sql", w)).iloc[0]
    data = read_npz(run.sequences)
    markets = data["markets"].astype(str)
    findings = market_findings(
        read_parquet(run.static),
        markets,
        data["revenue"],
        data["active"],
        s.seq_len,
        s.min_active_months,
        n_lines=data["n_lines"],
        min_lines=q.thin_min_lines,
        min_customers=q.thin_min_customers,
        features=config.feature_names,
        fractions=tuple(f.name for f in config.static_features if f.kind == "fraction"),
        month=month,
    )
    report = apply_policies(findings + warehouse_findings(per_market, table), q)
    too_many = excluded_share_problem(report, len(markets), q.max_excluded_share)
    if too_many:
        report.failures.append(too_many)
    write_json(run.quality, {"checks": report.results, "failures": report.failures, "warnings": report.warnings})
    write_parquet(report.excluded, run.excluded)
    for text in report.warnings:
        log.warning("data quality, %s: %s", month, text)
    if report.failures:
        raise ValueError(f"data-quality checks failed for {month}: " + "; ".join(report.failures))
    n_eligible = int(_eligible(run, markets).sum())
    c = config.clustering
    needed = max(3, (c.n_clusters or c.k_min) + 1)
    if n_eligible < needed:
        raise ValueError(
            f"{n_eligible} market(s) left for {month} after the data-quality checks (excluded: "
            f"{len(report.excluded_markets)}); clustering into {c.n_clusters or c.k_min}+ segments needs at "
            f"least {needed}. Checks that excluded markets: {sorted(set(report.excluded['check']))}"
        )
    return {
        "n_markets": n_eligible,
        "n_excluded": len(report.excluded_markets),
        "flagged": {name: r["count"] for name, r in report.results.items() if r["count"]},
    }


def prepare_inputs(run: RunArtifacts) -> dict:
    """The model's inputs for the markets that passed the gate (``sequences.model_inputs``).

    Writes ``run.inputs``: ``train`` ``(n_windows, seq_len, 4)`` float32 (at most
    ``model.max_train_windows``, sampled with the month's seed), ``valid`` (windows of the
    ``model.validation_share`` of markets held out for early stopping), ``latest``
    ``(n_markets, seq_len, 4)`` float32, ``markets`` and the scaler fitted on ``train``.
    """
    config, s, m = run.config, run.config.sequences, run.config.model
    data = read_npz(run.sequences)
    markets = data["markets"].astype(str)
    eligible = _eligible(run, markets)
    inputs = seq.model_inputs(
        data["features"][eligible],
        data["active"][eligible],
        s.seq_len,
        s.min_active_months,
        m.max_train_windows,
        m.validation_share,
        month_seed(config, run.month),
    )
    write_npz(
        run.inputs,
        train=inputs.train,
        valid=inputs.valid,
        latest=inputs.latest,
        markets=markets[eligible],
        features=np.array(SEQUENCE_FEATURES),
        scaler_mean=inputs.scaler.mean,
        scaler_std=inputs.scaler.std,
    )
    return {
        "n_markets": int(eligible.sum()),
        "n_train_windows": len(inputs.train),
        "n_valid_windows": len(inputs.valid),
    }


def read_previous(run: RunArtifacts) -> dict:
    """The published month this run continues from: the latest earlier month in ``MARKET_SEGMENT``.

    Writes ``run.previous`` (``month`` YYYY-MM or null, the ``run_id`` that wrote it, ``max_id``: the
    highest SegmentID used before this month) and ``run.previous_segments`` (``market_key``,
    ``segment_id``). Read once per run, so training (warm start), clustering (k and centres) and
    alignment (SegmentIDs) all continue from the same month. The DAG runs this step only after the
    previous DAG run's write has finished (``depends_on_past``), so months are aligned in order.
    """
    w = run.config.warehouse
    ids = pd.DataFrame({"market_key": pd.Series(dtype=str), "segment_id": pd.Series(dtype="float64")})
    previous: dict[str, Any] = {"month": None, "run_id": None, "max_id": 0}
    with connect(w) as conn:
        if table_exists(conn, w, w.market_segment_table):
            prev = query_frame(
                conn, render_sql("previous_segments.sql", w), {"segment_month": run.month.start_time.date()}
            )
            if not prev.empty:
                ids = pd.DataFrame(
                    {"market_key": prev["market_key"].astype(str), "segment_id": pd.to_numeric(prev["segment_id"])}
                )
                previous = {
                    "month": str(pd.Timestamp(prev["segment_month"].iloc[0]).to_period("M")),
                    "run_id": str(prev["run_id"].iloc[0]),
                    "max_id": int(pd.to_numeric(prev["max_id"]).max()),
                }
    write_parquet(ids, run.previous_segments)
    write_json(run.previous, previous)
    return {"previous_month": previous["month"], "previous_run_id": previous["run_id"]}


def _previous_ids(run: RunArtifacts) -> tuple[pd.Series, dict]:
    # market key -> last month's SegmentID, and previous.json
    frame = read_parquet(run.previous_segments)
    ids = pd.Series(frame["segment_id"].to_numpy(dtype="float64"), index=frame["market_key"].astype(str))
    return ids, read_json(run.previous)


def _fingerprint(config: SegmentationConfig, windows: list[np.ndarray], seed: int, warm_from: str = "") -> str:
    # What a trained model is a function of: settings, seed, starting model and the windows themselves.
    h = hashlib.sha256(config.model.model_dump_json().encode())
    h.update(str(seed).encode())
    h.update(warm_from.encode())  # the fingerprint of the model this one continued from, if any
    for w in windows:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def load_model(run: RunArtifacts, meta: dict, device: str | None = None):
    """The stored model ``meta`` (a ``model.json``) names, after checking its SHA-256.

    Raises ``ArtifactError`` naming the file when it is missing, its checksum differs (truncated or
    overwritten) or torch cannot read it.
    """
    from include.segmentation.core.autoencoder import TrainedAutoencoder

    path = run.model_file(meta["fingerprint"])
    data = read_bytes(path)
    if sha256(data) != meta.get("sha256"):
        raise ArtifactError(f"model {path} does not match its checksum in model.json (truncated or overwritten)")
    try:
        return TrainedAutoencoder.from_bytes(data, device=device)
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... on damaged bytes
        raise ArtifactError(f"model {path} cannot be read: {err}") from err


def _warm_start(run: RunArtifacts, previous: dict):
    """The published previous month's model and its fingerprint, when it is readable and has this run's
    shape; else ``(None, "")``.

    A missing, corrupt or differently shaped model (another ``seq_len`` or architecture) starts
    training from scratch, said in the log: a warm start is an optimisation of continuity, never a
    reason to fail a month.
    """
    from include.segmentation.core.autoencoder import model_shape

    if run.fresh or previous["month"] is None:
        return None, ""
    earlier = RunArtifacts(run.config, pd.Period(previous["month"], "M"), previous["run_id"])
    try:
        meta = read_json(earlier.model)
        model = load_model(earlier, meta)
    except (ArtifactError, KeyError, ValueError) as err:
        log.warning("no warm start from %s (%s); training from scratch", previous["month"], err)
        return None, ""
    expected = model_shape(run.config.model, run.config.sequences.seq_len, len(SEQUENCE_FEATURES))
    if model.shape != expected:
        log.info(
            "no warm start from %s: its model has shape %s, this run needs %s; training from scratch",
            previous["month"],
            model.shape,
            expected,
        )
        return None, ""
    return model, meta["fingerprint"]


def _reusable(run: RunArtifacts, fingerprint: str) -> dict | None:
    """The stored model with this fingerprint, when one exists and its checksum holds; a damaged one is
    deleted with a warning naming it, and retrained."""
    path = run.model_file(fingerprint)
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        meta = read_json(meta_path)
        load_model(run, meta)
        return meta
    except (ArtifactError, KeyError) as err:
        log.warning("discarding the stored model %s and retraining: %s", path, err)
        path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None


def train_autoencoder(run: RunArtifacts) -> dict:
    """Train the LSTM autoencoder on the month's training windows (``run.inputs``).

    Continuity: training continues from the model of the published previous month (``run.previous``)
    when it has the same shape (``core.autoencoder.train_autoencoder``'s ``init``), so the latent
    space, and with it the segments, carry over; ``run.fresh`` (the ``force_retrain`` Param) starts
    from scratch. Models are stored once per fingerprint (windows, settings, seed, starting model)
    under ``<artifacts_dir>/models/``, so a re-run reuses a verified model instead of retraining.
    Uses CUDA when the worker has it, else CPU. Writes ``run.model``: fingerprint, SHA-256, losses
    per round, steps, how training stopped, the warm start and the device.
    """
    from include.segmentation.core.autoencoder import train_autoencoder as fit

    data = read_npz(run.inputs)
    train, valid = data["train"], data["valid"]
    seed = month_seed(run.config, run.month)
    previous = read_json(run.previous)
    init, init_fingerprint = _warm_start(run, previous)
    fingerprint = _fingerprint(run.config, [train, valid], seed, init_fingerprint)
    meta = None if run.fresh else _reusable(run, fingerprint)
    if meta is not None:
        log.info("reusing the stored model %s (same windows, settings, seed and starting model)", fingerprint[:12])
    else:
        trained = fit(train, run.config.model, seed=seed, init=init, validation=valid)
        blob = trained.to_bytes()
        meta = {
            "fingerprint": fingerprint,
            "sha256": sha256(blob),
            "final_loss": trained.losses[-1],
            "epochs": len(trained.losses),  # rounds: epochs, or ROUND_STEPS steps on large data
            "steps": trained.steps,
            "stop_reason": trained.stop_reason,
            "warm_start_from": previous["month"] if init is not None else None,
            "device": trained.device,
            "losses": trained.losses,
            "val_losses": trained.val_losses,
        }
        model_file = run.model_file(fingerprint)
        write_bytes(model_file, blob)
        write_json(model_file.with_suffix(".json"), meta)
    write_json(run.model, meta)
    keys = ("final_loss", "epochs", "steps", "stop_reason", "warm_start_from", "device")
    return {k: meta[k] for k in keys}


def embed_markets(run: RunArtifacts) -> dict:
    """Encode each eligible market's latest window; writes ``run.embeddings`` (market_key, e0..e{d-1})."""
    from include.segmentation.core.autoencoder import embed, embedding_spread

    data = read_npz(run.inputs)
    model = load_model(run, read_json(run.model))
    z = embed(model, data["latest"], cpu_threads=run.config.model.cpu_threads)
    spread = embedding_spread(z)
    if spread < run.config.model.collapse_threshold:
        log.warning(
            "embeddings for %s are nearly identical across markets (spread %.2e < %.0e): the LSTM block carries "
            "no information; train longer (epochs/min_steps) or check the sequence scaling",
            run.month,
            spread,
            run.config.model.collapse_threshold,
        )
    frame = pd.DataFrame(z, columns=[f"e{i}" for i in range(z.shape[1])])
    frame.insert(0, "market_key", data["markets"].astype(str))
    write_parquet(frame, run.embeddings)
    return {"n_markets": len(frame), "embedding_dim": int(z.shape[1]), "embedding_spread": spread}


def _hybrid_inputs(run: RunArtifacts) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    # Static features and market size in the embeddings' market order, and the embedding matrix.
    emb = read_parquet(run.embeddings)
    static = read_parquet(run.static).set_index("market_key").loc[emb["market_key"]].reset_index()
    trends = read_parquet(run.trends).set_index("market_key")
    size = trends["avg_monthly_revenue"].reindex(emb["market_key"]).to_numpy()
    return static, emb.drop(columns="market_key").to_numpy(dtype=np.float64), size


def cluster_markets(run: RunArtifacts) -> dict:
    """Cluster the hybrid features (``core.clustering.cluster_markets``).

    Continuity: last month's SegmentIDs (``run.previous_segments``) keep k unless the gap statistic
    says otherwise and start the final K-Means; ``run.fresh`` chooses k and centres afresh. Market
    size (``avg_monthly_revenue`` in ``run.trends``) enters with ``clustering.size_weight``.
    Writes ``run.clusters`` (``market_key``, ``label``; -1 = noise) and ``run.clustering`` (k, why,
    silhouettes, noise share, k curve). Raises ``ValueError`` when fewer than two segments are found
    (DBSCAN/HDBSCAN: one dense blob, or every market noise), with a hint per algorithm.
    """
    from include.segmentation.core.clustering import cluster_markets as fit
    from include.segmentation.core.clustering import market_size

    c, month = run.config.clustering, run.month
    if c.n_clusters is not None and c.algorithm != "kmeans":
        log.warning("n_clusters=%d ignored: %s finds the number of segments itself", c.n_clusters, c.algorithm)
    static, embedding, size = _hybrid_inputs(run)
    previous, _ = _previous_ids(run)
    last_ids = static["market_key"].map(previous).fillna(-1).to_numpy(dtype=np.int64)
    clustered = run.config.clustered_features(run.derived_features)
    if not clustered:
        raise ValueError(
            f"every static feature with a weight reads a column the loader derived ({run.derived_features}): "
            "nothing real to cluster on; add a feature, or set cluster_derived_features"
        )
    names = tuple(f.name for f in clustered)
    result = fit(
        static[list(names)].to_numpy(dtype=np.float64),
        embedding,
        c,
        seed=month_seed(run.config, month),
        size=market_size(size),
        previous=None if run.fresh else last_ids,
        feature_weights=np.array([f.weight for f in clustered]),
        names=names,
    )
    if result.n_clusters < 2:
        raise ValueError(_one_segment(result, month))
    log.info("%s: k=%d, %s", month, result.n_clusters, result.k_reason)
    write_parquet(pd.DataFrame({"market_key": static["market_key"], "label": result.labels}), run.clusters)
    clustering = {
        "algorithm": result.algorithm,
        "n_clusters": result.n_clusters,
        "noise_fraction": result.noise_fraction,
        "silhouette_hybrid": result.silhouette_hybrid,
        "silhouette_lstm": result.silhouette_lstm,
        "silhouette_static": result.silhouette_static,
        "k_reason": result.k_reason,
        "previous_k": result.previous_k,
        "warm_start": result.warm_start,
        "k_curve": {str(k): v for k, v in result.k_curve.items()},
        "k_curve_gap": {str(k): v for k, v in result.k_curve_gap.items()},
        "k_curve_gap_se": {str(k): v for k, v in result.k_curve_gap_se.items()},
    }
    write_json(run.clustering, clustering)
    log.info(
        "%s: k=%d silhouettes hybrid=%.3f lstm=%.3f static=%.3f",
        month,
        result.n_clusters,
        result.silhouette_hybrid,
        result.silhouette_lstm,
        result.silhouette_static,
    )
    return _xcom({k: v for k, v in clustering.items() if not k.startswith("k_curve")})


#: What to change when a density algorithm finds fewer than two segments.
_DENSITY_HINTS = {
    "dbscan": "set clustering.dbscan_eps lower (or empty: taken from the k-distance curve) or "
    "clustering.min_samples lower, or use kmeans",
    "hdbscan": "set clustering.min_samples lower (HDBSCAN finds its own density; it ignores dbscan_eps), or use kmeans",
}


def _one_segment(result, month: pd.Period) -> str:
    # A "segmentation" of one segment (or none: all noise) says nothing; writing it would replace the month.
    n, noise = len(result.labels), int((result.labels == -1).sum())
    found = "no segment: every market is noise" if result.n_clusters == 0 else "one segment"
    return (
        f"{result.algorithm} found {found} for {month} ({n - noise} of {n} markets in segments, {noise} noise): "
        f"a segmentation needs at least 2 segments; nothing was written. "
        + _DENSITY_HINTS.get(result.algorithm, "set clustering.n_clusters")
    )


def _xcom(figures: dict) -> dict:
    # XCom is JSON: undefined figures travel as null, not NaN.
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in figures.items()}


def align_segments(run: RunArtifacts) -> dict:
    """Give this month's clusters last month's SegmentIDs (``core.alignment``), and sum the month up.

    Writes ``run.segments`` (the static frame with ``segment_id``, -1 for noise, and
    ``previous_segment_id``) and ``run.metrics``: ``run.clustering`` plus ``stability`` (share 0-1 of
    markets keeping their SegmentID), ``previous_month``, ``final_loss`` and ``training`` (from
    ``run.model``): what the run record and the report show.
    """
    from include.segmentation.core.alignment import align_segment_ids, stability
    from include.segmentation.core.autoencoder import training_summary

    clusters = read_parquet(run.clusters)
    static = read_parquet(run.static).set_index("market_key").loc[clusters["market_key"]].reset_index()
    previous, info = _previous_ids(run)
    markets = static["market_key"].to_numpy(dtype=object)
    ids = align_segment_ids(markets, clusters["label"].to_numpy(), previous, first_new_id=info["max_id"] + 1)
    segments = static.assign(segment_id=ids, previous_segment_id=static["market_key"].map(previous))
    write_parquet(segments, run.segments)
    model = read_json(run.model)
    metrics = read_json(run.clustering) | {
        "stability": stability(markets, ids, previous),
        "previous_month": info["month"],
        "final_loss": model["final_loss"],
        "training": training_summary(model),
    }
    write_json(run.metrics, metrics)
    if info["month"] is not None:
        log.info("%.0f%% of markets keep their %s SegmentID", 100 * metrics["stability"], info["month"])
    return _xcom({k: metrics[k] for k in ("stability", "previous_month")})


def profile_segments(run: RunArtifacts) -> dict:
    """Profile each segment and describe it in one line (``core.profiles.segment_profiles``).

    Writes ``run.profiles``: one row per SegmentID with its size, feature means/medians, dominant
    region and description.
    """
    from include.segmentation.core.profiles import segment_profiles

    segments = read_parquet(run.segments)
    markets = segments.merge(read_parquet(run.trends), on="market_key", how="left")
    profiles = segment_profiles(markets, run.config.static_features)
    write_parquet(profiles, run.profiles)
    for row in profiles.itertuples():
        log.info("segment %d (%d markets): %s", row.segment_id, row.n_markets, row.description)
    return {"n_segments": len(profiles)}


def build_report(run: RunArtifacts) -> dict:
    """Write the run's self-contained ``run.report`` (``report.render_report``)."""
    from include.segmentation.report import render_report

    write_text(run.report, render_report(run))
    return {"path": str(run.report)}


def decide_approval(run: RunArtifacts) -> dict:
    """Whether a person must approve the month before it is written (``core.gate``, ``config.approval``).

    Writes ``run.approval``: the change against the previous month, ``ask``, ``reasons`` (under the
    run's ``approval.mode``), ``change_reasons`` (what ``on_change`` would have said: a large change
    written without asking is still alerted) and the request's ``subject`` and Markdown ``body``.
    A dry run writes nothing, so it never asks. Returns the same, for the approval task's request.
    """
    from include.segmentation.alerts import report_url
    from include.segmentation.core.gate import approval_reasons, change, request_text

    metrics = read_json(run.metrics)
    excluded = read_parquet(run.excluded)
    summary = change(
        str(run.month),
        read_parquet(run.segments),
        read_parquet(run.previous_segments),
        metrics,
        int(excluded["market_key"].nunique()),
    )
    approval = run.config.approval
    reasons = [] if run.dry_run else approval_reasons(summary, approval)
    change_reasons = approval_reasons(summary, approval.model_copy(update={"mode": "on_change"}))
    subject, body = request_text(summary, reasons or change_reasons, report_url(run.config, run.run_id))
    decision = {
        "ask": bool(reasons),
        "mode": approval.mode,
        "reasons": reasons,
        "change_reasons": change_reasons,
        "subject": subject,
        "body": body,
        "change": dataclasses.asdict(summary),
    }
    write_json(run.approval, decision)
    if reasons:
        log.info("%s needs approval before it is written: %s", run.month, "; ".join(reasons))
    return {k: decision[k] for k in ("ask", "reasons", "change_reasons", "subject", "body")}


def approval_answer(asked: bool, answer: dict | None) -> str | None:
    """The approval task's answer: None when no one was asked; else its chosen option. A rejection (or
    the timeout's Reject) skips the write and leaves the task no result (``answer`` None): "Reject"."""
    if not asked:
        return None
    return (answer.get("chosen_options") or ["Reject"])[0] if answer else "Reject"


def record_outcome(run: RunArtifacts, decision: str | None, written: dict | None) -> dict:
    """What became of the run, in ``run.outcome`` (read by the UI plugin and the run's note):
    ``outcome`` (``written``, ``dry run``, ``rejected``: a person or the timeout rejected it, nothing
    written; ``not written``: the write did not happen), ``approval`` (the answer, or None when not
    asked), the month, k and stability. ``decision``: the approval task's chosen option (None: not
    asked); ``written``: ``write_segments``' result (None: it did not run)."""
    metrics = read_json(run.metrics)
    if run.dry_run:
        outcome = "dry run"
    elif decision == "Reject":
        outcome = "rejected"
    elif written and written.get("rows_written"):
        outcome = "written"
    else:
        outcome = "not written"
    result = _xcom(
        {
            "outcome": outcome,
            "approval": decision,
            "month": str(run.month),
            "k": metrics.get("n_clusters"),
            "stability": metrics.get("stability"),  # NaN (first month) -> None
            "previous_month": metrics.get("previous_month"),
        }
    )
    result["note"] = run_note(result, run.folder.parent.name + "/" + run.folder.name)
    write_json(run.outcome, result)
    log.info("%s: %s", run.month, outcome)
    return result


def run_note(outcome: dict, report_path: str) -> str:
    """The Airflow run's note (Markdown) from ``record_outcome``'s result: the month, what became of it,
    k and stability, and the report (``report_path``: ``<YYYY-MM>/<run_key>`` under ``/segments/runs/``)."""
    k = f"k={outcome['k']}" if outcome.get("k") is not None else "k n/a"
    kept = f", {outcome['stability']:.0%} kept their SegmentID" if outcome.get("stability") is not None else ""
    what = {
        "written": f"written to the warehouse ({k}{kept})",
        "dry run": f"dry run, nothing written ({k}{kept})",
        "rejected": "rejected in review: nothing written"
        + (f"; {outcome['previous_month']} stays current" if outcome.get("previous_month") else ""),
    }.get(outcome["outcome"], f"{outcome['outcome']} ({k})")
    approved = " Approved in review." if outcome.get("approval") == "Approve" else ""
    return f"**{outcome['month']}**: {what}.{approved} [Report](/segments/runs/{report_path})"


def write_segments(run: RunArtifacts) -> dict:
    """Write the month's SegmentIDs, segment profiles and run record (``adapters.writeback``); nothing
    for a dry run. Returns the rows written, the model version, whether it was a dry run and ``rerun``:
    later months aligned to this month's old SegmentIDs (only with ``overwrite_history``; without it
    such a write raises ``writeback.HistoryConflict`` and writes nothing)."""
    from include.segmentation.adapters.writeback import months_to_rerun, run_record, segment_frame
    from include.segmentation.adapters.writeback import write_segments as write

    metrics, segments = read_json(run.metrics), read_parquet(run.segments)
    record = run_record(
        run.run_id,
        run.config,
        run.month,
        metrics,
        segments,
        read_parquet(run.excluded),
        read_json(run.quality),
        run.derived_features,
    )
    result = {"rows_written": 0, "model_version": record.model_version, "dry_run": run.dry_run, "rerun": []}
    if run.dry_run:
        log.info("dry run: %d segment rows for %s computed, nothing written", len(segments), run.month)
        return result
    previous_month = pd.Period(metrics["previous_month"], "M") if metrics["previous_month"] else None
    columns = ["market_key", "segment_id", "previous_segment_id"]
    w = run.config.warehouse
    with connect(w) as conn:
        if run.overwrite_history and table_exists(conn, w, w.market_segment_table):
            stale = months_to_rerun(conn, w, segment_frame(segments, run.month, record), run.month)
            result["rerun"] = [str(m) for m in stale]
        result["rows_written"] = write(
            conn,
            w,
            segments[columns],
            run.month,
            record,
            previous_month,
            read_parquet(run.profiles),
            overwrite_history=run.overwrite_history,
            features=run.config.static_features,
        )
    return result


#: The steps after ``start_run``, in the order ``run_month`` (and the DAG) runs them.
STEPS = (
    check_warehouse,
    extract_static_features,
    build_sequences,
    check_data_quality,
    prepare_inputs,
    read_previous,
    train_autoencoder,
    embed_markets,
    cluster_markets,
    align_segments,
    profile_segments,
    build_report,
    decide_approval,
    write_segments,
)


def run_month(
    config: SegmentationConfig,
    month: pd.Period,
    run_id: str,
    dry_run: bool = False,
    fresh: bool = False,
    info: dict[str, Any] | None = None,
) -> dict:
    """Every step for one month in this process, as the DAG runs them (for notebooks, benchmarks and tests).

    ``fresh``: as the ``force_retrain`` Param (no warm start of the model, k or centres); ``info``:
    more for ``run.json`` (Params, times). ``decide_approval`` runs and records its decision, but no
    one is asked here: the month is written (the DAG's ``approve_segments`` is the gate). Returns each
    step's result by name, plus ``folder``: the run's artifact folder. Raises what the steps raise.
    """
    run = start_run(config, month, run_id, {"dry_run": dry_run, "fresh": fresh, **(info or {})})
    results: dict[str, Any] = {"folder": str(run.folder)}
    for step in STEPS:
        results[step.__name__] = step(run)
    return results
