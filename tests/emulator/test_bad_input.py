"""A catalogue of bad inputs, each with its specific outcome: a clear error naming the market, column
or parameter, or a documented correct result. The star is the synthetic generator (or the tiny
hand-checkable one) modified case by case, loaded into an in-process emulator; models are tiny.

Every failure must leave what is already stored as it was (the last tests).
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from include.segmentation import steps as pipeline
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import read_json, read_npz, read_parquet
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.demo_data import load_star, synthetic_star
from include.segmentation.local.emulator import connection_json
from include.segmentation.run_context import settings_from_context

MONTH = pd.Period("2013-12", "M")
TINY_MODEL = {"epochs": 1, "min_steps": 10, "hidden_dim": 8, "embedding_dim": 4, "cpu_threads": 1}
RESULT_TABLES = ("MARKET_SEGMENT", "SEGMENT_MIGRATION", "SEGMENT_PROFILE", "SEGMENTATION_RUN")


@pytest.fixture(autouse=True)
def _connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(8765))
    monkeypatch.delenv("SEGMENTATION_CONFIG", raising=False)


def make_config(tmp_path, **sections: dict) -> SegmentationConfig:
    data: dict = {
        "artifacts_dir": str(tmp_path / "artifacts"),
        "sequences": {"seq_len": 6, "history_months": 12},
        "model": dict(TINY_MODEL),
        "clustering": {"k_max": 3},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return SegmentationConfig.model_validate(data)


def make_star(n_markets: int = 6, start: str = "2013-01", end: str = "2013-12") -> dict[str, pd.DataFrame]:
    return synthetic_star(n_markets=n_markets, start=start, end=end, seed=21)


def market_keys(star: dict) -> list[str]:
    return sorted(star["territory"]["MARKET_KEY"])


def copy_lines(lines: pd.DataFrame, market: str) -> pd.DataFrame:
    """``lines`` as another market's own lines (new order numbers, so not duplicates of the originals)."""
    return lines.assign(MARKET_KEY=market, SALES_ORDER_NUMBER=lines["SALES_ORDER_NUMBER"] + f"/{market}")


def run_params(**params: object) -> dict:
    """The task's params as Airflow resolves them: the DAG's defaults, then ``params``."""
    from include.segmentation.params import run_params as dag_params

    return {key: param.value for key, param in dag_params(SegmentationConfig()).items()} | params


def add_lines(star: dict, lines: pd.DataFrame) -> dict:
    star = dict(star)
    star["fact_sale"] = pd.concat([star["fact_sale"], lines], ignore_index=True)
    return star


@contextmanager
def warehouse(star: dict | None, config: SegmentationConfig) -> Generator:
    """An in-process emulator with ``star`` loaded (``None``: nothing at all), for the whole block."""
    import fakesnow
    import snowflake.connector

    with fakesnow.patch():
        conn = snowflake.connector.connect(database="SEGMENTATION", schema="MART")
        if star is not None:
            load_star(conn, star, config.warehouse)
        try:
            yield conn
        finally:
            conn.close()


def new_run(config: SegmentationConfig, month: pd.Period = MONTH, run_id: str = "test") -> RunArtifacts:
    """A run of ``month`` with its own artifact folder (``steps.start_run``)."""
    return pipeline.start_run(config, month, run_id)


def until_quality(config: SegmentationConfig, month: pd.Period = MONTH) -> dict:
    """The steps before training: static features, sequences and the data-quality gate."""
    run = new_run(config, month)
    static = pipeline.extract_static_features(run)
    sequences = pipeline.build_sequences(run)
    checked = pipeline.check_data_quality(run)
    inputs = pipeline.prepare_inputs(run)
    return {"run": run, "static": static, "sequences": sequences, "checked": checked, "inputs": inputs}


def segments_written(conn, month: pd.Period = MONTH) -> pd.DataFrame:
    cur = conn.cursor()
    cur.execute(
        "SELECT MARKET_KEY, SEGMENT_ID, RUN_ID FROM MARKET_SEGMENT WHERE SEGMENT_MONTH = %s ORDER BY MARKET_KEY",
        (month.start_time.date(),),
    )
    return pd.DataFrame(cur.fetchall(), columns=["market_key", "segment_id", "run_id"])


