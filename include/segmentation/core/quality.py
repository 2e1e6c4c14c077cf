"""Data-quality checks between extraction and training, each with a policy from the configuration.

A check produces a ``Finding``: what it counted (fact lines, customers or markets) and which markets
are at fault. ``apply_policies`` turns findings into a decision per the ``QualityConfig``: ``fail``
stops the run before anything is trained or written, ``exclude`` drops the markets (named in the log,
``excluded.parquet`` and the run record), ``warn`` only logs and records. All checks are vectorised:
their cost does not grow with a Python loop over markets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.segmentation.config import QualityConfig
from include.segmentation.core.features import STATIC_FEATURES

#: Every check, in the order it is reported, with what it flags.
CHECKS: dict[str, str] = {
    "null_keys": "fact lines with a NULL (or blank) market key, a NULL customer or product key, order date or amount",
    "undated": "fact lines dated outside the calendar dimension (future-dated or mistyped)",
    "empty_month": "no sales at all in the run's month (is it loaded yet?)",
    "duplicate_lines": "fact lines sharing their line key with another line",
    "unknown_products": "fact lines whose product is not in the product dimension",
    "discount_range": "fact lines with a discount outside 0-1 (fraction) or below 0 (amount)",
    "outlier_lines": "fact lines with an outlying amount (robust z-score of the log amount above outlier_z)",
    "unknown_loyalty": "customers with a NULL loyalty status or one outside loyalty_values",
    "bad_lifetime_value": "customers with a NULL or negative lifetime value",
    "negative_months": "markets with negative net revenue (returns) in a month of the window",
    "constant_series": "markets with exactly the same revenue in every month of the window",
    "inactive": "markets with sales in fewer than min_active_months months of the window",
    "thin": "markets with too few order lines or customers in the window to describe (thin_min_lines, "
    "thin_min_customers)",
    "no_static": "markets with monthly sales in the history but no static features in the window",
    "no_sequence": "markets with static features but no monthly sales in the history",
    "unknown_customers": "markets none of whose customers is in the customer dimension",
    "missing_static": "markets with a NULL, non-finite or absurdly large (> 1e100) static feature",
    "fraction_range": "markets with a fraction-kind static feature above 1 (a share or rate above 100 %: wrong units?)",
}

#: Offending market keys quoted in messages.
N_EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    """What one check found: ``count`` things (``unit``) in ``markets`` (empty: no market to blame).

    ``reasons``: why a market was flagged in its own numbers (market key -> text, e.g. "sales in 3 of
    the 12 window months, at least 6 needed"); markets without one get the check's ``CHECKS`` text.
    """

    check: str
    count: int
    unit: str
    markets: tuple[str, ...] = ()
    detail: str = ""
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False)

    def message(self) -> str:
        """E.g. "duplicate_lines: 12 fact lines in 3 market(s), e.g. 'US-WA', 'US-OR', 'US-CA'"."""
        examples = ", ".join(repr(m) for m in self.markets[:N_EXAMPLES])
        examples += ", ..." if len(self.markets) > N_EXAMPLES else ""
        if self.unit == "markets":
            text = f"{self.check}: {len(self.markets)} market(s), e.g. {examples}"
        else:
            text = f"{self.check}: {self.count} {self.unit}"
            text += f" in {len(self.markets)} market(s), e.g. {examples}" if self.markets else ""
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass
class QualityReport:
    """The decision: markets excluded (with the check and reason), and what each check found."""

    excluded: pd.DataFrame  # columns market_key, check, reason; one row per (market, check)
    results: dict[str, dict] = field(default_factory=dict)  # check -> policy, count, unit, n_markets, examples
    failures: list[str] = field(default_factory=list)  # messages of checks whose policy is "fail"
    warnings: list[str] = field(default_factory=list)

    @property
    def excluded_markets(self) -> set[str]:
        return set(self.excluded["market_key"])


def _finding(check: str, unit: str, keys: np.ndarray, mask: np.ndarray, count: int | None = None) -> Finding:
    markets = tuple(sorted(str(k) for k in np.asarray(keys, dtype=object)[mask]))
    return Finding(check, len(markets) if count is None else int(count), unit, markets)


def market_findings(
    static: pd.DataFrame,
    markets: np.ndarray,
    revenue: np.ndarray,
    active: np.ndarray,
    seq_len: int,
    min_active_months: int,
    n_lines: np.ndarray | None = None,
    min_lines: int = 0,
    min_customers: int = 0,
    features: tuple[str, ...] = STATIC_FEATURES,
    fractions: tuple[str, ...] = (),
    month: pd.Period | None = None,
) -> list[Finding]:
    """Checks on the extracted data itself.

    ``static`` is ``static.parquet`` (``market_key``, the ``features`` columns, ``n_known_customers``);
    ``markets`` ``(n,)`` keys of the monthly grid, ``revenue`` ``(n, n_months)`` net revenue per
    month (currency) and ``active`` ``(n, n_months)`` bool (months with sale lines), the last column
    being the run's month. ``n_lines`` ``(n, n_months)`` order lines per month (``None``: not
    counted) and ``static["n_customers"]`` (distinct customers in the window) feed ``thin``: a market
    with fewer than ``min_lines`` order lines summed over the last ``seq_len`` months, or fewer than
    ``min_customers`` customers, is too thin to describe (a threshold of 0 turns that half off).
    ``fractions`` names the features of kind fraction (0-1), checked by ``fraction_range``. ``month``
    (the run's month) names the window's months in messages.
    Returns findings for ``empty_month``, ``negative_months``, ``constant_series``, ``inactive``,
    ``thin``, ``no_static``, ``no_sequence``, ``unknown_customers``, ``missing_static`` and
    ``fraction_range``.
    """
    markets = np.asarray(markets, dtype=object).astype(str)
    static_keys = static["market_key"].astype(str).to_numpy()
    window, window_active = revenue[:, -seq_len:], active[:, -seq_len:]
    # Both sides numpy str arrays: np.isin then sorts (n log n); against an object array it compares
    # every pair (27 s at 20,000 markets, hours at a million).
    has_static = np.isin(markets, static_keys.astype(str))
    # NUMBER columns may arrive as Decimal or None; compare them as floats (NULL -> NaN).
    values = static[list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    known = pd.to_numeric(static["n_known_customers"], errors="coerce").fillna(0).to_numpy()
    # Beyond 1e100 a square overflows the variance: no real market has such a feature, so it is bad data.
    unusable = ~(np.abs(values) <= 1e100)  # NaN compares False: counted
    bad_columns = [name for name, bad in zip(features, unusable.any(axis=0), strict=True) if bad]
    constant = window_active.all(axis=1) & (np.ptp(window, axis=1) <= 1e-9 * np.abs(window).max(axis=1))
    empty = Finding("empty_month", 0, "months")
    if not active[:, -1].any():
        with_sales = np.flatnonzero(active.any(axis=0))
        gap = f"{active.shape[1] - 1 - with_sales[-1]} month(s) before it" if len(with_sales) else "none in the history"
        empty = Finding("empty_month", 1, "run month without sales", (), f"latest month with sales: {gap}")
    return [
        empty,
        _finding("negative_months", "markets", markets, (window < 0).any(axis=1)),
        _finding("constant_series", "markets", markets, constant),
        _inactive(markets, window_active, min_active_months, active.any(axis=0), month),
        _thin(static, markets, n_lines, seq_len, min_lines, min_customers),
        _finding("no_static", "markets", markets, ~has_static),
        _finding("no_sequence", "markets", static_keys, ~np.isin(static_keys.astype(str), markets)),
        _finding("unknown_customers", "markets", static_keys, known == 0),
        Finding(
            "missing_static",
            int(unusable.any(axis=1).sum()),
            "markets",
            tuple(sorted(static_keys[unusable.any(axis=1)])),
            f"in {', '.join(bad_columns)}" if bad_columns else "",
        ),
        _above_one(static, static_keys, fractions),
    ]


def _inactive(
    markets: np.ndarray,
    window_active: np.ndarray,
    min_active_months: int,
    any_sales: np.ndarray,
    month: pd.Period | None,
) -> Finding:
    """``inactive``: markets with sales in fewer than ``min_active_months`` of the window's months, each
    with its own count; the detail says when the window starts before the data (its first months have
    no sales in any market, ``any_sales`` ``(n_months,)`` over the history)."""
    seq_len = window_active.shape[1]
    counts = window_active.sum(axis=1)
    flagged = counts < min_active_months
    finding = _finding("inactive", "markets", markets, flagged)
    reasons = {
        str(m): f"sales in {n} of the {seq_len} window months (at least {min_active_months} needed)"
        for m, n in zip(markets[flagged], counts[flagged], strict=True)
    }
    window_sales = np.asarray(any_sales, dtype=bool)[-seq_len:]
    before = int(np.argmax(window_sales)) if window_sales.any() else seq_len
    detail = ""
    if finding.count and before:
        span = f" ({month - seq_len + 1} to {month - seq_len + before})" if month is not None else ""
        start = f" in {month - seq_len + before + 1}" if month is not None and before < seq_len else ""
        detail = (
            f"{before} of the {seq_len} window months{span} precede the data's first sale{start}: "
            "the window starts before the data; a later month or a shorter seq_len fits it"
        )
    return Finding(finding.check, finding.count, finding.unit, finding.markets, detail, reasons)


def _above_one(static: pd.DataFrame, keys: np.ndarray, fractions: tuple[str, ...]) -> Finding:
    """``fraction_range``: markets with a fraction feature above 1, the largest value per feature quoted."""
    if not fractions:
        return Finding("fraction_range", 0, "markets")
    values = static[list(fractions)].apply(pd.to_numeric, errors="coerce")
    above = values > 1 + 1e-9  # NaN compares False (missing_static counts it)
    finding = _finding("fraction_range", "markets", keys, above.any(axis=1).to_numpy())
    if not finding.count:
        return finding
    worst = "; ".join(
        f"{name} up to {values.loc[above[name], name].max():.3g} in {int(above[name].sum())} market(s)"
        for name in fractions
        if above[name].any()
    )
    return Finding(finding.check, finding.count, finding.unit, finding.markets, worst)


def _thin(
    static: pd.DataFrame,
    markets: np.ndarray,
    n_lines: np.ndarray | None,
    seq_len: int,
    min_lines: int,
    min_customers: int,
) -> Finding:
    """``thin``: markets of the grid with under ``min_lines`` order lines in the window or under
    ``min_customers`` customers; the detail quotes the thresholds and each example's numbers."""
    lines = np.full(len(markets), np.nan) if n_lines is None else np.asarray(n_lines, np.float64)[:, -seq_len:].sum(1)
    customers = np.full(len(markets), np.nan)
    if "n_customers" in static:
        # A market without static features has no customer count (``no_static`` flags it): NaN, not 0.
        per_market = pd.Series(
            pd.to_numeric(static["n_customers"], errors="coerce").to_numpy(dtype=np.float64),
            index=static["market_key"].astype(str).to_numpy(),
        )
        customers = per_market[~per_market.index.duplicated()].reindex(markets).to_numpy()
    thin = (lines < min_lines) | (customers < min_customers)  # NaN compares False: not counted
    finding = _finding("thin", "markets", markets, thin)
    if not finding.markets:
        return finding
    needed = " and ".join(
        text
        for text, on in (
            (f"{min_lines} order lines", min_lines > 0 and n_lines is not None),
            (f"{min_customers} customers", min_customers > 0),
        )
        if on
    )
    order = np.argsort(markets[thin], kind="stable")[:N_EXAMPLES]  # the examples the message quotes

    def number(value: float, unit: str) -> str:
        return f"{unit}s unknown" if np.isnan(value) else f"{value:,.0f} {unit}{'' if value == 1 else 's'}"

    examples = "; ".join(
        f"{str(m)!r} {number(n, 'line')}, {number(c, 'customer')}"
        for m, n, c in zip(markets[thin][order], lines[thin][order], customers[thin][order], strict=True)
    )
    reasons = {
        str(m): f"{number(n, 'order line')}, {number(c, 'customer')} in the {seq_len}-month window "
        f"(at least {needed} needed)"
        for m, n, c in zip(markets[thin], lines[thin], customers[thin], strict=True)
    }
    rule = needed.replace(" and ", " or ")
    detail = f"fewer than {rule} in the {seq_len}-month window: {examples}"
    return Finding("thin", finding.count, "markets", finding.markets, detail, reasons)


def _count(value: object) -> int:
    return 0 if value is None or pd.isna(value) else int(value)


def warehouse_findings(per_market: pd.DataFrame, table: pd.Series) -> list[Finding]:
    """Checks the warehouse counted (``sql/quality_markets.sql`` and ``sql/quality_table.sql``).

    ``per_market`` has ``market_key`` and the counts ``null_keys``, ``duplicate_lines``,
    ``unknown_products``, ``discount_range``, ``outlier_lines``, ``unknown_loyalty`` and
    ``bad_lifetime_value``, and ``line_limit`` (the line amount, in currency, above which a line is an
    outlier); ``table`` has ``null_keys`` (lines with a NULL market key or date), ``undated`` and
    ``latest_undated``.
    """
    keys = per_market["market_key"].astype(str).to_numpy()
    counts = {
        c: pd.to_numeric(per_market[c]).fillna(0).to_numpy(dtype=np.int64)
        for c in per_market
        if c not in ("market_key", "line_limit")
    }
    table_nulls, undated = _count(table.get("null_keys")), _count(table.get("undated"))  # SUM() of no rows is NULL
    latest = table.get("latest_undated")
    null_keys = _finding("null_keys", "fact lines", keys, counts["null_keys"] > 0, counts["null_keys"].sum())
    null_keys = Finding(
        "null_keys",
        null_keys.count + table_nulls,
        "fact lines",
        null_keys.markets,
        f"{table_nulls} with a NULL market key or order date" if table_nulls else "",
    )
    return [
        null_keys,
        Finding("undated", undated, "fact lines", (), f"latest {latest}" if undated and pd.notna(latest) else ""),
        *(
            _finding(check, "fact lines", keys, counts[check] > 0, counts[check].sum())
            for check in ("duplicate_lines", "unknown_products", "discount_range")
        ),
        _outliers(keys, counts["outlier_lines"], per_market["line_limit"]),
        _finding("unknown_loyalty", "customers", keys, counts["unknown_loyalty"] > 0, counts["unknown_loyalty"].sum()),
        _finding(
            "bad_lifetime_value",
            "customers",
            keys,
            counts["bad_lifetime_value"] > 0,
            counts["bad_lifetime_value"].sum(),
        ),
    ]


def _outliers(keys: np.ndarray, counts: np.ndarray, limits: pd.Series) -> Finding:
    """``outlier_lines``, with the amount above which a line counts as one."""
    finding = _finding("outlier_lines", "fact lines", keys, counts > 0, counts.sum())
    limit = pd.to_numeric(limits, errors="coerce").max()
    if finding.count and pd.notna(limit):
        finding = Finding(finding.check, finding.count, finding.unit, finding.markets, f"amounts above {limit:,.0f}")
    return finding


def excluded_share_problem(report: QualityReport, n_markets: int, max_share: float) -> str | None:
    """A failure message when the checks excluded more than ``max_share`` (0-1) of ``n_markets``, with the
    checks that excluded most; else None."""
    excluded = report.excluded_markets
    if not n_markets or len(excluded) / n_markets <= max_share:
        return None
    top = report.excluded.drop_duplicates(["market_key", "check"])["check"].value_counts()
    reasons = ", ".join(f"{check} {n}" for check, n in top.head(3).items())
    return (
        f"the data-quality checks excluded {len(excluded)} of {n_markets} markets ({len(excluded) / n_markets:.0%}), "
        f"more than quality.max_excluded_share ({max_share:.0%}); most excluded by: {reasons}. Fix the data, or "
        "change those checks' policies or quality.max_excluded_share"
    )


def apply_policies(findings: list[Finding], policies: QualityConfig) -> QualityReport:
    """Decide what each finding means under ``policies`` (one ``fail`` / ``exclude`` / ``warn`` per check).

    A finding with a zero count passes. ``exclude`` on a finding that names no market (lines with a
    NULL market key, say) cannot drop anything, so it fails instead. Returns the ``QualityReport``;
    raising is left to the caller so the report can be recorded first.
    """
    excluded: list[tuple[str, str, str]] = []
    report = QualityReport(excluded=pd.DataFrame(columns=["market_key", "check", "reason"]))
    for f in sorted(findings, key=lambda f: list(CHECKS).index(f.check)):
        policy = getattr(policies, f.check)
        report.results[f.check] = {
            "policy": policy,
            "count": f.count,
            "unit": f.unit,
            "n_markets": len(f.markets),
            "examples": list(f.markets[:N_EXAMPLES]),
        }
        if f.count == 0:
            continue
        text = f"{f.message()}: {CHECKS[f.check]}"
        if policy == "fail" or (policy == "exclude" and not f.markets):
            report.failures.append(text)
        elif policy == "exclude":
            excluded += [(m, f.check, f.reasons.get(m, CHECKS[f.check])) for m in f.markets]
            report.warnings.append(f"{text}; excluded")
        else:
            report.warnings.append(text)
    if excluded:
        report.excluded = pd.DataFrame(excluded, columns=["market_key", "check", "reason"])
    return report
