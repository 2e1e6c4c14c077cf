"""Segment profiles and descriptions on small constructed markets with known answers."""

import numpy as np
import pandas as pd
import pytest

from include.segmentation.core.features import STATIC_FEATURES
from include.segmentation.core.profiles import (
    SIZE_FEATURES,
    TREND_FEATURES,
    describe,
    market_trends,
    segment_profiles,
)

T = np.arange(36, dtype=np.float64)


def test_trends_of_exact_growth_decline_and_season():
    revenue = np.stack(
        [
            100 + 2 * T,  # grows by 2 a month
            500 - 10 * T,  # declines by 10 a month
            100 * (1 + 0.5 * np.sin(2 * np.pi * T / 12)),  # pure yearly season around a flat level
            np.r_[np.zeros(33), np.full(3, 100.0)],  # opened 3 months ago: nothing before to compare
            np.zeros(36),  # no sales in the window at all
        ]
    )
    trends = market_trends(revenue, seq_len=12)
    assert list(trends.columns) == [*TREND_FEATURES, "avg_monthly_revenue"]
    assert SIZE_FEATURES == ("avg_monthly_revenue",)  # the clustering reads it by this name
    # the last 12 months are t = 24..35, mean t = 29.5: the slope over the window's mean revenue
    assert trends["trend_slope"].iloc[0] == pytest.approx(2 / (100 + 2 * 29.5))
    assert trends["trend_slope"].iloc[1] == pytest.approx(-10 / (500 - 10 * 29.5))
    window = revenue[0, -12:]
    assert trends["volatility"].iloc[0] == pytest.approx(window.std() / window.mean())
    assert trends["recent_growth"].iloc[0] == pytest.approx(window[-3:].sum() / window[-6:-3].sum() - 1)
    assert trends["seasonality"].iloc[2] == pytest.approx(1.0)  # the season explains all variation
    assert trends["seasonality"].iloc[:2].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)  # lines have none
    assert np.isnan(trends["recent_growth"].iloc[3])
    assert trends.iloc[4][["trend_slope", "recent_growth", "volatility"]].isna().all()
    assert trends["seasonality"].iloc[4] == 0.0
    # size: mean monthly net revenue over the window (currency), 0 without sales
    assert trends["avg_monthly_revenue"].tolist() == pytest.approx([100 + 2 * 29.5, 500 - 10 * 29.5, 100.0, 25.0, 0.0])


def test_trends_of_net_revenue_below_zero_follow_the_direction_of_change():
    t = T[-12:] - T[-12:].mean()  # -5.5 .. 5.5 over the window
    revenue = np.stack(
        [
            np.r_[np.zeros(24), -100 + 4 * t],  # returns outweigh sales, shrinking: rising net revenue
            np.r_[np.zeros(24), -100 - 4 * t],  # returns growing: falling net revenue
            np.r_[np.zeros(24), 4 * t],  # crosses zero: a mean of 0 must not make it undefined
        ]
    )
    trends = market_trends(revenue, seq_len=12)
    # relative to the absolute level, the mean of |revenue|: 100 for the first two, 12 for the third
    level = np.abs(4 * t).mean()
    assert trends["trend_slope"].tolist() == pytest.approx([0.04, -0.04, 4 / level])
    assert trends["volatility"].tolist() == pytest.approx(
        [(4 * t).std() / 100, (4 * t).std() / 100, (4 * t).std() / level]
    )
    # last 3 months against the 3 before, over the |revenue| of those 3 before
    window = revenue[:, -12:]
    before, recent = window[:, -6:-3].sum(axis=1), window[:, -3:].sum(axis=1)
    assert trends["recent_growth"].tolist() == pytest.approx(
        list((recent - before) / np.abs(window[:, -6:-3]).sum(axis=1))
    )
    assert trends["recent_growth"].iloc[0] == pytest.approx(4 * 9 / (300 - 4 * 4.5))  # (-246 - -282) / 282 > 0
    assert trends["recent_growth"].iloc[1] < 0
    assert trends["avg_monthly_revenue"].tolist() == pytest.approx([-100.0, -100.0, 0.0], abs=1e-9)


def test_short_history_has_no_seasonality_and_bad_input_is_refused():
    trends = market_trends(np.full((2, 12), 50.0), seq_len=12)
    assert trends["seasonality"].isna().all()
    assert trends["trend_slope"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="seq_len=12 must be in"):
        market_trends(np.ones((2, 8)), seq_len=12)
    with pytest.raises(ValueError, match="NaN or infinite"):
        market_trends(np.array([[1.0] * 11 + [np.nan]]), seq_len=6)
    with pytest.raises(ValueError, match=r"\(n_markets, n_months\)"):
        market_trends(np.ones(12), seq_len=6)


