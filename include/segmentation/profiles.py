"""Segment profiles: what each segment looks like in business terms, and a one-line description.

Three pure steps: ``market_trends`` (temporal statistics per market from its monthly revenue),
``segment_profiles`` (per-segment size, means, dominant region) and ``describe`` (a sentence built
from the features on which a segment differs most from all markets).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.segmentation.clustering import STATIC_FEATURES

#: Temporal statistics per market (``market_trends``); all unit-free.
TREND_FEATURES = ("trend_slope", "recent_growth", "volatility", "seasonality")

#: Months compared by ``recent_growth``: the last ``RECENT_MONTHS`` against the ``RECENT_MONTHS`` before.
RECENT_MONTHS = 3

#: A feature enters a description when the segment's mean is at least this many population
#: standard deviations from the mean over all markets.
DESCRIBE_MIN_Z = 0.25


def market_trends(revenue: np.ndarray, seq_len: int) -> pd.DataFrame:
    """Temporal statistics of each market's monthly revenue, ``(n_markets, n_months)`` in currency.

    The last column is the run's month; months without sales are 0. Every statistic is relative
    to the market's own level, so a small and a large market with the same shape score alike, and
    months without sales do not dominate as they would on a log scale. One row per market:

    - ``trend_slope``: least-squares slope of revenue over the last ``seq_len`` months divided by
      the window's mean monthly revenue (0.02 = the trend adds 2 % of an average month each month).
    - ``recent_growth``: revenue of the last 3 months over the 3 before, minus 1 (fraction;
      NaN when the earlier 3 months had no sales).
    - ``volatility``: coefficient of variation (std / mean) of monthly revenue over the window.
    - ``seasonality``: seasonal strength 0-1 over the whole history,
      ``max(0, 1 - var(R) / var(S + R))`` (Wang, Smith & Hyndman 2006), with S the month-of-year
      means and R the residual of a least-squares fit of linear trend + S; NaN with under 24
      months of history.

    Statistics of a market without sales in the window are NaN. Raises ``ValueError`` for a
    window outside ``[6, n_months]``, NaN/inf or a non-2-D input.
    """
    revenue = np.asarray(revenue, dtype=np.float64)
    if revenue.ndim != 2:
        raise ValueError(f"revenue must be (n_markets, n_months), got shape {revenue.shape}")
    n_markets, n_months = revenue.shape
    if not 2 * RECENT_MONTHS <= seq_len <= n_months:
        raise ValueError(f"seq_len={seq_len} must be in [{2 * RECENT_MONTHS}, {n_months}] (months of history)")
    if not np.isfinite(revenue).all():
        raise ValueError("monthly revenue contains NaN or infinite values")
    window = revenue[:, -seq_len:]
    level = window.mean(axis=1)
    level = np.where(np.abs(level) > 0, level, np.nan)  # no sales in the window: undefined, not inf
    t = np.arange(seq_len, dtype=np.float64) - (seq_len - 1) / 2
    slope = (window - window.mean(axis=1, keepdims=True)) @ t / (t @ t) / level
    volatility = window.std(axis=1) / np.abs(level)

    recent = revenue[:, -RECENT_MONTHS:].sum(axis=1)
    before = revenue[:, -2 * RECENT_MONTHS : -RECENT_MONTHS].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.where(before > 0, recent / before - 1.0, np.nan)

    seasonality = np.full(n_markets, np.nan)
    if n_months >= 24:
        # One least-squares fit with a design shared by all markets: a linear trend plus a mean per
        # month of year (counted back from the run's month; the calendar month does not matter).
        phase = (np.arange(n_months) - (n_months - 1)) % 12
        dummies = (phase[:, None] == np.arange(12)).astype(np.float64)
        design = np.hstack([np.arange(n_months, dtype=np.float64)[:, None], dummies])
        coef = np.linalg.lstsq(design, revenue.T, rcond=None)[0]  # (13, n_markets)
        season = dummies @ coef[1:]
        season -= season.mean(axis=0)
        resid = revenue.T - design @ coef
        total = (season + resid).var(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            strength = np.clip(1.0 - resid.var(axis=0) / total, 0.0, 1.0)
        seasonality = np.where(total > 1e-12 * np.maximum(revenue.var(axis=1), 1.0), strength, 0.0)
    return pd.DataFrame(
        {"trend_slope": slope, "recent_growth": growth, "volatility": volatility, "seasonality": seasonality}
    )


def _mode(values: pd.Series) -> object:
    counts = values.dropna().value_counts()
    return counts.index[0] if len(counts) else None


def segment_profiles(markets: pd.DataFrame) -> pd.DataFrame:
    """One row per SegmentID from one row per market.

    ``markets`` has ``segment_id`` (-1 = unassigned), ``market_name``, ``country``,
    ``territory_group``, the ``STATIC_FEATURES`` and ``TREND_FEATURES``. Returns ``segment_id``,
    ``n_markets``, ``share`` (0-1 of all markets), the mean of every static feature and the median
    of every temporal one (units as in ``STATIC_FEATURES`` and ``market_trends``), ``main_group`` / ``main_country``
    (most common value), ``group_share`` (0-1 of the segment in its main group), ``examples``
    (three market names) and ``description`` (``describe``). Raises ``ValueError`` naming missing
    columns or for an empty frame.
    """
    needed = ("segment_id", "market_name", "country", "territory_group", *STATIC_FEATURES, *TREND_FEATURES)
    missing = [c for c in needed if c not in markets]
    if missing:
        raise ValueError(f"markets frame is missing column(s) {missing}")
    if markets.empty:
        raise ValueError("no markets to profile")
    features = [*STATIC_FEATURES, *TREND_FEATURES]
    # Warehouse NUMBER columns can arrive as Decimal; profiles are float statistics.
    values = markets[features].apply(pd.to_numeric, errors="coerce").astype("float64")
    frame = pd.concat([markets[["segment_id", "market_name", "country", "territory_group"]], values], axis=1)
    grouped = frame.groupby("segment_id", sort=True)
    # Medians for the temporal ratios: one market growing from almost nothing would otherwise set
    # its segment's "recent growth" on its own.
    profiles = pd.concat([grouped[list(STATIC_FEATURES)].mean(), grouped[list(TREND_FEATURES)].median()], axis=1)
    profiles.insert(0, "n_markets", grouped.size())
    profiles.insert(1, "share", profiles["n_markets"] / len(frame))
    profiles["main_group"] = grouped["territory_group"].agg(_mode)
    profiles["group_share"] = grouped.apply(
        lambda g: float((g["territory_group"] == _mode(g["territory_group"])).mean()), include_groups=False
    )
    profiles["main_country"] = grouped["country"].agg(_mode)
    profiles["examples"] = grouped["market_name"].agg(lambda s: ", ".join(sorted(s.dropna().astype(str))[:3]))
    profiles = profiles.reset_index()
    profiles["description"] = describe(profiles, values)
    return profiles


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


# (words when above the population, words when below, how to print the value). Trend words follow
# the sign of the segment's own value, not its rank: "declining" must mean sales actually fall.
_PHRASES: dict[str, tuple[str, str, object]] = {
    "avg_discount": ("high discounts", "low discounts", lambda v: f"{100 * v:.1f}%"),
    "platinum_share": ("a high Platinum share", "a low Platinum share", _pct),
    "gold_share": ("a high Gold share", "a low Gold share", _pct),
    "silver_share": ("a high Silver share", "a low Silver share", _pct),
    "avg_ltv": ("high customer lifetime value", "low customer lifetime value", lambda v: f"{v:,.0f}"),
    "total_product_lines": ("a broad product range", "a narrow product range", lambda v: f"{v:.1f} lines"),
    "total_subcategories": ("many subcategories", "few subcategories", lambda v: f"{v:.1f}"),
    "volatility": ("volatile sales", "steady sales", lambda v: f"monthly revenue varies {_pct(v)} around its mean"),
    "seasonality": ("strongly seasonal sales", "little seasonality", lambda v: f"{_pct(v)} of variance"),
}


def _trend_phrase(feature: str, value: float) -> str:
    if feature == "trend_slope":
        words = "growing sales" if value > 0.005 else "declining sales" if value < -0.005 else "flat sales"
        return f"{words} ({100 * value:+.1f}%/month)"
    words = "a recent upturn" if value > 0 else "a recent downturn"
    return f"{words} ({100 * value:+.0f}% on the previous {RECENT_MONTHS} months)"


def describe(profiles: pd.DataFrame, markets: pd.DataFrame, max_features: int = 3) -> list[str]:
    """A one-line description per profile row, e.g. "Europe markets with declining sales
    (-2.1%/month) and a high Platinum share (31% vs 18%)".

    ``profiles`` is ``segment_profiles``' frame (feature means, ``main_group``, ``group_share``);
    ``markets`` the per-market feature values the population statistics come from. A feature is
    named when the segment's value is at least ``DESCRIBE_MIN_Z`` population standard deviations
    from the population's centre (mean; median for temporal features), the ``max_features``
    largest first, each with its value (and the population's, for static features). Unassigned
    markets (SegmentID -1) are called so.
    """
    # The population's centre is taken the way profiles are: means of static, medians of temporal features.
    mean = markets.mean()
    trends = [c for c in TREND_FEATURES if c in markets]
    mean[trends] = markets[trends].median()
    std = markets.std(ddof=0)
    # A feature equal in every market (up to rounding) says nothing about any segment.
    std = std.where(std > 1e-9 * np.maximum(mean.abs(), 1.0))
    out = []
    for _, row in profiles.iterrows():
        z = ((row[list(mean.index)].astype("float64") - mean) / std).dropna()
        top = z[z.abs() >= DESCRIBE_MIN_Z].abs().sort_values(ascending=False, kind="stable").index[:max_features]
        parts = []
        for feature in top:
            value = float(row[feature])
            if feature in ("trend_slope", "recent_growth"):
                parts.append(_trend_phrase(feature, value))
                continue
            high, low, fmt = _PHRASES[feature]
            words = high if z[feature] > 0 else low
            if feature in STATIC_FEATURES:
                parts.append(f"{words} ({fmt(value)} vs {fmt(float(mean[feature]))})")
            else:
                parts.append(f"{words} ({fmt(value)})")
        if row["segment_id"] == -1:
            subject = "Unassigned markets (noise)"
        elif row["main_group"] is not None and row["group_share"] >= 0.6:
            # "Mostly": the examples may well include a market from another region.
            subject = f"{'' if row['group_share'] == 1.0 else 'Mostly '}{row['main_group']} markets"
        else:
            subject = "Markets from several regions"
        if not parts:
            out.append(f"{subject} close to the average on every feature")
        else:
            tail = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            out.append(f"{subject} with {tail}")
    return out
