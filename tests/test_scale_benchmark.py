"""Smoke test of benchmarks/scale.py at a tiny size: it completes and prints every stage (no timing asserted)."""

import numpy as np

from benchmarks import scale


def test_the_scale_benchmark_runs_every_stage(capsys):
    results = scale.main(
        [
            "--sizes",
            "120",
            "--sql-max",
            "120",
            "--max-steps",
            "5",
            "--throughput-steps",
            "3",
            "--throughput-markets",
            "120",
            "--dtw-sizes",
            "40",
            "--output",
            "none",
        ]
    )
    out = capsys.readouterr().out
    assert set(results[120]["stages"]) == set(scale.STAGES)
    table = out[out.index("Wall time per stage") :]
    for stage in (*scale.STAGES, "end to end"):
        assert f"\n{stage} " in table, stage
    assert "120 markets" in table
    assert "sql seconds per query: static_features" in out
    assert "Training throughput, 3 steps x 64 windows" in out
    assert "Planted segments (benchmarks.planted, 4 segments), 40 markets" in out
    assert "ours (LSTM-AE hybrid, 5 steps)" in out
    assert "tslearn DTW K-Means" in out or "tslearn not installed: DTW skipped" in out
    assert results[120]["info"]["rows_written"] == 120


def test_generated_frames_look_like_the_warehouse_output():
    monthly, static, markets = scale.generated_frames(50)
    assert list(monthly.columns) == ["market_key", "month_start", "revenue", "quantity", "n_lines", "n_customers"]
    assert monthly["month_start"].dtype == np.dtype("datetime64[us]")
    assert monthly.groupby("market_key").size().max() <= scale.HISTORY
    assert len(static) == len(markets) == 50
    star = scale.synthetic_star(50)
    lines = star["fact_sale"]
    assert lines.groupby(["SALES_ORDER_NUMBER", "SALES_ORDER_LINE"]).size().max() == 1
    per_cell = lines.groupby(["MARKET_KEY", lines["ORDER_DATE"].dt.to_period("M")]).size()
    assert set(per_cell.unique()) <= {1, 2}
