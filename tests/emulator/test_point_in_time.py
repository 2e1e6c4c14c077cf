"""No look-ahead: a month computed on the full warehouse equals the same month computed on a copy
of the warehouse truncated after that month (facts that had not happened yet are absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.segmentation import steps as pipeline
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import read_npz, read_parquet
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.demo_data import adventureworks_star, load_star
from include.segmentation.local.emulator import connection_json

MONTH = pd.Period("2013-06", "M")


def _run_month(star: dict, artifacts, monkeypatch) -> dict:
    import fakesnow
    import snowflake.connector

    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    config = SegmentationConfig.model_validate(
        {"artifacts_dir": str(artifacts), "model": {"epochs": 3, "min_steps": 60, "hidden_dim": 32, "cpu_threads": 1}}
    )
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        load_star(conn, star, config.warehouse)
        steps = pipeline.run_month(config, MONTH, run_id="pit", dry_run=True)
    run = RunArtifacts.open(steps["folder"])
    return {
        "static": read_parquet(run.static),
        "sequences": read_npz(run.inputs),
        "embeddings": read_parquet(run.embeddings),
        "segments": read_parquet(run.segments),
        "profiles": read_parquet(run.profiles),
        "clusters": steps["cluster_markets"] | steps["align_segments"],
    }


@pytest.fixture(scope="module")
def star(adventureworks_dir):
    return adventureworks_star(adventureworks_dir)


def test_full_and_truncated_warehouses_give_the_same_month(star, tmp_path, monkeypatch):
    truncated = dict(star)
    truncated["fact_sale"] = star["fact_sale"][star["fact_sale"]["ORDER_DATE"] <= "2013-06-30"]
    assert len(truncated["fact_sale"]) < len(star["fact_sale"])
    full = _run_month(star, tmp_path / "full", monkeypatch)
    cut = _run_month(truncated, tmp_path / "cut", monkeypatch)
    pd.testing.assert_frame_equal(full["static"], cut["static"])
    for key in ("train", "latest", "markets", "scaler_mean", "scaler_std"):
        np.testing.assert_array_equal(full["sequences"][key], cut["sequences"][key])
    pd.testing.assert_frame_equal(full["embeddings"], cut["embeddings"])
    pd.testing.assert_frame_equal(full["segments"], cut["segments"])
    pd.testing.assert_frame_equal(full["profiles"], cut["profiles"], rtol=1e-12)
    # the same segments, so the same figures (up to summation order in the last bit)
    for key, value in full["clusters"].items():
        if isinstance(value, float):
            assert value == pytest.approx(cut["clusters"][key], rel=1e-12), key
        elif not key.endswith("path"):
            assert value == cut["clusters"][key], key
    assert len(full["segments"]) >= 50
