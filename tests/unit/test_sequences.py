import numpy as np
import pandas as pd
import pytest

from include.segmentation.core import sequences as seq


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
    # (tests/emulator/test_bad_input.py has the +01:00 midnight that UTC conversion would push into November).
    monthly["month_start"] = monthly["month_start"].dt.tz_localize("UTC")
    monthly.loc[0, "month_start"] = pd.Timestamp("2013-11-01 00:00", tz="Europe/Berlin").tz_convert("UTC")
    markets, grid = seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-12", "M"), 3))
    np.testing.assert_array_equal(grid[0, :, 0], [100.0, 200.0, 50.0])  # 2013-10-31 23:00 UTC -> October


def _reference_grid(monthly, months):
    """The pivot monthly_grid does, written the slow obvious way."""
    frame = monthly.assign(month=pd.to_datetime(monthly["month_start"]).dt.to_period("M"))
    frame = frame[frame["month"].isin(months)]
    keys = sorted(frame["market_key"].astype(str).unique())
    grid = np.zeros((len(keys), len(months), len(seq.MONTHLY_COLUMNS)))
    for row in frame.itertuples():
        values = [getattr(row, c) for c in seq.MONTHLY_COLUMNS]
        grid[keys.index(str(row.market_key)), months.get_loc(row.month)] = values
    return keys, grid


@pytest.mark.parametrize("key_dtype", ["str", object])
def test_monthly_grid_equals_a_plain_pivot(key_dtype):
    rng = np.random.default_rng(3)
    months = seq.month_range(pd.Period("2013-12", "M"), 12)
    starts = pd.period_range("2012-06", "2014-02", freq="M").to_timestamp()  # some outside the window
    cells = [(f"K{m:03d}", s) for m in range(40) for s in starts if rng.random() < 0.6]
    rng.shuffle(cells)
    monthly = pd.DataFrame(cells, columns=["market_key", "month_start"])
    monthly["market_key"] = monthly["market_key"].astype(key_dtype)
    for col in seq.MONTHLY_COLUMNS:
        monthly[col] = rng.integers(1, 1000, len(monthly)).astype(float)
    markets, grid = seq.monthly_grid(monthly, months)
    keys, expected = _reference_grid(monthly, months)
    assert markets.tolist() == keys
    assert all(type(k) is str for k in markets)
    np.testing.assert_array_equal(grid, expected)


def test_the_first_repeated_row_is_named_inside_and_outside_the_window(monthly):
    months = seq.month_range(pd.Period("2013-12", "M"), 3)
    # rows: B 2013-10 repeats before A 2013-10 does
    rows = pd.concat([monthly.iloc[[0, 3, 3, 0]], monthly.iloc[[1]]], ignore_index=True)
    with pytest.raises(ValueError, match="market 'B' has more than one row for month 2013-10"):
        seq.monthly_grid(rows, months)
    old = monthly.iloc[[0, 0]].assign(month_start=pd.Timestamp("2012-01-01"))
    with pytest.raises(ValueError, match="market 'A' has more than one row for month 2012-01"):
        seq.monthly_grid(pd.concat([monthly, old], ignore_index=True), months)


def test_the_first_non_finite_measure_is_named(monthly):
    monthly = monthly.astype({"quantity": float})
    monthly.loc[4, "revenue"] = np.inf
    monthly.loc[2, "quantity"] = np.nan
    with pytest.raises(ValueError, match=r"market 'A' has a non-finite quantity \(nan\) in 2013-12"):
        seq.monthly_grid(monthly, seq.month_range(pd.Period("2013-12", "M"), 3))


def test_sequence_features_are_unchanged_by_the_in_place_build():
    grid = np.random.default_rng(0).normal(100, 50, (5, 7, 4))
    log = np.sign(grid) * np.log1p(np.abs(grid))
    expected = np.stack(
        [log[..., 0], np.diff(log[..., 0], axis=1, prepend=log[:, :1, 0]), log[..., 3], log[..., 1]], axis=-1
    )
    np.testing.assert_array_equal(seq.sequence_features(grid), expected)


def test_shape_windows_make_the_temporal_block_blind_to_market_size():
    """A market 100x larger with the same movements gives the same model inputs, hence the same embedding."""
    months = 30
    t = np.arange(months)
    base = 100_000.0 * np.exp(0.03 * t) * (1 + 0.3 * np.sin(2 * np.pi * t / 12))
    grid = np.zeros((3, months, 4))
    for i, factor in enumerate((1.0, 100.0, 1.0)):
        revenue = base * factor if i < 2 else base[::-1]  # the third market declines instead
        grid[i] = np.column_stack([revenue, revenue / 10, revenue / 20, revenue / 40])
    features = seq.sequence_features(grid)
    # before: the log levels differ by log(100) in every month
    assert features[1, -1, 0] - features[0, -1, 0] == pytest.approx(np.log(100), rel=1e-3)
    shaped = seq.shape_windows(features[:, -12:])
    np.testing.assert_allclose(shaped[0], shaped[1], atol=2e-3)  # log1p's +1 is all that is left
    assert np.abs(shaped[0] - shaped[2]).max() > 0.3  # a different shape stays different
    np.testing.assert_allclose(shaped[..., [0, 2, 3]].mean(axis=-2), 0.0, atol=1e-12)
    np.testing.assert_array_equal(shaped[..., 1], features[:, -12:, 1])  # growth is level-free already
    inputs = seq.model_inputs(features, grid[..., 2] > 0, 12, 3, None, 0.0, seed=0)
    np.testing.assert_allclose(inputs.latest[0], inputs.latest[1], atol=1e-2)
    assert inputs.valid.shape == (0, 12, 4)  # 3 markets: too few to hold any out
    with pytest.raises(ValueError, match="windows must end in"):
        seq.shape_windows(features[..., :3])


def test_holdout_markets_are_seeded_and_need_enough_markets():
    held = seq.holdout_markets(40, 0.1, seed=3)
    assert held.sum() == 4
    np.testing.assert_array_equal(held, seq.holdout_markets(40, 0.1, seed=3))
    assert not seq.holdout_markets(9, 0.1, seed=3).any()
    assert not seq.holdout_markets(40, 0.0, seed=3).any()
