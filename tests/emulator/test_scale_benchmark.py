"""Smoke test of benchmarks/scale.py at a tiny size: it completes and prints every step (no timing asserted)."""

import numpy as np

from benchmarks import scale, synthetic


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
    assert tuple(step.__name__ for step in scale.steps.STEPS) == scale.STAGES  # the DAG's steps, in order
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
    info = results[120]["info"]
    assert info["rows_written"] == info["eligible"] == 120  # every market segmented and written


def test_generated_answers_look_like_the_warehouse_output():
    answers = synthetic.generated_answers(50)
    monthly = answers["monthly_sales"]
    assert list(monthly.columns) == ["market_key", "month_start", "revenue", "quantity", "n_lines", "n_customers"]
    assert monthly["month_start"].dtype == np.dtype("datetime64[us]")
    assert monthly.groupby("market_key").size().max() <= synthetic.HISTORY
    assert len(answers["static_features"]) == len(answers["markets"]) == 50
    star = synthetic.synthetic_star(50)
    lines = star["fact_sale"]
    assert lines.groupby(["SALES_ORDER_NUMBER", "SALES_ORDER_LINE"]).size().max() == 1
    per_cell = lines.groupby(["MARKET_KEY", lines["ORDER_DATE"].dt.to_period("M")]).size()
    assert set(per_cell.unique()) <= {1, 2}


def test_generated_answers_have_the_columns_of_the_steps_queries(emulated_warehouse, tmp_path, monkeypatch):
    """The steps' own source queries on the loaded star return the columns the generated answers have."""
    emulated_warehouse(synthetic.synthetic_star(50))
    source, columns = synthetic.Warehouse(), {}

    def recording(conn, sql, params=None):
        frame = query_frame(conn, sql, params)
        columns[source.names[sql]] = list(frame.columns)
        return frame

    query_frame = synthetic.query_frame
    monkeypatch.setattr(synthetic, "query_frame", recording)
    with source.patched():
        run = synthetic.steps.start_run(scale.bench_config(tmp_path, 1, 5), synthetic.MONTH, "columns")
        synthetic.run_steps(run, until="check_data_quality")
    answers = synthetic.generated_answers(50)
    assert set(synthetic.SOURCE_QUERIES) <= set(columns)
    for name in synthetic.SOURCE_QUERIES:
        assert list(answers[name].columns) == columns[name], name
