"""Whether a month's segments need a person's approval before they are written.

Downstream, SegmentIDs drive campaigns, quotas and dashboards: a month that moves many markets, changes
the number of segments, or opens or closes a segment changes what those consumers see. ``change`` sums
up the month against the one it continues from as such a consumer feels it; ``approval_reasons``
turns that into the reasons to ask (``config.ApprovalConfig``); ``request_text`` words the request.
Pure: frames and numbers in, text out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from include.segmentation.config import ApprovalConfig

#: Moves (from one SegmentID to another) quoted in a request.
TOP_MOVES = 5


@dataclass(frozen=True)
class Change:
    """This month's segments against the previous month's (``previous_month`` None: the first month).

    ``stability``: share 0-1 of the markets segmented in both months that kept their SegmentID (None
    without a previous month); ``appeared`` / ``disappeared``: SegmentIDs (unassigned left out) in
    only this / only the previous month; ``excluded_share``: share 0-1 of the month's markets the
    quality gate excluded; ``moves``: ``(from, to, markets)`` by size, at most ``TOP_MOVES``, labels
    as ``report.segment_label``; ``n_moved``: markets that changed SegmentID.
    """

    month: str
    previous_month: str | None
    k: int
    previous_k: int | None
    stability: float | None
    appeared: tuple[int, ...]
    disappeared: tuple[int, ...]
    excluded_share: float
    moves: tuple[tuple[str, str, int], ...]
    n_moved: int
    n_markets: int


def _label(value: float) -> str:
    return "unassigned" if pd.isna(value) or value < 0 else str(int(value))


def _ids(values: pd.Series) -> set[int]:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return {int(v) for v in numbers if v >= 0}


def change(
    month: str,
    segments: pd.DataFrame,
    previous: pd.DataFrame,
    metrics: dict,
    n_excluded: int,
) -> Change:
    """Sum up the month's change.

    ``segments``: this month's ``market_key``, ``segment_id`` (-1 unassigned) and ``previous_segment_id``
    (NaN: not segmented last month), one row per segmented market; ``previous``: the previous month's
    ``market_key``, ``segment_id`` (empty for the first month); ``metrics``: ``metrics.json``
    (``n_clusters``, ``previous_month``, ``stability``); ``n_excluded``: markets the quality gate
    excluded this month. k before is the number of SegmentIDs the previous month wrote (however this
    month's k was chosen: by the gap statistic or the ``n_clusters`` Param).
    """
    now = pd.to_numeric(segments["segment_id"], errors="coerce")
    before = pd.to_numeric(segments["previous_segment_id"], errors="coerce")
    moved = before.notna() & (before != now)
    pairs = pd.DataFrame({"from": before[moved].map(_label), "to": now[moved].map(_label)})
    counts = pairs.value_counts() if len(pairs) else pd.Series(dtype=int)
    # Largest first; ties in label order, so the same month always reads the same.
    ranked = sorted(((str(a), str(b), int(n)) for (a, b), n in counts.items()), key=lambda m: (-m[2], m[0], m[1]))
    first = metrics.get("previous_month") is None
    stability = metrics.get("stability")
    if stability is not None and not math.isfinite(float(stability)):
        stability = None  # no market in both months: nothing kept, nothing to compare
    n_all = len(segments) + n_excluded
    return Change(
        month=month,
        previous_month=metrics.get("previous_month"),
        k=int(metrics["n_clusters"]),
        previous_k=None if first else len(_ids(previous["segment_id"])) or None,
        stability=None if first or stability is None else float(stability),
        appeared=() if first else tuple(sorted(_ids(segments["segment_id"]) - _ids(previous["segment_id"]))),
        disappeared=() if first else tuple(sorted(_ids(previous["segment_id"]) - _ids(segments["segment_id"]))),
        excluded_share=n_excluded / n_all if n_all else 0.0,
        moves=tuple(ranked[:TOP_MOVES]),
        n_moved=int(moved.sum()),
        n_markets=len(segments),
    )


def approval_reasons(change: Change, config: ApprovalConfig) -> list[str]:
    """Why this month needs approval under ``config.mode``: [] writes at once.

    ``never``: []; ``always``: every month, with the change's reasons when there are any;
    ``on_change``: the change's reasons (a first month, with nothing to change, has none).
    """
    if config.mode == "never":
        return []
    reasons = []
    if change.previous_month is not None:
        if change.stability is not None and change.stability < config.min_kept_share:
            reasons.append(
                f"{change.stability:.0%} of markets kept their SegmentID (fewer than {config.min_kept_share:.0%})"
            )
        if change.previous_k is not None and change.previous_k != change.k:
            reasons.append(f"k changed from {change.previous_k} to {change.k}")
        if change.appeared:
            reasons.append(f"new segment(s) {', '.join(map(str, change.appeared))}")
        if change.disappeared:
            reasons.append(f"segment(s) {', '.join(map(str, change.disappeared))} no longer exist")
    if change.excluded_share > config.max_excluded_share:
        reasons.append(
            f"the quality gate excluded {change.excluded_share:.0%} of the markets "
            f"(more than {config.max_excluded_share:.0%})"
        )
    if config.mode == "always":
        return ["approval is required every month (approval: always)", *reasons]
    return reasons


def request_text(change: Change, reasons: Sequence[str], report_url: str) -> tuple[str, str]:
    """The approval request: (subject, body in Markdown) with the month, k before and after, stability,
    the reasons, the biggest moves and a link to the report."""
    subject = f"Approve the market segments of {change.month}?"
    k = f"{change.previous_k} -> {change.k}" if change.previous_k not in (None, change.k) else str(change.k)
    kept = f"{change.stability:.0%}" if change.stability is not None else "n/a (first month)"
    lines = [
        f"**{change.month}**: {change.n_markets} markets in {change.k} segments "
        f"(previous month: {change.previous_month or 'none'}).",
        "",
        f"- k: {k}",
        f"- kept their SegmentID: {kept} ({change.n_moved} markets moved)",
        f"- excluded by the quality gate: {change.excluded_share:.0%}",
        "",
        "**Why you are asked**",
        "",
        *[f"- {reason}" for reason in reasons],
    ]
    if change.moves:
        lines += ["", "**Biggest moves**", ""]
        lines += [f"- {n} market(s) from segment {a} to {b}" for a, b, n in change.moves]
    lines += [
        "",
        f"[Open the report]({report_url})",
        "",
        "Approve: the month is written to the warehouse. Reject: nothing is written and the previous "
        "month's segments stay current.",
    ]
    return subject, "\n".join(lines)
