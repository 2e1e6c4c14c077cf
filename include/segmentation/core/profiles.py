"""Segment profiles: what each segment looks like in business terms, and a one-line description.

Three pure steps: ``market_trends`` (temporal statistics and size per market from its monthly
revenue), ``segment_profiles`` (per-segment size, means, dominant region) and ``describe`` (a
sentence built from the features on which a segment differs most from all markets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from include.segmentation.config import DEFAULT_FEATURES, StaticFeature
from include.segmentation.core.features import SIZE_FEATURES, TREND_FEATURES

#: Per-market columns that ``segment_profiles`` summarises: means of the static features (the
#: configured ones, by default these) ...
MEAN_FEATURES = tuple(f.name for f in DEFAULT_FEATURES)
#: ... and medians of these (ratios and sizes are skewed: one market must not set its segment's value).
MEDIAN_FEATURES = (*TREND_FEATURES, *SIZE_FEATURES)

#: Months compared by ``recent_growth``: the last ``RECENT_MONTHS`` against the ``RECENT_MONTHS`` before.
RECENT_MONTHS = 3

#: A feature enters a description when the segment's mean is at least this many population
#: standard deviations from the mean over all markets.
DESCRIBE_MIN_Z = 0.25


def market_trends(revenue: np.ndarray, seq_len: int) -> pd.DataFrame:
    """Temporal statistics of each market's monthly revenue, ``(n_markets, n_months)`` in currency.

    The last column is the run's month; months without sales are 0. Revenue is net of returns, so
    a month (or a whole market) can be negative. Every statistic is relative to the market's own
    absolute level, the mean of ``|monthly revenue|`` over the window (the mean monthly revenue
    when no month is negative): a small and a large market with the same shape score alike, months
    without sales do not dominate as they would on a log scale, and a divisor is never negative,
    so the sign of a statistic is the sign of the change: rising net revenue has a positive slope
    and growth even when it is negative (returns shrinking). One row per market:

    - ``trend_slope``: least-squares slope of revenue over the last ``seq_len`` months divided by
      the absolute level (0.02 = the trend adds 2 % of an average month each month).
    - ``recent_growth``: revenue of the last 3 months minus that of the 3 before, over the sum of
      ``|revenue|`` of those 3 before (fraction; ``recent / before - 1`` when no month is
      negative; NaN when the earlier 3 months had no sales).
    - ``volatility``: standard deviation of monthly revenue over the window divided by the
      absolute level (the coefficient of variation when no month is negative).
    - ``seasonality``: seasonal strength 0-1 over the whole history,
      ``max(0, 1 - var(R) / var(S + R))`` (Wang, Smith & Hyndman 2006), with S the month-of-year
      means and R the residual of a least-squares fit of linear trend + S; NaN with under 24
      months of history.
    - ``avg_monthly_revenue``: mean monthly net revenue over the last ``seq_len`` months (currency;
      the market's size, ``SIZE_FEATURES``; 0 without sales in the window).

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
    mean = window.mean(axis=1)
    # The absolute level: positive whenever the window has sales, even when returns outweigh them
    # (a negative divisor would flip the sign of every statistic; |mean| could be ~0 when returns
    # cancel sales out).
    level = np.abs(window).mean(axis=1)
    level = np.where(level > 0, level, np.nan)  # no sales in the window: undefined, not inf
    t = np.arange(seq_len, dtype=np.float64) - (seq_len - 1) / 2
    slope = (window - mean[:, None]) @ t / (t @ t) / level
    volatility = window.std(axis=1) / level

    recent = revenue[:, -RECENT_MONTHS:].sum(axis=1)
    earlier = revenue[:, -2 * RECENT_MONTHS : -RECENT_MONTHS]
    scale = np.abs(earlier).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.where(scale > 0, (recent - earlier.sum(axis=1)) / scale, np.nan)

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
        {
            "trend_slope": slope,
            "recent_growth": growth,
            "volatility": volatility,
            "seasonality": seasonality,
            "avg_monthly_revenue": mean,
        }
    )


def _mode(values: pd.Series) -> object:
    counts = values.dropna().value_counts()
    return counts.index[0] if len(counts) else None


