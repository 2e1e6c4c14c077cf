"""The DAG's steps as plain functions, in-process on the emulator, through the Airflow connection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.segmentation import steps as pipeline
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import read_json, read_npz, read_parquet
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.demo_data import synthetic_star

MONTH = pd.Period("2013-12", "M")


@pytest.fixture(params=["local", "object-storage"])
def config(request, tmp_path, emulated_warehouse):
    # sales through January 2014: the test runs December, then January (lines after a run's month are never read)
    star = synthetic_star(n_markets=12, start="2012-01", end="2014-01", seed=5)
    # a market whose only sale is long before the window: monthly history but no static features
    old = (
        star["fact_sale"]
        .iloc[[0]]
        .assign(MARKET_KEY="DE-OLD", ORDER_DATE=pd.Timestamp("2012-02-03"), SALES_ORDER_NUMBER="SO-OLD")
    )
    star["fact_sale"] = pd.concat([star["fact_sale"], old], ignore_index=True)
    # a market that opened in the window's last month: too few active months
    new = (
        star["fact_sale"]
        .iloc[[1]]
        .assign(MARKET_KEY="DE-NEW", ORDER_DATE=pd.Timestamp("2013-12-15"), SALES_ORDER_NUMBER="SO-NEW")
    )
    star["fact_sale"] = pd.concat([star["fact_sale"], new], ignore_index=True)
    cfg = SegmentationConfig.model_validate(
        {
            "artifacts_dir": str(tmp_path),
            "sequences": {"seq_len": 6, "history_months": 24},
            "model": {"epochs": 1, "min_steps": 40, "hidden_dim": 16, "cpu_threads": 1},
            "clustering": {"k_max": 6},
        }
    )
    emulated_warehouse(star)
    return cfg


def test_steps_end_to_end(config):
    run = pipeline.start_run(config, MONTH, "run-1", {"dry_run": True, "rerun": []})
    static = pipeline.extract_static_features(run)
    assert static["n_markets"] == 13  # 12 synthetic + DE-NEW (DE-OLD sold nothing in the window)
    seqs = pipeline.build_sequences(run)
    assert seqs["n_markets"] == 14  # every market with sales in the 24 months of history
    assert read_npz(run.sequences)["features"].shape == (14, 24, 4)
    checked = pipeline.check_data_quality(run)
    excluded = read_parquet(run.excluded).groupby("market_key")["check"].agg(sorted).to_dict()
    assert excluded == {"DE-NEW": ["inactive", "thin"], "DE-OLD": ["inactive", "no_static", "thin"]}
    assert checked["flagged"] == {"inactive": 2, "no_static": 1, "thin": 2}
    assert checked["n_excluded"] == 2
    quality = read_json(run.quality)
    assert quality["checks"]["inactive"] == {
        "policy": "exclude",
        "count": 2,
        "unit": "markets",
        "n_markets": 2,
        "examples": ["DE-NEW", "DE-OLD"],
    }
    assert checked["n_markets"] == 12
    inputs = pipeline.prepare_inputs(run)
    data = read_npz(run.inputs)
    assert data["latest"].shape == (12, 6, 4)
    assert data["latest"].dtype == np.float32
    # every market had 24 months of sales; one market of 12 (validation_share 0.1) is held out for early stopping
    assert data["train"].shape[0] == inputs["n_train_windows"] == 11 * 19
    assert data["valid"].shape == (inputs["n_valid_windows"], 6, 4) == (19, 6, 4)
    assert pipeline.read_previous(run) == {"previous_month": None, "previous_run_id": None}

    model = pipeline.train_autoencoder(run)
    assert model["device"] == "cpu"
    assert model["epochs"] >= 1
    again = pipeline.train_autoencoder(run)
    assert again == model  # reused: same data, settings and seed
    stored = read_json(run.model)
    assert run.model_file(stored["fingerprint"]).exists()

    emb = pipeline.embed_markets(run)
    assert (emb["n_markets"], emb["embedding_dim"]) == (12, 32)
    clusters = pipeline.cluster_markets(run)
    assert 2 <= clusters["n_clusters"] <= 6
    aligned = pipeline.align_segments(run)
    pipeline.profile_segments(run)
    profiles = read_parquet(run.profiles)
    segments = read_parquet(run.segments)
    assert sorted(profiles["segment_id"]) == sorted(segments["segment_id"].unique())
    assert profiles["n_markets"].sum() == 12
    assert profiles["description"].str.len().gt(20).all()
    assert read_json(run.metrics)["k_curve"]
    assert str(run.static).startswith("file:///" if not config.artifacts_dir.startswith("memory") else "memory://")

    dry = pipeline.write_segments(run)
    assert dry == {"rows_written": 0, "model_version": "lstm_hybrid_v2.0_20131231", "dry_run": True, "rerun": []}
    assert _segment_table_rows(config) is None  # a dry run does not even create the table
    real = pipeline.start_run(config, MONTH, "run-1-real")
    for step in pipeline.STEPS:
        result = step(real)
    assert result == {"rows_written": 12, "model_version": "lstm_hybrid_v2.0_20131231", "dry_run": False, "rerun": []}
    assert _segment_table_rows(config) == 12
    assert _segment_table_rows(config, config.warehouse.profile_table) == len(profiles)
    assert aligned == {"stability": None, "previous_month": None}  # the first month written
    # the real run reused the dry run's stored model: same windows, settings and seed
    assert read_json(real.model)["fingerprint"] == stored["fingerprint"]

    # the month after: SegmentIDs continue December's wherever clusters share markets
    january = pipeline.run_month(config, MONTH + 1, run_id="run-2")
    clusters2 = january["cluster_markets"]
    assert january["align_segments"]["previous_month"] == "2013-12"
    # continuity: the encoder continued from December's model, k and centres from December's segments
    assert january["read_previous"] == {"previous_month": "2013-12", "previous_run_id": "run-1-real"}
    assert january["train_autoencoder"]["warm_start_from"] == "2013-12"
    jan_run = RunArtifacts.open(january["folder"])
    assert read_json(jan_run.model)["warm_start_from"] == "2013-12"
    assert clusters2["previous_k"] == clusters["n_clusters"]
    assert clusters2["warm_start"] == (clusters2["n_clusters"] == clusters["n_clusters"])
    assert clusters2["k_reason"]
    record = _run_record(config, "run-2")
    assert record["K_REASON"] == clusters2["k_reason"]
    assert record["TRAINING"].endswith("warm start from 2013-12")
    jan = read_parquet(jan_run.segments).set_index("market_key")
    dec = read_parquet(real.segments).set_index("market_key")
    shared = jan.index.intersection(dec.index)
    pd.testing.assert_series_equal(
        jan.loc[shared, "previous_segment_id"], dec.loc[shared, "segment_id"], check_names=False, check_dtype=False
    )
    assert january["align_segments"]["stability"] == pytest.approx(
        (jan.loc[shared, "segment_id"] == dec.loc[shared, "segment_id"]).mean()
    )
    # ids of December's segments that continue are reused; any other id is new (above December's maximum)
    assert set(jan["segment_id"]) - set(dec["segment_id"]) <= set(range(int(dec["segment_id"].max()) + 1, 60))
    # force_retrain: start fresh (a dry run, in a folder of its own)
    fresh = pipeline.run_month(config, MONTH + 1, run_id="run-3", dry_run=True, fresh=True)
    assert fresh["folder"] != january["folder"]
    assert fresh["train_autoencoder"]["warm_start_from"] is None
    assert fresh["cluster_markets"]["previous_k"] is None  # k and centres chosen afresh
    assert fresh["align_segments"]["previous_month"] == "2013-12"  # ids still matched to December's
    # the published January is untouched by the dry run
    assert read_parquet(jan_run.segments).equals(jan.reset_index())


def _run_record(config, run_id):
    from include.segmentation.adapters.warehouse import connect, query_frame

    with connect(config.warehouse) as conn:
        frame = query_frame(conn, "SELECT * FROM SEGMENTATION_RUN WHERE RUN_ID = %(run_id)s", {"run_id": run_id})
    frame.columns = [c.upper() for c in frame.columns]
    return frame.iloc[0]


def _segment_table_rows(config, table="MARKET_SEGMENT"):
    from include.segmentation.adapters.warehouse import connect

    with connect(config.warehouse) as conn:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = %s", (table,))
        if cur.fetchone()[0] == 0:
            return None
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        return cur.fetchone()[0]


def test_month_seed_differs_by_month_and_is_stable():
    config = SegmentationConfig()
    assert pipeline.month_seed(config, MONTH) == pipeline.month_seed(config, pd.Period("2013-12", "M"))
    assert pipeline.month_seed(config, MONTH) != pipeline.month_seed(config, MONTH - 1)


def test_unknown_customers_and_duplicate_markets_are_named(tmp_path, emulated_warehouse, tiny_star):
    cfg = SegmentationConfig.model_validate(
        {
            "artifacts_dir": str(tmp_path),
            "sequences": {"seq_len": 6, "history_months": 6, "min_active_months": 1},
            "quality": {"thin_min_lines": 0},  # the tiny star has 1-3 lines per market
        }
    )
    star = dict(tiny_star)
    stranger = (
        tiny_star["fact_sale"].iloc[[3]].assign(MARKET_KEY="C", CUSTOMER_KEY=99, SALES_ORDER_NUMBER="SO-C")
    )  # not in DIM_CUSTOMER
    star["fact_sale"] = pd.concat([tiny_star["fact_sale"], stranger], ignore_index=True)
    conn = emulated_warehouse(star)
    run = pipeline.start_run(cfg, MONTH, "run-1")
    pipeline.extract_static_features(run)
    pipeline.build_sequences(run)
    with pytest.raises(ValueError, match=r"2 market\(s\) left for 2013-12 .* needs at least 3"):
        pipeline.check_data_quality(run)
    excluded = read_parquet(run.excluded)
    assert excluded.groupby("market_key")["check"].agg(sorted).to_dict() == {
        "C": ["missing_static", "unknown_customers"]
    }
    conn.cursor().execute("INSERT INTO DIM_TERRITORY VALUES ('A', 'Alpha again', 'X', 'Europe')")
    with pytest.raises(ValueError, match="market 'A' has more than one row in DIM_TERRITORY"):
        pipeline.extract_static_features(run)