def _markets():
    rows = []
    for i in range(6):  # segment 1: European, high Platinum share, declining
        rows.append((1, f"EU-{i}", "France", "Europe", 0.40, -0.04))
    for i in range(6):  # segment 2: North American, low Platinum share, growing
        rows.append((2, f"NA-{i}", "United States", "North America", 0.10, 0.03))
    rows.append((-1, "XX-0", "Australia", "Pacific", 0.25, 0.0))
    frame = pd.DataFrame(rows, columns=["segment_id", "market_name", "country", "territory_group", "p", "slope"])
    for name in STATIC_FEATURES:
        frame[name] = 1.0
    frame["platinum_share"] = frame.pop("p")
    frame["trend_slope"] = frame.pop("slope")
    frame["recent_growth"], frame["volatility"], frame["seasonality"] = 0.0, 0.1, 0.2
    frame["avg_monthly_revenue"] = 10_000.0
    return frame


def test_profiles_give_size_means_region_and_a_description_per_segment():
    profiles = segment_profiles(_markets()).set_index("segment_id")
    assert profiles.loc[1, "n_markets"] == 6
    assert profiles.loc[1, "share"] == pytest.approx(6 / 13)
    assert profiles.loc[1, "platinum_share"] == pytest.approx(0.40)
    assert profiles.loc[2, "main_group"] == "North America"
    assert profiles.loc[2, "main_country"] == "United States"
    assert profiles.loc[2, "group_share"] == 1.0
    assert profiles.loc[1, "examples"] == "EU-0, EU-1, EU-2"
    assert profiles.loc[1, "avg_monthly_revenue"] == 10_000.0
    # population mean of the Platinum share: (6 * 0.40 + 6 * 0.10 + 0.25) / 13 = 0.25; median slope 0
    assert profiles.loc[1, "description"] == (
        "Europe markets with declining sales (-4.0%/month vs +0.0%) and a high Platinum share (40% vs 25%)"
    )
    assert profiles.loc[2, "description"] == (
        "North America markets with a low Platinum share (10% vs 25%) and growing sales (+3.0%/month vs +0.0%)"
    )
    assert profiles.loc[-1, "description"] == "Unassigned markets (noise) close to the average on every feature"


def test_mixed_regions_and_missing_columns():
    markets = _markets()
    markets.loc[markets["segment_id"] == 1, "territory_group"] = ["Europe"] * 3 + ["Pacific"] * 3
    profiles = segment_profiles(markets).set_index("segment_id")
    assert profiles.loc[1, "group_share"] == 0.5
    assert profiles.loc[1, "description"].startswith("Markets from several regions with ")
    markets.loc[markets["segment_id"] == 1, "territory_group"] = ["Europe"] * 4 + ["Pacific"] * 2
    assert segment_profiles(markets).set_index("segment_id").loc[1, "description"].startswith("Mostly Europe markets")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['seasonality'\]"):
        segment_profiles(markets.drop(columns="seasonality"))
    with pytest.raises(ValueError, match="no markets to profile"):
        segment_profiles(markets.iloc[:0])


def test_describe_caps_the_number_of_features():
    markets = _markets()
    profiles = segment_profiles(markets)
    values = markets[[*STATIC_FEATURES, *TREND_FEATURES, *SIZE_FEATURES]]
    one = describe(profiles, values, max_features=1)
    assert one[1] == "Europe markets with declining sales (-4.0%/month vs +0.0%)"


def test_size_is_the_segment_median_against_the_population_median():
    markets = _markets()
    # skewed sizes: the European segment holds the large markets, one of them huge
    markets["avg_monthly_revenue"] = (
        [120_000.0, 100_000.0, 150_000.0, 130_000.0, 110_000.0, 9_000_000.0]
        + [
            5_000.0,
            3_000.0,
            4_000.0,
            6_000.0,
            2_000.0,
            7_000.0,
        ]
        + [31_000.0]
    )
    markets["platinum_share"] = 0.25  # size and trend are the only differences
    profiles = segment_profiles(markets).set_index("segment_id")
    assert profiles.loc[1, "avg_monthly_revenue"] == 125_000.0  # the median: the huge market does not set it
    assert profiles.loc[2, "avg_monthly_revenue"] == 4_500.0
    # the population's centre is the median over all 13 markets (31,000), not the mean (~740,000)
    assert profiles.loc[1, "description"] == (
        "Europe markets with declining sales (-4.0%/month vs +0.0%) and high revenue (avg 125,000/month vs 31,000)"
    )
    assert profiles.loc[2, "description"] == (
        "North America markets with growing sales (+3.0%/month vs +0.0%) and low revenue (avg 4,500/month vs 31,000)"
    )


def test_descriptions_never_contradict_their_numbers():
    markets = _markets()
    # recent growth: the European segment flat (0%) while the rest rise 40%; volatility high there
    markets["recent_growth"] = [0.0] * 6 + [0.4] * 7
    markets["volatility"] = [0.6] * 6 + [0.1] * 7
    # a difference too small to print: 40.0% vs 40.02% (the population's mean) is not named
    markets["platinum_share"] = [0.4] * 6 + [0.4004] * 7
    profiles = segment_profiles(markets).set_index("segment_id")
    text = profiles.loc[1, "description"]
    assert text == (
        "Europe markets with no recent change (+0% on the previous 3 months vs +40%), "
        "volatile sales (monthly revenue varies 60% around its level vs 10%) and declining sales (-4.0%/month vs +0.0%)"
    )
    assert "Platinum" not in text