def segment_profiles(markets: pd.DataFrame, features: Sequence[StaticFeature] = DEFAULT_FEATURES) -> pd.DataFrame:
    """One row per SegmentID from one row per market.

    ``markets`` has ``segment_id`` (-1 = unassigned), ``market_name``, ``country``,
    ``territory_group``, the static ``features``' columns, ``TREND_FEATURES`` and ``SIZE_FEATURES``.
    Returns ``segment_id``, ``n_markets``, ``share`` (0-1 of all markets), the mean of every static
    feature and the median of every temporal one and of ``avg_monthly_revenue`` (units as each
    feature's ``kind`` and ``market_trends`` say), ``main_group`` / ``main_country``
    (most common value), ``group_share`` (0-1 of the segment in its main group), ``examples``
    (three market names) and ``description`` (``describe``). Raises ``ValueError`` naming missing
    columns or for an empty frame.
    """
    means = tuple(f.name for f in features)
    needed = ("segment_id", "market_name", "country", "territory_group", *means, *MEDIAN_FEATURES)
    missing = [c for c in needed if c not in markets]
    if missing:
        raise ValueError(f"markets frame is missing column(s) {missing}")
    if markets.empty:
        raise ValueError("no markets to profile")
    # Warehouse NUMBER columns can arrive as Decimal; profiles are float statistics.
    values = markets[[*means, *MEDIAN_FEATURES]].apply(pd.to_numeric, errors="coerce").astype("float64")
    frame = pd.concat([markets[["segment_id", "market_name", "country", "territory_group"]], values], axis=1)
    grouped = frame.groupby("segment_id", sort=True)
    # Medians for the temporal ratios and sizes: one market growing from almost nothing, or one very
    # large market, would otherwise set its segment's "recent growth" or size on its own.
    profiles = pd.concat([grouped[list(means)].mean(), grouped[list(MEDIAN_FEATURES)].median()], axis=1)
    profiles.insert(0, "n_markets", grouped.size())
    profiles.insert(1, "share", profiles["n_markets"] / len(frame))
    profiles["main_group"] = grouped["territory_group"].agg(_mode)
    profiles["group_share"] = grouped.apply(
        lambda g: float((g["territory_group"] == _mode(g["territory_group"])).mean()), include_groups=False
    )
    profiles["main_country"] = grouped["country"].agg(_mode)
    profiles["examples"] = grouped["market_name"].agg(lambda s: ", ".join(sorted(s.dropna().astype(str))[:3]))
    profiles = profiles.reset_index()
    profiles["description"] = describe(profiles, values, phrases=phrases(features))
    return profiles


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _signed_log(x: object) -> object:
    return np.sign(x) * np.log1p(np.abs(x))


# (words when above the population, words when below, how to print a value, how to print the pair).
# Trend words follow the sign of the segment's own value, not its rank: "declining" must mean sales
# actually fall (None: chosen by ``_trend_words``).
_PHRASES: dict[str, tuple[str | None, str | None, Callable[[float], str], str]] = {
    "avg_discount": ("high discounts", "low discounts", lambda v: f"{100 * v:.1f}%", "{v} vs {c}"),
    "platinum_share": ("a high Platinum share", "a low Platinum share", _pct, "{v} vs {c}"),
    "gold_share": ("a high Gold share", "a low Gold share", _pct, "{v} vs {c}"),
    "silver_share": ("a high Silver share", "a low Silver share", _pct, "{v} vs {c}"),
    "avg_ltv": ("high customer lifetime value", "low customer lifetime value", lambda v: f"{v:,.0f}", "{v} vs {c}"),
    "total_product_lines": (
        "a broad product range",
        "a narrow product range",
        lambda v: f"{v:.1f} lines",
        "{v} vs {c}",
    ),
    "total_subcategories": ("many subcategories", "few subcategories", lambda v: f"{v:.1f}", "{v} vs {c}"),
    "trend_slope": (None, None, lambda v: f"{100 * v:+.1f}%", "{v}/month vs {c}"),
    "recent_growth": (
        None,
        None,
        lambda v: f"{100 * v:+.0f}%",
        f"{{v}} on the previous {RECENT_MONTHS} months vs {{c}}",
    ),
    "volatility": ("volatile sales", "steady sales", _pct, "monthly revenue varies {v} around its level vs {c}"),
    "seasonality": ("strongly seasonal sales", "little seasonality", _pct, "{v} of variance vs {c}"),
    "avg_monthly_revenue": ("high revenue", "low revenue", lambda v: f"{v:,.0f}", "avg {v}/month vs {c}"),
}


