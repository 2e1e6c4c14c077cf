"""The data-quality gate: each check on constructed data, each policy, and the warehouse counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.segmentation import pipeline
from include.segmentation.artifacts import read_json, read_parquet
from include.segmentation.clustering import STATIC_FEATURES
from include.segmentation.config import QualityConfig, SegmentationConfig
from include.segmentation.demo_data import load_star, synthetic_star
from include.segmentation.emulator import connection_json
from include.segmentation.quality import CHECKS as CHECKS_TEXT
from include.segmentation.quality import Finding, apply_policies, market_findings

MONTH = pd.Period("2013-12", "M")


def _static(keys, **overrides):
    frame = pd.DataFrame({"market_key": keys, "n_known_customers": 5})
    for name in STATIC_FEATURES:
        frame[name] = 0.5
    for column, values in overrides.items():
        frame[column] = values
    return frame


def test_market_checks_flag_exactly_the_markets_at_fault():
    months = 12
    revenue = np.tile(np.linspace(100, 200, months), (6, 1))
    revenue[1, 8] = -30.0  # "NEG": a month of net returns in the window (the last 6 months)
    revenue[0, 2] = -30.0  # "OK": returns before the window do not count
    revenue[2] = 80.0  # "FLAT": the same revenue every month
    revenue[3, :-2] = 0.0  # "NEW": sales in the last 2 months only
    active = revenue != 0
    markets = np.array(["OK", "NEG", "FLAT", "NEW", "NOSTATIC", "NAN"], dtype=object)
    static = _static(
        ["OK", "NEG", "FLAT", "NEW", "NAN", "NOSEQ", "STRANGERS"],
        avg_ltv=[1.0, 1.0, 1.0, 1.0, np.nan, 1.0, 1.0],
        n_known_customers=[5, 5, 5, 5, 5, 5, 0],
    )
    found = {f.check: f.markets for f in market_findings(static, markets, revenue, active, 6, 3)}
    assert found == {
        "empty_month": (),  # the run's month has sales
        "negative_months": ("NEG",),
        "constant_series": ("FLAT",),
        "inactive": ("NEW",),
        "no_static": ("NOSTATIC",),
        "no_sequence": ("NOSEQ", "STRANGERS"),
        "unknown_customers": ("STRANGERS",),
        "missing_static": ("NAN",),
    }


def test_policies_fail_exclude_or_warn():
    findings = [
        Finding("duplicate_lines", 4, "fact lines", ("A", "B")),
        Finding("inactive", 1, "markets", ("C",)),
        Finding("negative_months", 2, "markets", ("A", "D")),
        Finding("constant_series", 0, "markets"),
    ]
    report = apply_policies(findings, QualityConfig())
    assert report.failures == [
        "duplicate_lines: 4 fact lines in 2 market(s), e.g. 'A', 'B': "
        "fact lines sharing their line key with another line"
    ]
    assert report.excluded.to_dict("records") == [
        {"market_key": "C", "check": "inactive", "reason": CHECKS_TEXT["inactive"]}
    ]
    assert report.warnings == [
        f"negative_months: 2 market(s), e.g. 'A', 'D': {CHECKS_TEXT['negative_months']}",
        f"inactive: 1 market(s), e.g. 'C': {CHECKS_TEXT['inactive']}; excluded",
    ]
    assert report.results["constant_series"] == {
        "policy": "warn",
        "count": 0,
        "unit": "markets",
        "n_markets": 0,
        "examples": [],
    }

    lenient = apply_policies(findings, QualityConfig(duplicate_lines="exclude", negative_months="fail"))
    assert lenient.excluded_markets == {"A", "B", "C"}
    assert [f.split(":")[0] for f in lenient.failures] == ["negative_months"]
    # "exclude" cannot drop lines that belong to no market: the run fails instead
    orphan = apply_policies([Finding("duplicate_lines", 3, "fact lines")], QualityConfig(duplicate_lines="exclude"))
    assert orphan.failures == ["duplicate_lines: 3 fact lines: fact lines sharing their line key with another line"]


def test_policies_are_validated_per_check():
    with pytest.raises(ValueError, match="null_keys"):
        QualityConfig(null_keys="exclude")  # a NULL market key names no market to exclude
    with pytest.raises(ValueError, match="missing_static"):
        QualityConfig(missing_static="warn")  # NaN features cannot be clustered
    with pytest.raises(ValueError, match="loyalty_values"):
        QualityConfig(loyalty_values=("Gold", " "))


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    """A synthetic star with one planted fault of each warehouse-side kind, in its own market."""
    import fakesnow
    import snowflake.connector

    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    star = synthetic_star(n_markets=8, start="2012-01", end="2013-12", seed=3)
    fact, customer = star["fact_sale"].copy(), star["customer"].copy()
    keys = sorted(fact["MARKET_KEY"].unique())
    in_window = fact["ORDER_DATE"] >= "2013-07-01"
    # keys[0]: two lines loaded twice
    dup = fact[(fact["MARKET_KEY"] == keys[0]) & in_window].head(2)
    # keys[1]: a customer whose status is outside the set; keys[2]: one with a negative lifetime value
    odd = fact.loc[(fact["MARKET_KEY"] == keys[1]) & in_window, "CUSTOMER_KEY"].iloc[0]
    neg = fact.loc[(fact["MARKET_KEY"] == keys[2]) & in_window, "CUSTOMER_KEY"].iloc[0]
    customer.loc[customer["CUSTOMER_KEY"] == odd, "LOYALTY_STATUS"] = "Diamond"
    customer.loc[customer["CUSTOMER_KEY"] == neg, "LIFETIME_VALUE"] = -5.0
    # keys[3]: a line without a product; and one line dated 2031 (beyond the calendar)
    fact.loc[fact[(fact["MARKET_KEY"] == keys[3]) & in_window].index[0], "PRODUCT_KEY"] = None
    future = fact.iloc[[0]].assign(ORDER_DATE=pd.Timestamp("2031-12-05"), SALES_ORDER_NUMBER="SO-FUTURE")
    star["fact_sale"] = pd.concat([fact, dup, future], ignore_index=True)
    star["customer"] = customer
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        load_star(conn, star, SegmentationConfig().warehouse)
        yield {"keys": keys, "odd": odd, "neg": neg, "tmp": tmp_path}


def _config(tmp, **quality):
    return SegmentationConfig.model_validate(
        {
            "artifacts_dir": str(tmp),
            "sequences": {"seq_len": 6, "history_months": 24},
            "model": {"epochs": 1, "min_steps": 5, "hidden_dim": 8, "cpu_threads": 1},
            "quality": quality,
        }
    )


def test_warehouse_checks_fail_the_run_with_names_and_counts(warehouse):
    keys, config = warehouse["keys"], _config(warehouse["tmp"])
    static = pipeline.extract_static_features(config, MONTH)
    seqs = pipeline.build_sequences(config, MONTH)
    with pytest.raises(ValueError, match="data-quality checks failed") as err:
        pipeline.check_data_quality(config, MONTH, static["path"], seqs["path"])
    message = str(err.value)
    assert message.startswith("data-quality checks failed for 2013-12: ")
    assert f"null_keys: 1 fact lines in 1 market(s), e.g. '{keys[3]}'" in message
    assert f"duplicate_lines: 4 fact lines in 1 market(s), e.g. '{keys[0]}'" in message
    quality = read_json(pipeline.month_dir(config, MONTH) / "quality.json")
    assert quality["checks"]["undated"]["count"] == 1  # warned, recorded
    assert quality["checks"]["unknown_loyalty"] == {
        "policy": "exclude",
        "count": 1,
        "unit": "customers",
        "n_markets": 1,
        "examples": [keys[1]],
    }
    assert quality["checks"]["bad_lifetime_value"]["examples"] == [keys[2]]
    assert any(w.startswith("undated: 1 fact lines (latest 2031-12-05") for w in quality["warnings"])


def test_excluding_policies_drop_the_markets_and_the_run_goes_on(warehouse):
    keys = warehouse["keys"]
    config = _config(warehouse["tmp"], null_keys="warn", duplicate_lines="exclude")
    static = pipeline.extract_static_features(config, MONTH)
    seqs = pipeline.build_sequences(config, MONTH)
    checked = pipeline.check_data_quality(config, MONTH, static["path"], seqs["path"])
    excluded = read_parquet(checked["excluded_path"]).groupby("market_key")["check"].agg(sorted).to_dict()
    assert excluded == {keys[0]: ["duplicate_lines"], keys[1]: ["unknown_loyalty"], keys[2]: ["bad_lifetime_value"]}
    assert checked["n_markets"] == 5
    assert checked["flagged"] == {
        "null_keys": 1,
        "undated": 1,
        "duplicate_lines": 4,
        "unknown_loyalty": 1,
        "bad_lifetime_value": 1,
    }


def test_too_few_markets_for_k_fails_before_training(warehouse):
    config = _config(warehouse["tmp"], null_keys="warn", duplicate_lines="exclude").with_overrides(n_clusters=5)
    static = pipeline.extract_static_features(config, MONTH)
    seqs = pipeline.build_sequences(config, MONTH)
    with pytest.raises(ValueError, match=r"5 market\(s\) left for 2013-12 .* into 5\+ segments needs at least 6"):
        pipeline.check_data_quality(config, MONTH, static["path"], seqs["path"])
    assert not (pipeline.month_dir(config, MONTH) / "inputs.npz").exists()