def excluded(result: dict) -> dict[str, set[str]]:
    frame = read_parquet(result["run"].excluded)
    return frame.groupby("market_key")["check"].agg(set).to_dict()


# -- the warehouse: empty, missing, too small -----------------------------------------------------


def test_empty_warehouse(tmp_path):
    config = make_config(tmp_path)
    star = {role: frame.iloc[0:0] for role, frame in make_star().items()}
    with warehouse(star, config), pytest.raises(ValueError, match="no sales in FACT_SALE between 2013-07-01 and"):
        pipeline.extract_static_features(new_run(config, MONTH))


def test_warehouse_without_the_star_schema_names_the_table(tmp_path):
    config = make_config(tmp_path)
    with warehouse(None, config), pytest.raises(Exception, match="(?i)FACT_SALE"):
        pipeline.extract_static_features(new_run(config, MONTH))


@pytest.mark.parametrize("n_markets", [1, 2])
def test_too_few_markets_fail_before_training(tmp_path, n_markets):
    config = make_config(tmp_path)
    with (
        warehouse(make_star(n_markets), config),
        pytest.raises(ValueError, match=rf"{n_markets} market\(s\) left for 2013-12 .* needs at least 3"),
    ):
        until_quality(config)
    assert not (tmp_path / "artifacts" / "2013-12" / "model.pt").exists()


def test_n_clusters_above_the_markets_fails_before_training(tmp_path):
    config = make_config(tmp_path, clustering={"n_clusters": 10})
    with (
        warehouse(make_star(6), config),
        pytest.raises(ValueError, match=r"6 market\(s\) left .* clustering into 10\+ segments needs at least 11"),
    ):
        until_quality(config)


def test_k_max_above_the_markets_is_capped(tmp_path):
    config = make_config(tmp_path, clustering={"k_max": 10})
    with warehouse(make_star(4), config) as conn:
        steps = pipeline.run_month(config, MONTH, run_id="cap")
        assert 2 <= steps["cluster_markets"]["n_clusters"] <= 3  # k <= n - 1
        # 4 markets cannot all sit in segments of 2 (4 % of 4, at least 2): the minimum is waived, and said so
        assert steps["cluster_markets"]["k_reason"].endswith("so none is applied")
        assert len(segments_written(conn)) == 4


def test_all_markets_identical_is_refused(tmp_path):
    """Four markets with the very same sales and customers: nothing to segment, said so."""
    config = make_config(tmp_path)
    star = make_star(1)
    key = star["territory"]["MARKET_KEY"].iloc[0]
    star["fact_sale"] = pd.concat([copy_lines(star["fact_sale"], f"{key}-{i}") for i in range(4)], ignore_index=True)
    star["territory"] = pd.concat(
        [star["territory"].assign(MARKET_KEY=f"{key}-{i}", MARKET_NAME=f"Copy {i}") for i in range(4)],
        ignore_index=True,
    )
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match="all 4 markets have identical features: there is nothing to segment"),
    ):
        pipeline.run_month(config, MONTH, run_id="identical")


# -- history: short, gappy, new markets, empty months ---------------------------------------------


def test_one_month_of_history_excludes_every_market_by_name(tmp_path):
    config = make_config(tmp_path)
    star = make_star(start="2013-12", end="2013-12")
    with warehouse(star, config), pytest.raises(ValueError, match="market") as err:
        until_quality(config)
    message = str(err.value)
    assert (
        "the data-quality checks excluded 6 of 6 markets (100%), more than quality.max_excluded_share (50%)" in message
    )
    assert "most excluded by: inactive 6, thin 1" in message


def test_gaps_of_several_months_keep_the_market(tmp_path):
    """Sales Jan-Mar and Oct-Dec only: the empty months are zeros, the market is segmented."""
    config = make_config(tmp_path)
    star = make_star()
    gappy = market_keys(star)[0]
    fact = star["fact_sale"]
    star["fact_sale"] = fact[~((fact["MARKET_KEY"] == gappy) & fact["ORDER_DATE"].dt.month.between(4, 9))]
    with warehouse(star, config) as conn:
        steps = pipeline.run_month(config, MONTH, run_id="gaps")
        assert gappy in set(segments_written(conn)["market_key"])
    data = read_npz(RunArtifacts.open(steps["folder"]).sequences)
    row = list(data["markets"]).index(gappy)
    assert data["active"][row].tolist() == [True] * 3 + [False] * 6 + [True] * 3