#: How a configured feature of each kind is worded when the seed's phrases do not cover it.
_KIND_PHRASES: dict[str, tuple[str, str, Callable[[float], str]]] = {
    "fraction": ("a high {w}", "a low {w}", lambda v: f"{100 * v:.1f}%"),
    "currency": ("high {w}", "low {w}", lambda v: f"{v:,.0f}"),
    "count": ("many {w}", "few {w}", lambda v: f"{v:.1f}"),
    "ratio": ("high {w}", "low {w}", lambda v: f"{v:.2f}"),
}


def phrases(features: Sequence[StaticFeature]) -> dict[str, tuple[str | None, str | None, Callable[[float], str], str]]:
    """The words and number formats ``describe`` uses: the seed's phrases for its own features and the
    temporal ones, and for any other feature words from its label and a format from its kind
    (fraction as a percentage, currency with thousands separators)."""
    out = dict(_PHRASES)
    for f in features:
        if f.name not in _PHRASES:
            high, low, fmt = _KIND_PHRASES[f.kind]
            out[f.name] = (high.format(w=f.words), low.format(w=f.words), fmt, "{v} vs {c}")
    return out


def _trend_words(feature: str, value: float) -> str:
    # Under half a percent (a month, or on the previous months) is no direction worth a word.
    if feature == "trend_slope":
        return "growing sales" if value > 0.005 else "declining sales" if value < -0.005 else "roughly flat sales"
    return "a recent upturn" if value > 0.005 else "a recent downturn" if value < -0.005 else "no recent change"


def describe(
    profiles: pd.DataFrame,
    markets: pd.DataFrame,
    max_features: int = 3,
    phrases: dict[str, tuple[str | None, str | None, Callable[[float], str], str]] | None = None,
) -> list[str]:
    """A one-line description per profile row, e.g. "Europe markets with declining sales
    (-2.1%/month vs +0.4%) and a high Platinum share (31% vs 18%)".

    ``profiles`` is ``segment_profiles``' frame (feature means and medians, ``main_group``,
    ``group_share``); ``markets`` the per-market feature values the population statistics come from.
    The population's centre is taken the way profiles are: the mean of a static feature, the median
    of a temporal one and of ``avg_monthly_revenue``. A feature is named when the segment's value is
    at least ``DESCRIBE_MIN_Z`` population standard deviations from that centre, the
    ``max_features`` largest first, each with the segment's value and the centre's. Sizes are
    compared on a signed log scale (they span orders of magnitude: on the raw scale the largest
    markets would set the spread alone); the centre is the log of the median, so "high" still
    means above the median printed. Words never contradict the numbers: "high"/"low" follow the
    printed comparison, trend words the sign of the segment's own value, and a feature whose two
    printed values are equal is not named. Unassigned markets (SegmentID -1) are called so.
    ``phrases`` (``phrases(features)``; default: the seed's) word each feature.
    """
    phrases = phrases or _PHRASES
    centre = markets.mean()
    medians = [c for c in MEDIAN_FEATURES if c in markets]
    centre[medians] = markets[medians].median()
    sizes = [c for c in SIZE_FEATURES if c in markets]
    scaled = markets.copy()
    scaled[sizes] = _signed_log(markets[sizes])
    scaled_centre = centre.copy()
    scaled_centre[sizes] = _signed_log(centre[sizes])
    std = scaled.std(ddof=0)
    # A feature equal in every market (up to rounding) says nothing about any segment.
    std = std.where(std > 1e-9 * np.maximum(scaled_centre.abs(), 1.0))
    out = []
    for _, row in profiles.iterrows():
        values = row[list(centre.index)].astype("float64")
        scaled_values = values.copy()
        scaled_values[sizes] = _signed_log(values[sizes])
        z = ((scaled_values - scaled_centre) / std).dropna()
        parts = []
        for feature in z[z.abs() >= DESCRIBE_MIN_Z].abs().sort_values(ascending=False, kind="stable").index:
            high, low, fmt, pair = phrases[feature]
            value, mid = fmt(float(values[feature])), fmt(float(centre[feature]))
            if value == mid:
                continue  # no difference a reader could see
            words = _trend_words(feature, float(values[feature])) if high is None else high if z[feature] > 0 else low
            parts.append(f"{words} ({pair.format(v=value, c=mid)})")
            if len(parts) == max_features:
                break
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
