import numpy as np
import pandas as pd
import pytest

from include.segmentation import sequences as seq


@pytest.fixture
def monthly():
    # Market B skips 2013-11 (a gap month must become zeros, not be dropped).
    return pd.DataFrame(
        {
            "market_key": ["A", "A", "A", "B", "B"],
            "month_start": pd.to_datetime(["2013-10-01", "2013-11-01", "2013-12-01", "2013-10-01", "2013-12-01"]),
            "revenue": [100.0, 200.0, 50.0, 10.0, 30.0],
            "quantity": [1, 2, 1, 3, 4],
            "n_lines": [1, 2, 1, 1, 2],
            "n_customers": [1, 2, 1, 1, 1],
        }
    )


def test_month_range_ends_at_the_month():
    months = seq.month_range(pd.Period("2013-12", "M"), 3)
    assert [str(m) for m in months] == ["2013-10", "2013-11", "2013-12"]


def test_monthly_grid_fills_gaps_with_zero(monthly):
    markets, grid = seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-12", "M"), 3))
    assert markets.tolist() == ["A", "B"]
    assert grid.shape == (2, 3, 4)
    np.testing.assert_array_equal(grid[0, :, 0], [100.0, 200.0, 50.0])
    np.testing.assert_array_equal(grid[1, :, 0], [10.0, 0.0, 30.0])
    np.testing.assert_array_equal(grid[1, :, 1], [3.0, 0.0, 4.0])  # quantity


def test_rows_outside_the_range_are_ignored(monthly):
    markets, grid = seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-11", "M"), 2))
    np.testing.assert_array_equal(grid[0, :, 0], [100.0, 200.0])


def test_duplicate_market_month_is_named(monthly):
    dup = pd.concat([monthly, monthly.iloc[[3]]])
    with pytest.raises(ValueError, match="market 'B' has more than one row for month 2013-10"):
        seq.monthly_grid(dup, seq.month_range(pd.Period("2013-12", "M"), 3))


def test_missing_column_is_named(monthly):
    with pytest.raises(ValueError, match="n_customers"):
        seq.monthly_grid(monthly.drop(columns="n_customers"), seq.month_range(pd.Period("2013-12", "M"), 3))


def test_sequence_features_exact_values():
    grid = np.array([[[np.e - 1, 0, 0, 0], [np.e**3 - 1, 0, 0, 0], [-(np.e - 1), 0, 0, 0]]])
    feats = seq.sequence_features(grid)
    np.testing.assert_allclose(feats[0, :, 0], [1.0, 3.0, -1.0])  # signed log1p revenue
    np.testing.assert_allclose(feats[0, :, 1], [0.0, 2.0, -4.0])  # month-over-month log growth
    assert feats.shape == (1, 3, len(seq.FEATURES))


def test_sequence_features_reject_nan():
    grid = np.zeros((1, 3, 4))
    grid[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        seq.sequence_features(grid)


def test_sliding_windows_shape_and_content():
    features = np.arange(2 * 5 * 1, dtype=float).reshape(2, 5, 1)
    windows = seq.sliding_windows(features, 3)
    assert windows.shape == (2, 3, 3, 1)
    np.testing.assert_array_equal(windows[1, 2, :, 0], [7.0, 8.0, 9.0])
    with pytest.raises(ValueError, match="seq_len=6"):
        seq.sliding_windows(features, 6)


def test_training_windows_drop_windows_before_a_market_opened():
    features = np.ones((2, 6, 1))
    active = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=bool)
    windows = seq.training_windows(features, active, seq_len=3, min_active_months=2)
    # market 0: 4 windows; market 1: only the last window has 2 active months
    assert windows.shape == (5, 3, 1)


def test_scaler_keeps_level_differences_between_markets():
    small = np.full((1, 4, 1), 2.0)
    large = np.full((1, 4, 1), 10.0)
    windows = np.concatenate([small, large])
    scaler = seq.FeatureScaler.fit(windows)
    scaled = scaler.transform(windows)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[:, 0, 0], [-1.0, 1.0])  # a per-series z-score would give 0 and 0


def test_scaler_leaves_constant_features_finite():
    windows = np.ones((3, 4, 2))
    scaled = seq.FeatureScaler.fit(windows).transform(windows)
    np.testing.assert_array_equal(scaled, 0.0)


def test_null_market_key_is_reported(monthly):
    monthly.loc[0, "market_key"] = None
    with pytest.raises(ValueError, match="1 row.* NULL market_key"):
        seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-12", "M"), 3))


def test_non_finite_measure_names_market_month_and_column(monthly):
    monthly.loc[4, "revenue"] = np.inf
    with pytest.raises(ValueError, match=r"market 'B' has a non-finite revenue \(inf\) in 2013-12"):
        seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-12", "M"), 3))


def test_aware_month_starts_keep_the_month_they_were_written_in(monthly):
    # The warehouse grouped by month already; a UTC instant of 23:00 on 31 October is October's row
    # (tests/test_bad_input.py has the +01:00 midnight that UTC conversion would push into November).
    monthly["month_start"] = monthly["month_start"].dt.tz_localize("UTC")
    monthly.loc[0, "month_start"] = pd.Timestamp("2013-11-01 00:00", tz="Europe/Berlin").tz_convert("UTC")
    markets, grid = seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-12", "M"), 3))
    np.testing.assert_array_equal(grid[0, :, 0], [100.0, 200.0, 50.0])  # 2013-10-31 23:00 UTC -> October