def test_a_month_without_any_sales_inside_the_window(tmp_path):
    """No sales anywhere in 2013-10 (a load gap): a zero month for every market, still segmented."""
    config = make_config(tmp_path)
    star = make_star()
    star["fact_sale"] = star["fact_sale"][star["fact_sale"]["ORDER_DATE"].dt.month != 10]
    with warehouse(star, config) as conn:
        steps = pipeline.run_month(config, MONTH, run_id="hole")
        assert len(segments_written(conn)) == 6
    assert not read_npz(RunArtifacts.open(steps["folder"]).sequences)["active"][:, 9].any()


def test_markets_appearing_mid_window(tmp_path):
    """Opened in 2013-10 (3 active months of 6): segmented; opened in 2013-12: excluded as inactive."""
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    late = copy_lines(fact[fact["ORDER_DATE"] >= "2013-10-01"].groupby(fact["ORDER_DATE"].dt.month).head(20), "NEW-OCT")
    newest = copy_lines(fact[fact["ORDER_DATE"] >= "2013-12-01"].iloc[:20], "NEW-DEC")
    star = add_lines(star, pd.concat([late, newest]))
    extra = pd.DataFrame(
        {
            "MARKET_KEY": ["NEW-OCT", "NEW-DEC"],
            "MARKET_NAME": ["Oct", "Dec"],
            "COUNTRY": "DE",
            "TERRITORY_GROUP": "Europe",
        }
    )
    star["territory"] = pd.concat([star["territory"], extra], ignore_index=True)
    with warehouse(star, config) as conn:
        steps = pipeline.run_month(config, MONTH, run_id="new")
        written = set(segments_written(conn)["market_key"])
    assert "NEW-OCT" in written
    assert "NEW-DEC" not in written
    excluded = read_parquet(RunArtifacts.open(steps["folder"]).excluded).set_index("market_key")
    assert excluded.loc["NEW-DEC", "check"] == "inactive"
    # The reason is the market's own count against the threshold, not the name of a config key.
    needed = config.sequences.min_active_months
    assert excluded.loc["NEW-DEC", "reason"] == (
        f"sales in 1 of the {config.sequences.seq_len} window months (at least {needed} needed)"
    )


def test_future_dated_rows_are_ignored(tmp_path):
    """Lines after the run's month (wild values, even beyond the calendar) change nothing: no look-ahead."""
    star = make_star()
    fact = star["fact_sale"]
    future = fact.sample(200, random_state=1).assign(
        SALES_ORDER_NUMBER=lambda f: "F" + f["SALES_ORDER_NUMBER"],
        ORDER_DATE=lambda f: f["ORDER_DATE"] + pd.DateOffset(months=14),  # 2014-03 .. 2015-02
        SALES_AMOUNT=1e9,
        DISCOUNT_PCT=0.9,
    )
    runs = {}
    for name, s in (("clean", star), ("future", add_lines(star, future))):
        config = make_config(tmp_path / name)
        with warehouse(s, config):
            runs[name] = until_quality(config, pd.Period("2013-12", "M"))
    pd.testing.assert_frame_equal(read_parquet(runs["clean"]["run"].static), read_parquet(runs["future"]["run"].static))
    for key in ("train", "latest", "markets", "scaler_mean", "scaler_std"):
        np.testing.assert_array_equal(
            read_npz(runs["clean"]["run"].inputs)[key], read_npz(runs["future"]["run"].inputs)[key]
        )
    # recorded as lines outside the calendar, a warning by default
    quality = read_json(runs["future"]["run"].quality)
    assert quality["checks"]["undated"]["count"] == 200
    assert any(w.startswith("undated: 200 fact lines") for w in quality["warnings"])


def test_rows_after_an_earlier_run_month_are_ignored(tmp_path):
    """Running 2013-09 on a warehouse that holds 2013-10..12 too equals running it on one cut at 2013-09."""
    star = make_star()
    cut = dict(star)
    cut["fact_sale"] = star["fact_sale"][star["fact_sale"]["ORDER_DATE"] < "2013-10-01"]
    runs = {}
    for name, s in (("full", star), ("cut", cut)):
        config = make_config(tmp_path / name)
        with warehouse(s, config):
            runs[name] = until_quality(config, pd.Period("2013-09", "M"))
    pd.testing.assert_frame_equal(read_parquet(runs["full"]["run"].static), read_parquet(runs["cut"]["run"].static))
    np.testing.assert_array_equal(
        read_npz(runs["full"]["run"].inputs)["latest"], read_npz(runs["cut"]["run"].inputs)["latest"]
    )


