"""Monthly sequences per market: from (market, month) aggregates to model-ready arrays.

Pure numpy/pandas functions; the warehouse has already grouped fact rows by market and month.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from include.segmentation.core.features import LEVEL_FEATURES, MONTHLY_COLUMNS
from include.segmentation.core.features import SEQUENCE_FEATURES as FEATURES


def month_range(end_month: pd.Period, n_months: int) -> pd.PeriodIndex:
    """The ``n_months`` calendar months ending at (and including) ``end_month``, oldest first."""
    if n_months < 1:
        raise ValueError(f"n_months must be >= 1, got {n_months}")
    return pd.period_range(end=end_month, periods=n_months, freq="M")


def _wall_clock(values: pd.Series) -> pd.Series:
    # DATE_TRUNC('MONTH') on a TIMESTAMP_TZ is local midnight of the 1st (2013-12-01 00:00 +01:00):
    # the month is the one written, not the UTC instant's (30 November). Offsets are dropped, not
    # converted; a column mixing offsets arrives as objects and is handled value by value.
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_localize(None)
    try:
        parsed = pd.to_datetime(values)
    except (ValueError, TypeError):
        parsed = pd.to_datetime(values.map(lambda v: pd.Timestamp(v).tz_localize(None)))
    return parsed.dt.tz_localize(None) if isinstance(parsed.dtype, pd.DatetimeTZDtype) else parsed


def _check_columns(monthly: pd.DataFrame) -> None:
    # Every column present, and no row without a market or a month (it could not be placed).
    missing = [c for c in ("market_key", "month_start", *MONTHLY_COLUMNS) if c not in monthly.columns]
    if missing:
        raise ValueError(f"monthly aggregates are missing column(s) {missing}")
    for col in ("market_key", "month_start"):
        if monthly[col].isna().any():
            raise ValueError(f"monthly aggregates have {int(monthly[col].isna().sum())} row(s) with a NULL {col}")


def _check_finite(columns: list[np.ndarray], raw_keys: pd.Series, starts: pd.Series) -> None:
    # Name the first row (the first measure on a tie) whose measure is NaN or infinite.
    bad_rows = [np.flatnonzero(~np.isfinite(v)) for v in columns]
    if any(len(rows) for rows in bad_rows):
        row, col = min((int(rows[0]), j) for j, rows in enumerate(bad_rows) if len(rows))
        raise ValueError(
            f"market {str(raw_keys.iloc[row])!r} has a non-finite {MONTHLY_COLUMNS[col]} ({columns[col][row]}) in "
            f"{starts.iloc[row]:%Y-%m}"
        )


@dataclass(frozen=True)
class _Cells:
    """Where the rows whose month is in the window go in the flat ``(n_markets * n_months)`` grid."""

    inside: np.ndarray  # (n_rows,) bool: the row's month is in the window
    rows: np.ndarray | None  # positions of the rows inside the window; None when all are
    present: np.ndarray  # (n_codes,) bool: the market has rows in the window
    n_markets: int  # markets with rows in the window (the grid's first axis)
    cell: np.ndarray  # per row inside the window: market's grid row * n_months + month position


def _grid_cells(codes: np.ndarray, n_codes: int, month_no: np.ndarray, months: pd.PeriodIndex) -> _Cells:
    # Months become integer positions in the window; markets without rows in it get no grid row.
    first = months[0].year * 12 + months[0].month - 1
    pos = month_no - first
    inside = (pos >= 0) & (pos < len(months))
    rows = None if inside.all() else np.flatnonzero(inside)
    in_codes = codes if rows is None else codes[rows]
    in_pos = pos if rows is None else pos[rows]
    present = np.bincount(in_codes, minlength=n_codes) > 0
    dense = np.cumsum(present) - 1  # market code -> its row in the grid (markets with rows in the window)
    n_markets = int(present.sum())
    return _Cells(inside, rows, present, n_markets, dense[in_codes] * len(months) + in_pos)


def _check_one_row_per_month(
    cells: _Cells, n_months: int, codes: np.ndarray, month_no: np.ndarray, raw_keys: pd.Series, starts: pd.Series
) -> None:
    # Duplicated (market, month) rows: inside the window by counting cells, outside it (normally no
    # rows: the SQL bounds the history) by hashing; then the first repeat in row order is named.
    suspect = np.bincount(cells.cell, minlength=cells.n_markets * n_months)[cells.cell] > 1
    base = int(month_no.min())
    span = int(month_no.max()) - base + 1

    def pair(at: np.ndarray) -> pd.Series:  # one integer per (market, month) of the rows ``at``
        return pd.Series(codes[at] * span + (month_no[at] - base))

    if cells.rows is not None:
        flags = np.zeros(len(codes), dtype=bool)
        flags[cells.rows] = suspect
        out = np.flatnonzero(~cells.inside)
        flags[out[pair(out).duplicated(keep=False).to_numpy()]] = True
        suspect = flags
    if suspect.any():
        candidates = np.flatnonzero(suspect)
        repeat = pair(candidates).duplicated().to_numpy()
        row = int(candidates[np.flatnonzero(repeat)[0]])
        raise ValueError(f"market {str(raw_keys.iloc[row])!r} has more than one row for month {starts.iloc[row]:%Y-%m}")


def monthly_grid(monthly: pd.DataFrame, months: pd.PeriodIndex) -> tuple[np.ndarray, np.ndarray]:
    """Pivot long monthly aggregates into a dense ``(n_markets, n_months, 4)`` float64 grid.

    ``monthly`` has columns ``market_key``, ``month_start`` (date-like; a timezone-aware
    value keeps its written, wall-clock month) and the measures in ``MONTHLY_COLUMNS`` (revenue in currency
    units, counts). Months with no sales are 0; rows outside ``months`` are ignored. Returns
    ``(market_keys, grid)`` with market keys as sorted strings. Raises ``ValueError`` naming a
    missing column, NULL keys or months, the market/month/column of a non-finite measure, or the
    market and month of a duplicated (market, month) row.

    Vectorised and linear in the number of rows: market keys are factorised as they arrive (Arrow
    strings are never turned into Python objects), months become integer positions, duplicates are
    found by counting cells, and each measure is written into the grid by one fancy-indexed assignment.
    """
    _check_columns(monthly)
    if monthly.empty:
        return np.array([], dtype=object), np.zeros((0, len(months), len(MONTHLY_COLUMNS)))
    starts = _wall_clock(monthly["month_start"])
    # Months since year 0 (datetime64[M] counts from 1970-01).
    month_no = starts.to_numpy().astype("datetime64[M]").astype(np.int64) + 1970 * 12
    raw_keys = monthly["market_key"]
    # Measures are read column by column and written straight into the grid: no (rows, 4) intermediate.
    columns = [monthly[c].astype("float64").to_numpy() for c in MONTHLY_COLUMNS]
    _check_finite(columns, raw_keys, starts)
    codes, uniques = pd.factorize(raw_keys.astype(str), sort=True)
    cells = _grid_cells(codes, len(uniques), month_no, months)
    _check_one_row_per_month(cells, len(months), codes, month_no, raw_keys, starts)
    markets = np.asarray(uniques, dtype=object)[cells.present]
    grid = np.zeros((cells.n_markets * len(months), len(MONTHLY_COLUMNS)), dtype=np.float64)
    for j, values in enumerate(columns):
        grid[cells.cell, j] = values if cells.rows is None else values[cells.rows]
    return markets, grid.reshape(cells.n_markets, len(months), len(MONTHLY_COLUMNS))


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
    # Written feature by feature into one array (no np.stack copy: at a million markets each
    # full-size temporary is over a gigabyte).
    out = np.empty(grid.shape, dtype=np.float64)
    out[..., 0] = _signed_log1p(grid[..., 0])
    out[..., 1] = np.diff(out[..., 0], axis=1, prepend=out[:, :1, 0])
    out[..., 2] = _signed_log1p(grid[..., 3])
    out[..., 3] = _signed_log1p(grid[..., 1])
    return out


def shape_windows(windows: np.ndarray) -> np.ndarray:
    """Remove each window's level: ``(..., seq_len, n_features)`` -> the same shape, float64, a copy.

    The log-level features (``LEVEL_FEATURES``) become their deviation from the window's own mean,
    so a market 100 times larger with the same movements gives the same window: the autoencoder
    describes how sales move (trend, seasonality, volatility, growth), not how big the market is.
    Growth (a difference of logs) is already free of level and is kept as it is. On a log scale a
    constant factor is an additive constant, so this is exact size invariance for revenue,
    customers and quantity alike (up to the ``+1`` of ``log1p`` for very small counts). Market size
    is kept apart as an attribute (``profiles.market_trends``' ``avg_monthly_revenue``) that the
    profiles show and ``ClusterConfig.size_weight`` may weigh in. Measured in
    ``benchmarks.planted --sweep``: without it, the embedding's first principal component
    correlated 0.97 with log size and the planted temporal split was lost (ARI 0.35 at size log-sd 1).
    Raises ``ValueError`` when the last axis is not ``FEATURES``.
    """
    x = np.array(windows, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] != len(FEATURES):
        raise ValueError(f"windows must end in (seq_len, {len(FEATURES)}) features {FEATURES}, got {x.shape}")
    level = [FEATURES.index(f) for f in LEVEL_FEATURES]
    x[..., level] -= x[..., level].mean(axis=-2, keepdims=True)
    return x


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature standardisation fitted across markets and months, on level-free windows.

    Deliberately not per-series: a per-window z-score would also erase amplitude (a market whose
    sales swing 40 % against one that swings 5 %), which is shape. ``shape_windows`` removes only
    the level first; this scaler then puts the features on one scale.
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


def training_windows(
    features: np.ndarray,
    active: np.ndarray,
    seq_len: int,
    min_active_months: int,
    max_windows: int | None = None,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Windows to train on: windows with at least ``min_active_months`` months of sales.

    ``features`` is ``(n_markets, n_months, n_features)``, ``active`` the boolean
    ``(n_markets, n_months)`` mask of months with sales. Windows from before a market opened (all
    zeros) are dropped so the model does not learn mostly silence. With ``max_windows``, a uniform
    random sample (seeded) of that many eligible windows is drawn before any window is copied, so
    memory and training cost stay bounded however many markets there are. ``rows``: a boolean
    ``(n_markets,)`` mask of the markets to take windows from (default all; no copy of the others). Returns
    ``(n_windows, seq_len, n_features)`` in market, then time order (a copy).
    """
    windows = sliding_windows(features, seq_len)
    counts = np.cumsum(np.pad(active.astype(np.int32), ((0, 0), (1, 0))), axis=1)
    active_count = counts[:, seq_len:] - counts[:, :-seq_len]  # (n_markets, n_windows)
    eligible = active_count >= min_active_months
    if rows is not None:
        eligible &= np.asarray(rows, dtype=bool)[:, None]
    market, start = np.nonzero(eligible)
    if max_windows is not None and len(market) > max_windows:
        pick = np.sort(np.random.default_rng(seed).choice(len(market), size=max_windows, replace=False))
        market, start = market[pick], start[pick]
    return np.ascontiguousarray(windows[market, start])


def holdout_markets(n_markets: int, share: float, seed: int, min_markets: int = 10) -> np.ndarray:
    """A seeded ``(n_markets,)`` boolean mask of ``round(share * n)`` markets held out for validation.

    None (all False) below ``min_markets`` markets or with ``share`` 0: too few to spare. Markets,
    not windows, are held out: a market's windows overlap by all but one month, so windows of one
    market on both sides would let the validation loss follow the training loss.
    """
    held = np.zeros(n_markets, dtype=bool)
    n_held = int(round(share * n_markets))
    if n_markets >= min_markets and n_held >= 1:
        held[np.random.default_rng(seed).choice(n_markets, size=n_held, replace=False)] = True
    return held


@dataclass(frozen=True)
class ModelInputs:
    """What the autoencoder trains on and embeds, scaled: float32 arrays of ``(n, seq_len, n_features)``."""

    train: np.ndarray  # training windows of the markets not held out
    valid: np.ndarray  # windows of the held-out markets, for early stopping (may be empty)
    latest: np.ndarray  # (n_markets, seq_len, n_features): each market's window ending at the run's month
    scaler: FeatureScaler


def model_inputs(
    features: np.ndarray,
    active: np.ndarray,
    seq_len: int,
    min_active_months: int,
    max_windows: int | None,
    validation_share: float,
    seed: int,
) -> ModelInputs:
    """Level-free, scaled windows for training, validation and embedding, as the pipeline makes them.

    ``features`` ``(n_markets, n_months, n_features)`` from ``sequence_features``; ``active``
    ``(n_markets, n_months)`` months with sales. Training windows (``training_windows``, at most
    ``max_windows``) come from the markets not held out (``holdout_markets``, ``validation_share``);
    validation windows from the held-out ones (at most 4,096); every market's latest window is
    embedded. All go through ``shape_windows``, then a ``FeatureScaler`` fitted on the training
    windows. Raises ``ValueError`` as ``training_windows`` does.
    """
    held = holdout_markets(len(features), validation_share, seed)
    train = shape_windows(training_windows(features, active, seq_len, min_active_months, max_windows, seed, ~held))
    valid = shape_windows(training_windows(features, active, seq_len, min_active_months, 4096, seed, held))
    scaler = FeatureScaler.fit(train)
    return ModelInputs(
        train=scaler.transform(train),
        valid=scaler.transform(valid),
        latest=scaler.transform(shape_windows(features[:, -seq_len:])),
        scaler=scaler,
    )
