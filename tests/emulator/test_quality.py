"""The data-quality gate: each check on constructed data, each policy, and the warehouse counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.segmentation import steps as pipeline
from include.segmentation.adapters.storage import read_json, read_npz, read_parquet
from include.segmentation.config import QualityConfig, SegmentationConfig
from include.segmentation.core.features import STATIC_FEATURES
from include.segmentation.core.quality import CHECKS as CHECKS_TEXT
from include.segmentation.core.quality import Finding, apply_policies, market_findings
from include.segmentation.local.demo_data import synthetic_star

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
        "thin": (),  # no order lines given and no minimum: not checked
        "no_static": ("NOSTATIC",),
        "no_sequence": ("NOSEQ", "STRANGERS"),
        "unknown_customers": ("STRANGERS",),
        "missing_static": ("NAN",),
        "fraction_range": (),  # no fraction features named: not checked
    }


def test_a_window_that_starts_before_the_data_says_so():
    """Data from 2016-01, a 12-month window ending 2016-06: 6 window months precede the first sale."""
    months = 24  # the history grid, ending at the run's month 2016-06
    revenue = np.zeros((3, months))
    revenue[:, -6:] = 100.0  # every market sells from 2016-01 only
    revenue[2, -6:-1] = 0.0  # "LATE": only in 2016-06
    markets = np.array(["A", "B", "LATE"], dtype=object)
    found = market_findings(_static(list(markets)), markets, revenue, revenue > 0, 12, 6, month=pd.Period("2016-06"))
    inactive = next(f for f in found if f.check == "inactive")
    assert inactive.markets == ("LATE",)
    assert inactive.detail.startswith(
        "6 of the 12 window months (2015-07 to 2015-12) precede the data's first sale in 2016-01"
    )
    assert inactive.reasons == {"LATE": "sales in 1 of the 12 window months (at least 6 needed)"}
    report = apply_policies(found, QualityConfig())
    assert report.excluded.to_dict("records") == [
        {"market_key": "LATE", "check": "inactive", "reason": "sales in 1 of the 12 window months (at least 6 needed)"}
    ]
    # A window inside the data: no such remark.
    revenue[:, :] = 100.0
    found = market_findings(_static(list(markets)), markets, revenue, revenue > 0, 12, 13, month=pd.Period("2016-06"))
    assert next(f for f in found if f.check == "inactive").detail == ""


def _thin_data():
    """Four markets over 12 months: order lines per month and customers in the window."""
    markets = np.array(["BIG", "THIN", "FEW", "NOSTATIC"], dtype=object)
    n_lines = np.zeros((4, 12))
    n_lines[0] = 40.0  # 480 lines
    n_lines[1, [1, 5, 9]] = 2.0  # 6 lines in the year, in 3 months
    n_lines[2] = 10.0  # 120 lines, but 2 customers
    n_lines[3, -4:] = 1.0  # 4 lines, no static features: its customers are unknown
    revenue = n_lines * 50.0
    static = _static(["BIG", "THIN", "FEW"], n_customers=[60, 2, 2])
    return static, markets, revenue, n_lines


def test_thin_markets_are_flagged_with_their_numbers():
    static, markets, revenue, n_lines = _thin_data()

    def thin(**kwargs):
        found = market_findings(static, markets, revenue, revenue > 0, 12, 3, n_lines=n_lines, **kwargs)
        return next(f for f in found if f.check == "thin")

    both = thin(min_lines=10, min_customers=5)
    assert both.markets == ("FEW", "NOSTATIC", "THIN")
    assert both.count == 3
    assert both.detail == (
        "fewer than 10 order lines or 5 customers in the 12-month window: "
        "'FEW' 120 lines, 2 customers; 'NOSTATIC' 4 lines, customers unknown; 'THIN' 6 lines, 2 customers"
    )
    assert both.reasons["THIN"] == (
        "6 order lines, 2 customers in the 12-month window (at least 10 order lines and 5 customers needed)"
    )
    # order lines only: a market of two large customers is not thin; the window is the last seq_len months
    lines_only = thin(min_lines=10)
    assert lines_only.markets == ("NOSTATIC", "THIN")
    assert lines_only.detail.startswith("fewer than 10 order lines in the 12-month window: 'NOSTATIC' 4 lines")
    short = market_findings(static, markets, revenue, revenue > 0, 6, 3, n_lines=n_lines, min_lines=10)
    assert next(f for f in short if f.check == "thin").markets == ("NOSTATIC", "THIN")  # THIN: 2 lines in 6 months
    assert thin(min_customers=5).markets == ("FEW", "THIN")  # NOSTATIC's customers are unknown: not counted
    # thresholds 0 (and no order lines given) turn the check off
    assert thin(min_lines=0, min_customers=0) == Finding("thin", 0, "markets")
    no_lines = market_findings(static, markets, revenue, revenue > 0, 12, 3, min_lines=10)
    assert next(f for f in no_lines if f.check == "thin").markets == ()


def test_thin_markets_are_excluded_by_default_with_the_numbers_in_the_message():
    static, markets, revenue, n_lines = _thin_data()
    config = QualityConfig()
    assert (config.thin, config.thin_min_lines, config.thin_min_customers) == ("exclude", 10, 0)
    findings = market_findings(
        static,
        markets,
        revenue,
        revenue > 0,
        12,
        3,
        n_lines=n_lines,
        min_lines=config.thin_min_lines,
        min_customers=config.thin_min_customers,
    )
    report = apply_policies([f for f in findings if f.check == "thin"], config)
    assert report.excluded.to_dict("records") == [
        {
            "market_key": "NOSTATIC",
            "check": "thin",
            "reason": "4 order lines, customers unknown in the 12-month window (at least 10 order lines needed)",
        },
        {
            "market_key": "THIN",
            "check": "thin",
            "reason": "6 order lines, 2 customers in the 12-month window (at least 10 order lines needed)",
        },
    ]
    assert report.warnings == [
        "thin: 2 market(s), e.g. 'NOSTATIC', 'THIN' (fewer than 10 order lines in the 12-month window: "
        f"'NOSTATIC' 4 lines, customers unknown; 'THIN' 6 lines, 2 customers): {CHECKS_TEXT['thin']}; excluded"
    ]
    assert report.results["thin"] == {
        "policy": "exclude",
        "count": 2,
        "unit": "markets",
        "n_markets": 2,
        "examples": ["NOSTATIC", "THIN"],
    }
    strict = apply_policies(findings, QualityConfig(thin="fail"))
    assert [f.split(":")[0] for f in strict.failures] == ["thin"]
    with pytest.raises(ValueError, match="thin_min_lines"):
        QualityConfig(thin_min_lines=-1)


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
def warehouse(tmp_path, emulated_warehouse):
    """A synthetic star with one planted fault of each warehouse-side kind, in its own market."""
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
    emulated_warehouse(star)
    return {"keys": keys, "odd": odd, "neg": neg, "tmp": tmp_path}


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
    run = pipeline.start_run(config, MONTH, "test")
    pipeline.extract_static_features(run)
    pipeline.build_sequences(run)
    with pytest.raises(ValueError, match="data-quality checks failed") as err:
        pipeline.check_data_quality(run)
    message = str(err.value)
    assert message.startswith("data-quality checks failed for 2013-12: ")
    assert f"null_keys: 1 fact lines in 1 market(s), e.g. '{keys[3]}'" in message
    assert f"duplicate_lines: 4 fact lines in 1 market(s), e.g. '{keys[0]}'" in message
    quality = read_json(run.quality)
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
    run = pipeline.start_run(config, MONTH, "test")
    pipeline.extract_static_features(run)
    pipeline.build_sequences(run)
    checked = pipeline.check_data_quality(run)
    excluded = read_parquet(run.excluded).groupby("market_key")["check"].agg(sorted).to_dict()
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
    run = pipeline.start_run(config, MONTH, "test")
    pipeline.extract_static_features(run)
    pipeline.build_sequences(run)
    with pytest.raises(ValueError, match=r"5 market\(s\) left for 2013-12 .* into 5\+ segments needs at least 6"):
        pipeline.check_data_quality(run)
    assert not run.inputs.exists()


def test_a_thin_market_is_excluded_by_the_gate_with_its_numbers(tmp_path, emulated_warehouse):
    """6 order lines in 3 months of the window: active enough, but too thin to describe or to segment."""
    star = synthetic_star(n_markets=6, start="2012-01", end="2013-12", seed=3)
    fact = star["fact_sale"]
    donor = fact[fact["MARKET_KEY"] == fact["MARKET_KEY"].min()]
    lines = pd.concat([donor[donor["ORDER_DATE"].dt.to_period("M") == f"2013-{m}"].head(2) for m in (8, 10, 12)])
    lines = lines.assign(MARKET_KEY="XX-THIN", SALES_ORDER_NUMBER=lines["SALES_ORDER_NUMBER"] + "/thin")
    star["fact_sale"] = pd.concat([fact, lines], ignore_index=True)
    star["territory"] = pd.concat(
        [star["territory"], pd.DataFrame([("XX-THIN", "Thin", "XX", "Europe")], columns=star["territory"].columns)],
        ignore_index=True,
    )
    n_customers = lines["CUSTOMER_KEY"].nunique()
    config = _config(tmp_path)
    emulated_warehouse(star)
    run = pipeline.start_run(config, MONTH, "test")
    pipeline.extract_static_features(run)
    pipeline.build_sequences(run)
    checked = pipeline.check_data_quality(run)
    pipeline.prepare_inputs(run)
    data = read_npz(run.sequences)
    row = list(data["markets"]).index("XX-THIN")
    assert data["n_lines"].shape == data["revenue"].shape
    assert data["n_lines"][row, -6:].tolist() == [0, 2, 0, 2, 0, 2]
    assert read_parquet(run.excluded).to_dict("records") == [
        {
            "market_key": "XX-THIN",
            "check": "thin",
            "reason": "6 order lines, 5 customers in the 6-month window (at least 10 order lines needed)",
        }
    ]
    assert checked["n_markets"] == 6
    assert "XX-THIN" not in read_npz(run.inputs)["markets"]
    customers = f"{n_customers} customer{'' if n_customers == 1 else 's'}"
    assert read_json(run.quality)["warnings"] == [
        f"thin: 1 market(s), e.g. 'XX-THIN' (fewer than 10 order lines in the 6-month window: 'XX-THIN' 6 lines, "
        f"{customers}): {CHECKS_TEXT['thin']}; excluded"
    ]


def test_a_fraction_feature_above_one_is_flagged_with_its_largest_value():
    """A margin of 135 % (profit above sales: the profit column holds something else) is bad units, not a segment."""
    keys = ["A", "B", "C"]
    static = _static(keys, margin=[0.2, 1.35, 0.3], avg_ltv=[900.0, 1200.0, 2.5])  # LTV is currency: not checked
    revenue = np.full((3, 6), 100.0)
    found = {
        f.check: f
        for f in market_findings(
            static, np.array(keys), revenue, revenue > 0, 6, 3, fractions=("margin", "platinum_share")
        )
    }
    assert found["fraction_range"].markets == ("B",)
    assert found["fraction_range"].detail == "margin up to 1.35 in 1 market(s)"
    report = apply_policies(list(found.values()), QualityConfig())
    assert set(report.excluded_markets) == {"B"}  # default policy: exclude
    assert "fraction_range" in CHECKS_TEXT