# -- values: NaN, inf, huge, negative -------------------------------------------------------------


def test_a_market_month_of_null_amounts_names_market_and_month(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[1]
    fact.loc[(fact["MARKET_KEY"] == key) & (fact["ORDER_DATE"].dt.month == 5), "SALES_AMOUNT"] = np.nan
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match=rf"market '{key}' has a non-finite revenue \(nan\) in 2013-05"),
    ):
        pipeline.build_sequences(new_run(config, MONTH))


def test_an_infinite_amount_names_market_and_month(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[2]
    row = fact.index[(fact["MARKET_KEY"] == key) & (fact["ORDER_DATE"].dt.month == 11)][0]
    fact.loc[row, "SALES_AMOUNT"] = np.inf
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match=rf"market '{key}' has a non-finite revenue \(inf\) in 2013-11"),
    ):
        pipeline.build_sequences(new_run(config, MONTH))


def test_a_market_month_of_null_quantities_names_market_and_month(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[3]
    fact["QUANTITY"] = fact["QUANTITY"].astype("Int64")
    fact.loc[(fact["MARKET_KEY"] == key) & (fact["ORDER_DATE"].dt.month == 8), "QUANTITY"] = pd.NA
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match=rf"market '{key}' has a non-finite quantity \(nan\) in 2013-08"),
    ):
        pipeline.build_sequences(new_run(config, MONTH))


def test_huge_but_finite_amounts_are_outliers_and_segmented_when_allowed(tmp_path):
    """Amounts of 1e15 in one market: excluded as outliers by default; with ``outlier_lines: warn``, logs
    keep the model's inputs finite and the market is segmented."""
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[0]
    fact.loc[fact["MARKET_KEY"] == key, "SALES_AMOUNT"] *= 1e12
    config = make_config(tmp_path)
    with warehouse(star, config):
        assert excluded(until_quality(config)) == {key: {"outlier_lines"}}
    config = make_config(tmp_path, quality={"outlier_lines": "warn"})
    with warehouse(star, config) as conn:
        steps = pipeline.run_month(config, MONTH, run_id="huge")
        assert key in set(segments_written(conn)["market_key"])
    assert np.isfinite(read_npz(RunArtifacts.open(steps["folder"]).inputs)["latest"]).all()


def test_a_huge_lifetime_value_excludes_the_market_naming_the_feature(tmp_path):
    """LTVs of 1e200 would overflow the variance: the gate excludes those markets, naming ``avg_ltv``."""
    config = make_config(tmp_path)
    star = make_star()
    star["customer"].loc[star["customer"].index[:3], "LIFETIME_VALUE"] = 1e200
    fact = star["fact_sale"]
    key = fact.loc[fact["CUSTOMER_KEY"].isin(star["customer"]["CUSTOMER_KEY"].iloc[:3]), "MARKET_KEY"].unique()
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {k: {"missing_static"} for k in key}
    quality = read_json(result["run"].quality)
    assert any("(in avg_ltv)" in w for w in quality["warnings"])


