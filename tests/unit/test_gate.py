"""The approval gate's decision (``core.gate``): when a month's SegmentIDs change enough to ask a person."""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.segmentation.config import ApprovalConfig
from include.segmentation.core.gate import approval_reasons, change, request_text

ON_CHANGE = ApprovalConfig(mode="on_change")


def _month(now: dict[str, int], before: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    segments = pd.DataFrame(
        {
            "market_key": list(now),
            "segment_id": list(now.values()),
            "previous_segment_id": [before.get(k, np.nan) for k in now],
        }
    )
    previous = pd.DataFrame({"market_key": list(before), "segment_id": list(before.values())})
    return segments, previous


def _metrics(k: int, stability: float | None, previous_month: str | None = "2013-11"):
    # k before is counted from the previous month's SegmentIDs, not taken from the metrics
    return {"n_clusters": k, "stability": stability, "previous_month": previous_month}


def test_an_unchanged_month_is_written_without_asking():
    before = {f"M{i}": 1 + i % 3 for i in range(30)}
    segments, previous = _month(before, before)
    summary = change("2013-12", segments, previous, _metrics(3, 1.0), n_excluded=0)
    assert summary.n_moved == 0
    assert summary.appeared == summary.disappeared == ()
    assert approval_reasons(summary, ON_CHANGE) == []
    assert approval_reasons(summary, ApprovalConfig(mode="never")) == []
    assert approval_reasons(summary, ApprovalConfig(mode="always")) == [
        "approval is required every month (approval: always)"
    ]


def test_a_reshuffle_asks_with_every_reason():
    """k 3 -> 2: segment 3 disappears into 1 and 2, 10 of 30 markets move, 5 markets excluded."""
    before = {f"M{i}": 1 + i % 3 for i in range(30)}
    now = {k: (v if v != 3 else (1 if int(k[1:]) % 2 else 2)) for k, v in before.items()}
    segments, previous = _month(now, before)
    summary = change("2013-12", segments, previous, _metrics(2, 20 / 30), n_excluded=5)
    assert summary.n_moved == 10
    assert summary.disappeared == (3,)
    assert summary.moves == (("3", "1", 5), ("3", "2", 5))
    assert summary.excluded_share == 5 / 35
    assert approval_reasons(summary, ON_CHANGE) == [
        "67% of markets kept their SegmentID (fewer than 80%)",
        "k changed from 3 to 2",
        "segment(s) 3 no longer exist",
        "the quality gate excluded 14% of the markets (more than 10%)",
    ]
    subject, body = request_text(summary, approval_reasons(summary, ON_CHANGE), "http://ui/segments/by-run?run_id=r")
    assert subject == "Approve the market segments of 2013-12?"
    assert "- k: 3 -> 2" in body
    assert "- kept their SegmentID: 67% (10 markets moved)" in body
    assert "- 5 market(s) from segment 3 to 1" in body
    assert "[Open the report](http://ui/segments/by-run?run_id=r)" in body


def test_a_new_segment_asks_and_a_first_month_does_not():
    before = {f"M{i}": 1 + i % 2 for i in range(20)}
    now = dict(before, M0=7, M2=7)
    segments, previous = _month(now, before)
    summary = change("2013-12", segments, previous, _metrics(2, 18 / 20), n_excluded=0)
    assert summary.appeared == (7,)
    assert approval_reasons(summary, ON_CHANGE) == ["new segment(s) 7"]
    # the first month: nothing to change, nothing to ask (unless always)
    segments, previous = _month(now, {})
    first = change("2013-12", segments, previous, _metrics(3, None, previous_month=None), n_excluded=0)
    assert first.stability is None
    assert first.appeared == ()
    assert approval_reasons(first, ON_CHANGE) == []


def test_thresholds_come_from_the_configuration():
    before = {f"M{i}": 1 + i % 2 for i in range(10)}
    now = dict(before, M0=2)  # 1 of 10 moved: 90% kept
    segments, previous = _month(now, before)
    summary = change("2013-12", segments, previous, _metrics(2, 0.9), n_excluded=0)
    assert approval_reasons(summary, ON_CHANGE) == []
    strict = ApprovalConfig(mode="on_change", min_kept_share=0.95)
    assert approval_reasons(summary, strict) == ["90% of markets kept their SegmentID (fewer than 95%)"]
    # unassigned markets (-1) are not a segment that appears
    now = dict(before, M0=-1)
    segments, previous = _month(now, before)
    assert change("2013-12", segments, previous, _metrics(2, 0.9), n_excluded=0).appeared == ()


def test_the_approval_answer_when_a_rejection_leaves_no_result():
    from include.segmentation.steps import approval_answer

    assert approval_answer(False, {"chosen_options": ["Approve"], "asked": False}) is None  # not asked
    assert approval_answer(True, {"chosen_options": ["Approve"]}) == "Approve"
    assert approval_answer(True, None) == "Reject"  # skipped downstream: no XCom
