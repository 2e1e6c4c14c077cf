"""Monthly sequences per market: from (market, month) aggregates to model-ready arrays.

Pure numpy/pandas functions; the warehouse has already grouped fact rows by market and month.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Raw monthly measures expected from ``sql/monthly_sales.sql`` (lower-case columns).
MONTHLY_COLUMNS = ("revenue", "quantity", "n_lines", "n_customers")

#: Per-month features fed to the autoencoder, in this order (the last axis of the arrays).
FEATURES = ("log_revenue", "revenue_growth", "log_customers", "log_quantity")


def month_range(end_month: pd.Period, n_months: int) -> pd.PeriodIndex:
    """The ``n_months`` calendar months ending at (and including) ``end_month``, oldest first."""
    if n_months < 1:
        raise ValueError(f"n_months must be >= 1, got {n_months}")
    return pd.period_range(end=end_month, periods=n_months, freq="M")


def monthly_grid(monthly: pd.DataFrame, months: pd.PeriodIndex) -> tuple[np.ndarray, np.ndarray]:
    """Pivot long monthly aggregates into a dense ``(n_markets, n_months, 4)`` float64 grid.

    ``monthly`` has columns ``market_key``, ``month_start`` (date-like; naive values are taken as
    UTC, aware ones converted to UTC) and the measures in ``MONTHLY_COLUMNS`` (revenue in currency
    units, counts). Months with no sales are 0; rows outside ``months`` are ignored. Returns
    ``(market_keys, grid)`` with market keys as sorted strings. Raises ``ValueError`` naming a
    missing column, NULL keys or months, the market/month/column of a non-finite measure, or the
    market and month of a duplicated (market, month) row.
    """
    missing = [c for c in ("market_key", "month_start", *MONTHLY_COLUMNS) if c not in monthly.columns]
    if missing:
        raise ValueError(f"monthly aggregates are missing column(s) {missing}")
    for col in ("market_key", "month_start"):
        if monthly[col].isna().any():
            raise ValueError(f"monthly aggregates have {int(monthly[col].isna().sum())} row(s) with a NULL {col}")
    starts = pd.to_datetime(monthly["month_start"], utc=True).dt.tz_localize(None)
    frame = monthly.assign(market_key=monthly["market_key"].astype(str), month=starts.dt.to_period("M"))
    values = frame[list(MONTHLY_COLUMNS)].astype("float64")
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"market {frame['market_key'].iloc[row]!r} has a non-finite {MONTHLY_COLUMNS[col]} "
            f"({values.iat[row, col]}) in {frame['month'].iloc[row]}"
        )
    dup = frame.duplicated(["market_key", "month"])
    if dup.any():
        row = frame[dup].iloc[0]
        raise ValueError(f"market {row.market_key!r} has more than one row for month {row.month}")
    frame = frame.assign(**{c: values[c] for c in MONTHLY_COLUMNS})
    frame = frame[frame["month"].isin(months)]
    markets = np.array(sorted(frame["market_key"].unique()), dtype=object)
    index = pd.MultiIndex.from_product([markets, months], names=["market_key", "month"])
    dense = frame.set_index(["market_key", "month"])[list(MONTHLY_COLUMNS)].reindex(index, fill_value=0.0)
    grid = dense.to_numpy().reshape(len(markets), len(months), len(MONTHLY_COLUMNS))
    return markets, grid


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    # Sales span orders of magnitude across markets; a log keeps big markets from dominating while
    # the sign survives net-negative months (returns).
    return np.sign(x) * np.log1p(np.abs(x))


def sequence_features(grid: np.ndarray) -> np.ndarray:
    """Turn a raw ``(n_markets, n_months, 4)`` grid into ``(n_markets, n_months, 4)`` features.

    Features (``FEATURES``): signed ``log1p`` of revenue; month-over-month revenue growth as the
    difference of those logs (0 for the first month; ``log(r_t / r_{t-1})`` for large revenue);
    ``log1p`` of distinct customers; ``log1p`` of quantity. Raises ``ValueError`` on NaN/inf.
    """
    if grid.ndim != 3 or grid.shape[2] != len(MONTHLY_COLUMNS):
        raise ValueError(f"grid must be (n_markets, n_months, {len(MONTHLY_COLUMNS)}), got {grid.shape}")
    if not np.isfinite(grid).all():
        raise ValueError("monthly aggregates contain NaN or infinite values")
    log_revenue = _signed_log1p(grid[..., 0])
    growth = np.diff(log_revenue, axis=1, prepend=log_revenue[:, :1])
    return np.stack([log_revenue, growth, _signed_log1p(grid[..., 3]), _signed_log1p(grid[..., 1])], axis=-1)


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature standardisation fitted across markets and months.

    Deliberately not per-series: a per-market z-score would erase level and size, which are what
    distinguish a large steady market from a small one with the same shape.
    """

    mean: np.ndarray  # (n_features,)
    std: np.ndarray  # (n_features,)

    @classmethod
    def fit(cls, windows: np.ndarray) -> FeatureScaler:
        """Fit on ``(n, seq_len, n_features)`` windows; constant features get std 1."""
        flat = windows.reshape(-1, windows.shape[-1])
        std = flat.std(axis=0)
        return cls(mean=flat.mean(axis=0), std=np.where(std > 1e-12, std, 1.0))

    def transform(self, windows: np.ndarray) -> np.ndarray:
        """Scale ``(..., n_features)`` to zero mean / unit variance; returns float32."""
        return ((windows - self.mean) / self.std).astype(np.float32)


def sliding_windows(features: np.ndarray, seq_len: int) -> np.ndarray:
    """All windows of ``seq_len`` consecutive months: ``(n_markets, n_windows, seq_len, n_features)``.

    ``n_windows = n_months - seq_len + 1``; a view, not a copy. Raises ``ValueError`` when the history
    is shorter than ``seq_len``.
    """
    n_months = features.shape[1]
    if n_months < seq_len:
        raise ValueError(f"seq_len={seq_len} months needs at least that much history; got {n_months} months")
    view = np.lib.stride_tricks.sliding_window_view(features, seq_len, axis=1)
    # sliding_window_view puts the window axis last: (markets, windows, features, seq_len).
    return view.transpose(0, 1, 3, 2)


def training_windows(features: np.ndarray, active: np.ndarray, seq_len: int, min_active_months: int) -> np.ndarray:
    """Windows to train on: every window with at least ``min_active_months`` months of sales.

    ``features`` is ``(n_markets, n_months, n_features)``, ``active`` the boolean
    ``(n_markets, n_months)`` mask of months with sales. Windows from before a market opened (all
    zeros) are dropped so the model does not learn mostly silence. Returns
    ``(n_windows, seq_len, n_features)`` (a copy).
    """
    windows = sliding_windows(features, seq_len)
    active_count = sliding_windows(active[..., None].astype(np.int32), seq_len)[..., 0].sum(axis=-1)
    keep = active_count >= min_active_months
    return np.ascontiguousarray(windows[keep])
