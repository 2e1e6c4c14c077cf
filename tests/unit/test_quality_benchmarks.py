"""The quality benchmarks (issue 5) at tiny sizes: their generators, their scoring and their printed tables.

The figures of a tiny run are not quality claims; these tests check that every method's row is
printed with a real ARI, that the saved copy matches, and that the scoring itself is right on
inputs whose answer is known. ``benchmarks/ucr.py`` needs aeon/pyts/tslearn
(``requirements-bench.txt``), which CI does not install, so it is not run here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from benchmarks import planted, stability
from benchmarks.report import mean_sd, table
from include.segmentation.core.features import STATIC_FEATURES
from include.segmentation.core.sequences import MONTHLY_COLUMNS

FLOAT = r"-?\d+\.\d{3}"


def test_planted_markets_shapes_balance_and_determinism():
    patterns = ("growing", "declining", "seasonal")
    m = planted.planted_markets(48, 30, seed=3, patterns=patterns, mixes=("premium", "value"))
    assert m.grid.shape == (48, 30, len(MONTHLY_COLUMNS))
    assert m.static.shape == (48, len(STATIC_FEATURES))
    assert np.bincount(m.segment).tolist() == [8] * 6
    np.testing.assert_array_equal(m.segment, m.pattern * 2 + m.mix)
    assert (m.grid > 0).all()
    assert ((m.static[:, :4] >= 0) & (m.static[:, :4] <= 1)).all()  # discount and loyalty shares
    counts = m.grid[..., 1:]
    np.testing.assert_array_equal(counts, np.round(counts))
    again = planted.planted_markets(48, 30, seed=3, patterns=patterns)
    np.testing.assert_array_equal(m.grid, again.grid)
    np.testing.assert_array_equal(m.static, again.static)
    assert not np.array_equal(m.grid, planted.planted_markets(48, 30, seed=4, patterns=m.patterns).grid)


def test_planted_segments_differ_only_in_their_own_half():
    m = planted.planted_markets(2000, 36, seed=0)
    log_rev = np.log(m.grid[..., 0])
    last = log_rev[:, -12:]
    slope = np.polyfit(np.arange(12), last.T, 1)[0]  # log-revenue per month over the latest window
    growing, declining = m.pattern == 0, m.pattern == 1
    assert slope[growing].mean() == pytest.approx(0.05, abs=0.01)
    assert slope[declining].mean() == pytest.approx(-0.05, abs=0.01)
    # same expected level in the middle of the window: the patterns differ in shape, not in size
    assert last[growing].mean() == pytest.approx(last[declining].mean(), abs=0.1)
    # market size is drawn independently of the segment
    assert np.log(m.size[growing]).mean() == pytest.approx(np.log(m.size[declining]).mean(), abs=0.1)
    premium, value = m.mix == 0, m.mix == 1
    # the static mix does not touch the series ...
    assert last[premium].mean() == pytest.approx(last[value].mean(), abs=0.1)
    assert slope[premium].mean() == pytest.approx(slope[value].mean(), abs=0.01)
    # ... and the pattern does not touch the static features (avg_discount, avg_ltv)
    for col, tol in ((0, 0.005), (4, 300.0)):
        assert m.static[growing, col].mean() == pytest.approx(m.static[declining, col].mean(), abs=tol)
    assert m.static[premium, 0].mean() < m.static[value, 0].mean()  # premium: lower discount
    assert m.static[premium, 4].mean() > 2 * m.static[value, 4].mean()  # and higher lifetime value


def test_planted_rejects_too_few_markets_and_unknown_names():
    with pytest.raises(ValueError, match="at least one market per segment"):
        planted.planted_markets(3, 24, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        planted.planted_markets(8, 24, seed=0, patterns=("zigzag",))


def test_rescale_windows():
    rng = np.random.default_rng(0)
    w = rng.normal(5.0, 2.0, (6, 12, 4))
    np.testing.assert_array_equal(planted.rescale_windows(w, "levels"), w)
    demeaned = planted.rescale_windows(w, "pipeline")
    np.testing.assert_allclose(demeaned[..., [0, 2, 3]].mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_array_equal(demeaned[..., 1], w[..., 1])  # growth is kept as is
    z = planted.rescale_windows(w, "per-series")
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=1), 1.0)
    with pytest.raises(ValueError, match="unknown scaling"):
        planted.rescale_windows(w, "minmax")


def test_score_views_on_known_views():
    """Static separates the mixes, the "embedding" the patterns: only the hybrid finds all 4 segments."""
    m = planted.planted_markets(80, 24, seed=1)
    rng = np.random.default_rng(1)
    embedding = np.column_stack([m.pattern * 10.0 + rng.normal(0, 0.5, 80), rng.normal(0, 0.5, (80, 3))])
    scores = planted.score_views(m.static, embedding, m.segment, k=4, static_weight=0.5, seed=0)
    assert scores["hybrid"] == pytest.approx(1.0)
    assert scores["lstm-only"] < 0.7
    assert scores["static-only"] < 0.7


def _summary(out: str, methods: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    found = {}
    for method in methods:
        match = re.search(rf"^{re.escape(method)}\s+({FLOAT}) ± ({FLOAT})$", out, re.MULTILINE)
        assert match, f"no summary row for {method} in:\n{out}"
        found[method] = (float(match.group(1)), float(match.group(2)))
    return found


def test_planted_main_tiny_prints_every_row(capsys, tmp_path):
    saved = tmp_path / "planted.txt"
    tiny = ["--markets", "40", "--months", "18", "--seeds", "2", "--epochs", "1", "--min-steps", "5"]
    scores = planted.main([*tiny, "--designs", "0", "--sizes", "0,1", "--output", str(saved)])
    out = capsys.readouterr().out
    labels = ["growing/declining x 2 mixes, size log-sd 0", "growing/declining x 2 mixes, size log-sd 1"]
    assert list(scores) == labels
    header = "setting  hybrid  lstm-only  static-only  k per seed  lstm:patterns  static:mixes  probe  pc1~size  s/seed"
    assert re.sub(r" +", "  ", header) in re.sub(r" +", "  ", out)
    for label in labels:
        row = re.search(
            rf"^{re.escape(label)}\s+({FLOAT}) ± ({FLOAT})\s+{FLOAT} ± {FLOAT}\s+{FLOAT} ± {FLOAT}\s+(\d+),(\d+)\s",
            out,
            re.M,
        )
        assert row, out
        assert float(row.group(1)) == pytest.approx(np.mean(scores[label]), abs=5e-4)
        assert all(2 <= int(row.group(i)) <= 10 for i in (3, 4))  # k chosen per seed
    text = saved.read_text()
    assert re.match(r"# benchmarks\.planted: .* \| nproc \d+ \| RAM [\d.]+ GiB \| CPU .* \| python 3\.", text)
    assert "torch 2." in text.splitlines()[0]


def test_report_helpers():
    assert mean_sd([0.5, 0.7]) == "0.600 ± 0.141"
    assert mean_sd([0.25]) == "0.250 ± 0.000"
    assert mean_sd([float("nan")]) == "nan"
    assert table(["a", "bb"], [["x", 1.0], ["yyy", 0.25]]).splitlines() == [
        "a       bb",
        "---  -----",
        "x    1.000",
        "yyy  0.250",
    ]


def test_stability_main_tiny_on_synthetic_warehouse(capsys, tmp_path):
    saved = tmp_path / "stability.txt"
    scores = stability.main(
        [
            "--source",
            "synthetic",
            "--months",
            "2013-11,2013-12",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--min-steps",
            "5",
            "--output",
            str(saved),
        ]
    )
    out = capsys.readouterr().out
    assert len(scores["seed"]) == 2  # one seed pair per month
    assert len(scores["month"]) == 2  # one month pair per seed
    assert all(-1.0 <= v <= 1.0 for v in scores["seed"] + scores["month"])
    for label, key in (("across seeds (same month)", "seed"), ("across months (same seed)", "month")):
        match = re.search(rf"^{re.escape(label)}\s+({FLOAT}) ± ({FLOAT})$", out, re.MULTILINE)
        assert match, out
        assert float(match.group(1)) == pytest.approx(np.mean(scores[key]), abs=5e-4)
    # every market of the synthetic warehouse is segmented in both months
    assert re.search(r"^2024\s+2013-11 -> 2013-12\s+60\s+" + FLOAT + "$", out, re.MULTILINE), out
    assert saved.read_text().startswith("# benchmarks.stability")


def test_shared_ari_uses_only_shared_markets():
    import pandas as pd

    a = pd.Series([1, 1, 2, 2, 3], index=["A", "B", "C", "D", "X"])
    b = pd.Series([7, 7, 9, 9], index=["D", "C", "B", "A"])  # same partition of A-D, other ids
    assert stability.shared_ari(a, b) == (pytest.approx(1.0), 4)
    value, n = stability.shared_ari(a, pd.Series([1], index=["A"]))
    assert np.isnan(value)
    assert n == 1


def test_margin_main_tiny_finds_the_margin_halves_only_with_margin_as_a_feature(tmp_path):
    from benchmarks import margin

    saved = tmp_path / "margin.txt"
    aris = margin.main(["--markets", "24", "--seeds", "1", "--min-steps", "5", "--output", str(saved)])
    assert list(aris) == list(margin.ROWS)
    without, weight1, weight3 = (aris[label][0] for label in margin.ROWS)
    assert abs(without) < 0.2  # margin is not a feature: the halves are invisible
    assert weight3 > 0.5
    assert weight3 > without + 0.4
    text = saved.read_text()
    assert "seven + margin, weight 3" in text
    assert "ARI vs margin halves" in text


def test_margin_markets_differ_only_in_margin():
    from benchmarks.margin import HIGH, LOW, margin_markets

    planted, margin, half = margin_markets(40, seed=0)
    assert len(set(planted.segment.tolist())) == 1  # one temporal pattern, one static mix
    assert half.sum() == 20
    assert abs(margin[half == 1].mean() - HIGH) < 0.02
    assert abs(margin[half == 0].mean() - LOW) < 0.02
