"""Static features from the configuration: drop the loyalty shares, add margin from a profit column,
weigh it, and keep every month already written readable (``config.static_features``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from include.segmentation import steps as pipeline
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import read_json, read_parquet
from include.segmentation.adapters.warehouse import connect, feature_params, query_frame, render_sql
from include.segmentation.config import SegmentationConfig
from include.segmentation.local import flatfile
from include.segmentation.local.demo_data import load_star
from include.segmentation.local.emulator import connection_json
from tests.retail import HIGH, LOW, retail_file

SMALL = {
    "sequences": {"seq_len": 6, "history_months": 12},
    "model": {"epochs": 1, "min_steps": 20, "hidden_dim": 8, "cpu_threads": 1},
    "clustering": {"k_max": 4},
}
#: No loyalty tiers or lifetime value (a public retail file has neither); margin weighs three features.
MARGIN_FEATURES = [
    {"name": "avg_discount", "template": "discount_rate", "kind": "fraction"},
    {"name": "total_subcategories", "template": "distinct_count", "column": "subcategory", "kind": "count"},
    {
        "name": "margin",
        "template": "line_ratio",
        "column": "profit",
        "denominator": "sales_amount",
        "kind": "fraction",
        "weight": 3,
    },
]


@pytest.fixture
def retail_warehouse(tmp_path, monkeypatch):
    """The retail file loaded with `make load`'s loader into an embedded warehouse on disk."""
    import fakesnow

    monkeypatch.delenv("SEGMENTATION_CONFIG", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    path = tmp_path / "retail.csv"
    flat = retail_file(path)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("market: State\nproduct_line: Category\nsubcategory: Sub-Category\n")
    db = tmp_path / "warehouse"
    assert flatfile.main(["load", str(path), "--mapping", str(mapping), "--db-path", str(db)]) == 0
    with fakesnow.patch(db_path=db):
        yield flat


def _config(tmp_path, **extra) -> SegmentationConfig:
    return SegmentationConfig.model_validate(SMALL | {"artifacts_dir": str(tmp_path / "artifacts")} | extra)


def test_drop_loyalty_add_margin_end_to_end_and_the_old_month_stays_readable(tmp_path, retail_warehouse):
    default = _config(tmp_path)
    margin = _config(tmp_path, static_features=MARGIN_FEATURES, warehouse={"fact_sale": {"profit": "PROFIT"}})
    pipeline.run_month(default, pd.Period("2013-11", "M"), run_id="old-features")
    result = pipeline.run_month(margin, pd.Period("2013-12", "M"), run_id="margin")
    run = RunArtifacts.open(result["folder"])

    static = read_parquet(run.static).set_index("market_key")
    assert list(static.columns[:3]) == ["avg_discount", "total_subcategories", "margin"]
    assert "platinum_share" not in static
    planted = retail_warehouse.groupby("State")["Profit"].sum() / retail_warehouse.groupby("State")["Sales"].sum()
    window = retail_warehouse[retail_warehouse["Order Date"] >= "2013-07-01"]
    in_window = window.groupby("State")["Profit"].sum() / window.groupby("State")["Sales"].sum()
    assert static["margin"].to_numpy() == pytest.approx(in_window.loc[static.index].to_numpy(), abs=1e-6)
    assert set(np.round(planted, 1)) == {0.1, 0.3}

    profiles = read_parquet(run.profiles)
    assert any("margin" in d for d in profiles["description"]), list(profiles["description"])

    with connect(margin.warehouse) as conn:
        features = query_frame(conn, "SELECT * FROM SEGMENT_FEATURE ORDER BY SEGMENT_MONTH, SEGMENT_ID, FEATURE")
        profile_table = query_frame(conn, "SELECT SEGMENT_MONTH, PLATINUM_SHARE FROM SEGMENT_PROFILE")
        record = query_frame(conn, "SELECT SEGMENT_MONTH, FEATURES FROM SEGMENTATION_RUN ORDER BY SEGMENT_MONTH")
    features["month"] = pd.to_datetime(features["segment_month"]).dt.strftime("%Y-%m")
    december = features[features["month"] == "2013-12"]
    november = features[features["month"] == "2013-11"]
    assert set(december.loc[december["statistic"] == "mean", "feature"]) == {
        "avg_discount",
        "total_subcategories",
        "margin",
    }
    assert set(december.loc[december["feature"] == "margin", "kind"]) == {"fraction"}
    assert december.loc[december["feature"] == "margin", "value"].between(LOW - 0.05, HIGH + 0.05).all()
    # the month written with the seed's features is untouched: its rows and profile columns remain
    assert {"platinum_share", "avg_ltv", "total_product_lines"} <= set(november["feature"])
    profile_table["month"] = pd.to_datetime(profile_table["segment_month"]).dt.strftime("%Y-%m")
    assert profile_table.loc[profile_table["month"] == "2013-11", "platinum_share"].notna().all()
    assert profile_table.loc[profile_table["month"] == "2013-12", "platinum_share"].isna().all()
    used = json.loads(record["features"].iloc[-1])
    assert [(f["name"], f["weight"]) for f in used] == [
        ("avg_discount", 1.0),
        ("total_subcategories", 1.0),
        ("margin", 3.0),
    ]


def test_without_margin_the_planted_margin_is_not_a_feature(tmp_path, retail_warehouse):
    result = pipeline.run_month(_config(tmp_path), pd.Period("2013-12", "M"), run_id="default")
    profiles = read_parquet(RunArtifacts.open(result["folder"]).profiles)
    assert "margin" not in profiles
    assert not any("margin" in d for d in profiles["description"])


def _features_used(config) -> dict[str, dict]:
    with connect(config.warehouse) as conn:
        record = query_frame(conn, "SELECT FEATURES FROM SEGMENTATION_RUN")
    return {f["name"]: f for f in json.loads(record["features"].iloc[-1])}


def test_features_on_columns_the_loader_derived_are_flagged_and_not_clustered(tmp_path, retail_warehouse):
    """The file has no loyalty tier and no lifetime value: the loader makes them up from spend and says so."""
    config = _config(tmp_path)
    result = pipeline.run_month(config, pd.Period("2013-12", "M"), run_id="derived")
    run = RunArtifacts.open(result["folder"])
    derived = ["platinum_share", "gold_share", "silver_share", "avg_ltv"]
    assert result["check_warehouse"]["derived_features"] == derived
    contract = read_json(run.contract)
    assert {(d["table"], d["column"]) for d in contract["derived_columns"]} == {
        ("DIM_CUSTOMER", "LOYALTY_STATUS"),
        ("DIM_CUSTOMER", "LIFETIME_VALUE"),
    }
    used = _features_used(config)
    assert [n for n, f in used.items() if f["derived"]] == derived
    assert [n for n, f in used.items() if f["clustered"]] == [
        "avg_discount",
        "total_product_lines",
        "total_subcategories",
    ]
    assert set(read_parquet(run.profiles).columns) >= set(derived)  # still profiled
    report = run.report.read_text()
    assert "avg_ltv (weight 1, DERIVED by the loader: profiled, not clustered)" in report
    # the configuration may say otherwise
    knowingly = _config(tmp_path, cluster_derived_features=True)
    pipeline.run_month(knowingly, pd.Period("2013-12", "M"), run_id="derived-clustered")
    assert all(f["clustered"] for f in _features_used(knowingly).values())


@pytest.mark.parametrize(
    ("feature", "field"),
    [
        ({"name": "x; DROP TABLE FACT_SALE", "template": "discount_rate", "kind": "fraction"}, "name"),
        ({"name": "market_key", "template": "discount_rate", "kind": "fraction"}, "name"),
        (
            {"name": "m", "template": "line_ratio", "column": "PROFIT) OR (1=1", "denominator": "sales_amount"}
            | {"kind": "ratio"},
            "column",
        ),
        ({"name": "m", "template": "line_average", "column": "order_date", "kind": "ratio"}, "column"),
        ({"name": "m", "template": "customer_share", "column": "loyalty_status", "kind": "fraction"}, "value"),
        ({"name": "m", "template": "discount_rate", "column": "discount", "kind": "fraction"}, "column"),
    ],
)
def test_injection_and_bad_definitions_are_refused_naming_the_field(feature, field):
    with pytest.raises(ValidationError, match=rf"(?s)static_features\.0\n.*{field}"):
        SegmentationConfig.model_validate({"static_features": [feature]})


def test_a_feature_on_an_unmapped_profit_column_is_refused():
    with pytest.raises(ValidationError, match="warehouse.fact_sale.profit maps no column"):
        SegmentationConfig.model_validate({"static_features": MARGIN_FEATURES})


def test_a_share_value_is_bound_not_rendered(fake_conn, tiny_star):
    hostile = "Platinum' OR '1'='1"
    config = SegmentationConfig.model_validate(
        {
            "static_features": [
                {"name": "odd", "template": "customer_share", "column": "loyalty_status", "value": hostile}
                | {"kind": "fraction"},
                {"name": "platinum", "template": "customer_share", "column": "loyalty_status", "value": "Platinum"}
                | {"kind": "fraction"},
            ]
        }
    )
    load_star(fake_conn, tiny_star, config.warehouse)
    sql = render_sql("static_features.sql", config.warehouse, features=config.static_features)
    assert hostile not in sql
    window = {"window_start": pd.Timestamp("2013-11-01").date(), "window_end": pd.Timestamp("2014-01-01").date()}
    got = query_frame(fake_conn, sql, window | feature_params(config.static_features)).set_index("market_key")
    assert got["odd"].tolist() == [0.0, 0.0]  # no customer has that literal status
    assert got.loc["A", "platinum"] == 0.5