def test_a_lifetime_value_that_overflows_the_average_excludes_the_market(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    star["customer"].loc[star["customer"].index[:3], "LIFETIME_VALUE"] = 1.5e308  # AVG() -> inf
    fact = star["fact_sale"]
    key = fact.loc[fact["CUSTOMER_KEY"].isin(star["customer"]["CUSTOMER_KEY"].iloc[:3]), "MARKET_KEY"].unique()
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {k: {"missing_static"} for k in key}


def test_net_negative_months_are_recorded_and_segmented(tmp_path):
    """A month of returns (net negative revenue) is data, not an error: warned, recorded, segmented."""
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[3]
    returns = (fact["MARKET_KEY"] == key) & (fact["ORDER_DATE"].dt.month == 11)
    fact.loc[returns, "SALES_AMOUNT"] *= -1
    with warehouse(star, config) as conn:
        steps = pipeline.run_month(config, MONTH, run_id="returns")
        assert key in set(segments_written(conn)["market_key"])
    quality = read_json(RunArtifacts.open(steps["folder"]).quality)["checks"]["negative_months"]
    assert (quality["policy"], quality["count"], quality["examples"]) == ("warn", 1, [key])
    revenue = read_npz(RunArtifacts.open(steps["folder"]).sequences)["revenue"]
    assert revenue[list(read_npz(RunArtifacts.open(steps["folder"]).sequences)["markets"]).index(key), -2] < 0


def test_a_constant_series_is_flagged_but_kept(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[4]
    lines = fact["MARKET_KEY"] == key
    per_month = fact[lines].groupby(fact["ORDER_DATE"].dt.month)["SALES_AMOUNT"].transform("size")
    fact.loc[lines, "SALES_AMOUNT"] = 1000.0 / per_month  # every month sums to exactly 1000
    with warehouse(star, config):
        result = until_quality(config)
    quality = read_json(result["run"].quality)["checks"]["constant_series"]
    assert (quality["count"], quality["examples"]) == (1, [key])
    assert key in read_npz(result["run"].inputs)["markets"]


# -- keys and dimensions ---------------------------------------------------------------------------


def test_unicode_and_duplicate_market_names(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    keys = {
        k: v
        for k, v in zip(market_keys(star), ["FR-Île", "JP-東京", "RU-Москва", "EG-القاهرة", "X-😀", "Y"], strict=True)
    }
    star["territory"] = star["territory"].assign(
        MARKET_KEY=star["territory"]["MARKET_KEY"].map(keys),
        MARKET_NAME="Zürich",  # every name the same
    )
    star["fact_sale"] = star["fact_sale"].assign(MARKET_KEY=star["fact_sale"]["MARKET_KEY"].map(keys))
    with warehouse(star, config) as conn:
        pipeline.run_month(config, MONTH, run_id="unicode")
        assert sorted(segments_written(conn)["market_key"]) == sorted(keys.values())
        cur = conn.cursor()
        cur.execute("SELECT EXAMPLES FROM SEGMENT_PROFILE")
        assert {e for (examples,) in cur.fetchall() for e in examples.split(", ")} == {"Zürich"}


def test_a_duplicated_market_row_in_the_territory_dimension(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    star["territory"] = pd.concat([star["territory"], star["territory"].iloc[[2]]], ignore_index=True)
    key = star["territory"]["MARKET_KEY"].iloc[2]
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match=f"market '{key}' has more than one row in DIM_TERRITORY"),
    ):
        pipeline.extract_static_features(new_run(config, MONTH))


def test_null_customer_keys_fail_the_run_naming_the_market(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[0]
    fact["CUSTOMER_KEY"] = fact["CUSTOMER_KEY"].astype("Int64")
    fact.loc[fact.index[fact["MARKET_KEY"] == key][:3], "CUSTOMER_KEY"] = pd.NA
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match=rf"null_keys: 3 fact lines in 1 market\(s\), e.g. '{key}'"),
    ):
        until_quality(config)


def test_null_market_keys_are_refused(tmp_path):
    """A user schema without NOT NULL on the market key: lines with a NULL market fail the run."""
    config = make_config(tmp_path)
    star = make_star()
    with warehouse(star, config) as conn:
        cur = conn.cursor()
        cur.execute("ALTER TABLE FACT_SALE ALTER COLUMN MARKET_KEY DROP NOT NULL")
        cur.execute(
            "INSERT INTO FACT_SALE (ORDER_DATE, MARKET_KEY, CUSTOMER_KEY, PRODUCT_KEY, SALES_AMOUNT, DISCOUNT_PCT, "
            "QUANTITY) VALUES ('2013-12-05', NULL, 1, 1, 10.0, 0.0, 1)"
        )
        with pytest.raises(ValueError, match="(?i)NULL market"):
            until_quality(config)


def test_customers_missing_from_the_dimension_exclude_their_market(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[5]
    fact = star["fact_sale"]
    fact.loc[fact["MARKET_KEY"] == key, "CUSTOMER_KEY"] += 1_000_000  # nobody in DIM_CUSTOMER
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {key: {"unknown_customers", "missing_static"}}  # its LTV is NULL too


def test_loyalty_values_outside_the_configured_set_exclude_the_market(tmp_path):
    """'platinum' (lower case) and 'Diamond' are not Platinum: the market is excluded, not miscounted."""
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[1]
    fact, customer = star["fact_sale"], star["customer"]
    buyers = fact.loc[fact["MARKET_KEY"] == key, "CUSTOMER_KEY"].unique()[:2]
    customer.loc[customer["CUSTOMER_KEY"].isin(buyers), "LOYALTY_STATUS"] = ["platinum", "Diamond"]
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {key: {"unknown_loyalty"}}
    quality = read_json(result["run"].quality)["checks"]["unknown_loyalty"]
    assert (quality["count"], quality["examples"]) == (2, [key])


def test_negative_lifetime_value_excludes_the_market(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[2]
    fact, customer = star["fact_sale"], star["customer"]
    buyer = fact.loc[fact["MARKET_KEY"] == key, "CUSTOMER_KEY"].iloc[0]
    customer.loc[customer["CUSTOMER_KEY"] == buyer, "LIFETIME_VALUE"] = -500.0
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {key: {"bad_lifetime_value"}}


def test_a_market_whose_lifetime_values_are_all_null(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[3]
    fact, customer = star["fact_sale"], star["customer"]
    customer.loc[
        customer["CUSTOMER_KEY"].isin(fact.loc[fact["MARKET_KEY"] == key, "CUSTOMER_KEY"]), "LIFETIME_VALUE"
    ] = np.nan
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {key: {"bad_lifetime_value", "missing_static"}}


def test_a_market_whose_discounts_are_all_null(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[4]
    fact = star["fact_sale"]
    fact.loc[fact["MARKET_KEY"] == key, "DISCOUNT_PCT"] = np.nan
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {key: {"missing_static"}}


def test_duplicate_fact_lines_fail_the_run(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[0]
    fact = star["fact_sale"]
    star = add_lines(star, fact[fact["MARKET_KEY"] == key].iloc[:4])  # loaded twice
    with (
        warehouse(star, config),
        pytest.raises(ValueError, match=rf"duplicate_lines: 8 fact lines in 1 market\(s\), e.g. '{key}'"),
    ):
        until_quality(config)


def test_a_market_missing_from_the_territory_dimension_is_segmented_by_key(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    key = market_keys(star)[5]
    star["territory"] = star["territory"][star["territory"]["MARKET_KEY"] != key]
    with warehouse(star, config) as conn:
        pipeline.run_month(config, MONTH, run_id="orphan")
        assert key in set(segments_written(conn)["market_key"])


def test_timezone_aware_order_times_count_in_their_local_month(tmp_path):
    """An order at 23:30 New York time on 31 December (05:30 UTC on 1 January) is a December sale."""
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    key = market_keys(star)[0]
    late = fact[fact["MARKET_KEY"] == key].iloc[[0]].assign(SALES_ORDER_NUMBER="TZ", SALES_AMOUNT=12345.0)
    fact["ORDER_DATE"] = fact["ORDER_DATE"].dt.tz_localize("America/New_York")
    late["ORDER_DATE"] = pd.Timestamp("2013-12-31 23:30", tz="America/New_York")
    star = add_lines(star, late)
    with warehouse(star, config):
        run = new_run(config, MONTH)
        pipeline.build_sequences(run)
    data = read_npz(run.sequences)
    clean = make_star()["fact_sale"]
    december = clean[(clean["MARKET_KEY"] == key) & (clean["ORDER_DATE"] >= "2013-12-01")]["SALES_AMOUNT"].sum()
    assert data["revenue"][list(data["markets"]).index(key), -1] == pytest.approx(december + 12345.0)


def test_month_starts_with_a_utc_offset_keep_their_month():
    """A warehouse whose order dates are TIMESTAMP_TZ returns DATE_TRUNC('MONTH') as local midnight of
    the 1st: 2013-12-01 00:00 +01:00 is December, though it is 30 November in UTC."""
    from include.segmentation.core.sequences import month_range, monthly_grid

    monthly = pd.DataFrame(
        {
            "market_key": ["A", "A"],
            "month_start": [
                pd.Timestamp("2013-11-01", tz="Europe/Paris"),
                pd.Timestamp("2013-12-01", tz="Europe/Paris"),
            ],
            "revenue": [1.0, 2.0],
            "quantity": [1.0, 1.0],
            "n_lines": [1.0, 1.0],
            "n_customers": [1.0, 1.0],
        }
    )
    markets, grid = monthly_grid(monthly, month_range(MONTH, 2))
    assert grid[0, :, 0].tolist() == [1.0, 2.0]


# -- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [5, 25, 0, -1])
def test_seq_len_outside_6_24(seq_len):
    with pytest.raises(ValidationError, match=r"sequences\.seq_len"):
        SegmentationConfig.model_validate({"sequences": {"seq_len": seq_len}})
    with pytest.raises(ValidationError, match="seq_len"):
        SegmentationConfig().with_overrides(seq_len=seq_len)


def test_seq_len_longer_than_the_configured_history():
    config = SegmentationConfig.model_validate({"sequences": {"seq_len": 6, "history_months": 12}})
    with pytest.raises(ValidationError, match=r"history_months \(12\) must be at least seq_len \(18\)"):
        config.with_overrides(seq_len=18)


@pytest.mark.parametrize("bad", ["2013/12", "Dec 2013", "2013-12-01", "13-2013", "2013-1"])
def test_badly_formatted_target_month_names_the_param(bad):
    with pytest.raises(ValueError, match=f"target_month must look like YYYY-MM .* got '{bad}'"):
        settings_from_context({"params": run_params(target_month=bad)})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("2019-13", "target_month '2019-13': the month number 13 is not 01-12"),
        ("2019-00", "target_month '2019-00': the month number 00 is not 01-12"),
        ("2300-01", "target_month '2300-01': the year 2300 is not 1900-2199"),
    ],
)
def test_a_month_of_the_right_shape_says_which_part_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        settings_from_context({"params": run_params(target_month=bad)})


def test_target_month_in_the_future_finds_no_sales(tmp_path):
    config = make_config(tmp_path)
    _, run_month = settings_from_context({"params": run_params(target_month="2099-01")})
    with (
        warehouse(make_star(), config),
        pytest.raises(ValueError, match="no sales in FACT_SALE between 2098-08-01 and 2099-02-01"),
    ):
        pipeline.extract_static_features(new_run(config, run_month.month))


def test_an_empty_target_month_means_the_logical_dates_month_not_the_data_interval():
    # a CLI trigger for 2013-12 years later: Airflow infers the data interval from the trigger time
    from types import SimpleNamespace

    context = {
        "params": run_params(target_month=""),
        "logical_date": pd.Timestamp("2013-12-01", tz="UTC"),
        "data_interval_start": pd.Timestamp("2026-11-01", tz="UTC"),
        "data_interval_end": pd.Timestamp("2026-12-01", tz="UTC"),
        "dag_run": SimpleNamespace(run_after=pd.Timestamp("2026-12-01 22:50", tz="UTC")),
    }
    assert settings_from_context(context)[1].month == MONTH


# -- a failed run changes nothing already stored ---------------------------------------------------


def _stored(conn) -> dict[str, list[tuple]]:
    cur = conn.cursor()
    out = {}
    for table in RESULT_TABLES:
        cur.execute(f"SELECT * FROM {table}")
        out[table] = sorted(tuple(str(v) for v in row) for row in cur.fetchall())
    return out


def test_a_failed_rerun_changes_nothing_already_stored(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    with warehouse(star, config) as conn:
        pipeline.run_month(config, MONTH - 1, run_id="nov")
        pipeline.run_month(config, MONTH, run_id="dec")
        before = _stored(conn)
        assert len(before["MARKET_SEGMENT"]) == 12
        assert len(before["SEGMENTATION_RUN"]) == 2

        # the data is reloaded with duplicated lines: the gate fails the re-run
        fact = star["fact_sale"]
        load_star(conn, add_lines(star, fact.iloc[:5]), config.warehouse)
        with pytest.raises(ValueError, match="duplicate_lines"):
            pipeline.run_month(config, MONTH, run_id="dec-2")
        assert _stored(conn) == before

        # one market left: refused before training
        load_star(conn, make_star(1), config.warehouse)
        with pytest.raises(ValueError, match=r"1 market\(s\) left"):
            pipeline.run_month(config, MONTH, run_id="dec-3")
        assert _stored(conn) == before

        # identical markets: fails after training, in clustering
        one = make_star(1)
        key = one["territory"]["MARKET_KEY"].iloc[0]
        one["fact_sale"] = pd.concat([copy_lines(one["fact_sale"], f"{key}-{i}") for i in range(4)])
        one["territory"] = pd.concat([one["territory"].assign(MARKET_KEY=f"{key}-{i}") for i in range(4)])
        load_star(conn, one, config.warehouse)
        with pytest.raises(ValueError, match="identical features"):
            pipeline.run_month(config, MONTH, run_id="dec-4")
        assert _stored(conn) == before

        # a bad Param is refused before anything runs
        with pytest.raises(ValidationError):
            config.with_overrides(seq_len=30)
        assert _stored(conn) == before


def test_dbscan_that_finds_only_noise_fails_before_writing(tmp_path):
    """A tiny eps makes every market noise: the run fails naming the setting, and writes no row."""
    config = make_config(tmp_path, clustering={"algorithm": "dbscan", "dbscan_eps": 1e-9, "min_samples": 3})
    with warehouse(make_star(), config) as conn:
        with pytest.raises(ValueError, match=r"dbscan found no segment: every market is noise for 2013-12 \(0 of 6"):
            pipeline.run_month(config, MONTH, run_id="noise")
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = 'MARKET_SEGMENT'")
        assert cur.fetchone()[0] == 0


def test_dbscan_that_finds_one_segment_fails_with_a_hint_for_its_settings(tmp_path):
    """A huge eps puts every market in one segment: not a segmentation; nothing is written."""
    config = make_config(tmp_path, clustering={"algorithm": "dbscan", "dbscan_eps": 1e6, "min_samples": 2})
    with warehouse(make_star(), config) as conn:
        with pytest.raises(ValueError, match="dbscan found one segment") as err:
            pipeline.run_month(config, MONTH, run_id="one")
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = 'MARKET_SEGMENT'")
        assert cur.fetchone()[0] == 0
    assert "dbscan found one segment for 2013-12 (6 of 6 markets in segments, 0 noise)" in str(err.value)
    assert "set clustering.dbscan_eps lower" in str(err.value)


def test_hdbscan_one_segment_hint_does_not_point_at_dbscan_eps():
    from types import SimpleNamespace

    result = SimpleNamespace(algorithm="hdbscan", n_clusters=0, labels=np.full(8, -1))
    message = pipeline._one_segment(result, MONTH)
    assert message.startswith("hdbscan found no segment: every market is noise for 2013-12 (0 of 8 markets")
    assert "set clustering.min_samples lower" in message
    assert "set clustering.dbscan_eps" not in message  # HDBSCAN ignores it


def test_one_absurd_sale_excludes_its_market_as_an_outlier(tmp_path):
    """One line of 1e15 in one of 6 markets would otherwise become a segment of its own."""
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    keys = market_keys(star)
    row = fact[(fact["MARKET_KEY"] == keys[2]) & (fact["ORDER_DATE"] >= "2013-11-01")].index[0]
    fact.loc[row, "SALES_AMOUNT"] = 1e15
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {keys[2]: {"outlier_lines"}}
    outliers = read_json(result["run"].quality)["checks"]["outlier_lines"]
    assert (outliers["count"], outliers["examples"], outliers["policy"]) == (1, [keys[2]], "exclude")


def test_a_month_not_loaded_yet_fails_the_run(tmp_path):
    """Data ending in November, run for December: the gate stops the run instead of segmenting stale data."""
    config = make_config(tmp_path)
    with (
        warehouse(make_star(end="2013-11"), config),
        pytest.raises(
            ValueError,
            match=r"empty_month: 1 run month without sales \(latest month with sales: 1 month\(s\) before it\)",
        ),
    ):
        until_quality(config)


def test_lines_with_unknown_products_or_bad_discounts_exclude_their_market(tmp_path):
    config = make_config(tmp_path)
    star = make_star()
    fact = star["fact_sale"]
    keys = market_keys(star)
    last = fact["ORDER_DATE"] >= "2013-10-01"
    fact.loc[fact[(fact["MARKET_KEY"] == keys[0]) & last].index[0], "PRODUCT_KEY"] = 99_999
    fact.loc[fact[(fact["MARKET_KEY"] == keys[1]) & last].index[0], "DISCOUNT_PCT"] = 15.0  # meant 15 %
    with warehouse(star, config):
        result = until_quality(config)
    assert excluded(result) == {keys[0]: {"unknown_products"}, keys[1]: {"discount_range"}}
