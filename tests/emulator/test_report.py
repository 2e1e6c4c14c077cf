"""The run report: each figure from frames, and the HTML of a real (synthetic, demo-like) run."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from include.segmentation import report, steps
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import ArtifactError, read_json, read_parquet, write_json, write_parquet
from include.segmentation.config import SegmentationConfig
from include.segmentation.core.features import STATIC_FEATURES


def _segments(n: int = 8, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    keys = [f"M{i}" for i in range(n)]
    segments = pd.DataFrame(rng.random((n, len(STATIC_FEATURES))), columns=list(STATIC_FEATURES))
    segments.insert(0, "market_key", keys)
    segments["market_name"] = [f"Market {i}" for i in range(n)]
    segments["segment_id"] = [1, 1, 2, 2, 3, 3, -1, 1][:n]
    segments["previous_segment_id"] = [1.0, 2.0, 2.0, np.nan, 3.0, 1.0, 3.0, 1.0][:n]
    embeddings = pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"e{i}" for i in range(4)])
    embeddings.insert(0, "market_key", keys[::-1])  # another order: joined by key
    return segments, embeddings


def _plot_data(page: str, div_id: str) -> list[dict]:
    """The traces of the plotly figure drawn into ``div_id`` (plotly.py writes ``Plotly.newPlot("id", [...], ...)``)."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert match, f"no plotly figure drawn into #{div_id}"
    data, _end = json.JSONDecoder().raw_decode(page, match.end())
    return data


def _plot_layout(page: str, div_id: str) -> dict:
    """The layout of the plotly figure drawn into ``div_id`` (the argument after its traces)."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    decoder = json.JSONDecoder()
    _data, end = decoder.raw_decode(page, match.end())
    layout, _end = decoder.raw_decode(page, page.index("{", end))
    return layout


def test_pca_projection_joins_by_key_and_keeps_every_market():
    segments, embeddings = _segments()
    frame = report.pca_projection(segments, embeddings, static_weight=0.5)
    assert frame["market_key"].tolist() == segments["market_key"].tolist()
    assert frame["segment"].tolist() == ["1", "1", "2", "2", "3", "3", "unassigned", "1"]
    assert np.isfinite(frame[["pc1", "pc2"]].to_numpy()).all()
    ev1, ev2 = frame.attrs["explained"]
    assert 0 < ev2 <= ev1 <= 1
    # the same markets with another embedding order give the same projection
    again = report.pca_projection(segments, embeddings.iloc[::-1], static_weight=0.5)
    np.testing.assert_allclose(np.abs(again[["pc1", "pc2"]]), np.abs(frame[["pc1", "pc2"]]), atol=1e-9)


def test_pca_projection_names_markets_without_embedding():
    segments, embeddings = _segments()
    with pytest.raises(ValueError, match=r"\['M0'\] have a segment but no embedding"):
        report.pca_projection(segments, embeddings[embeddings["market_key"] != "M0"], 0.5)


def test_pca_figure_has_one_trace_per_segment_and_escapes_names():
    segments, embeddings = _segments()
    segments.loc[0, "market_name"] = "<script>alert(1)</script>"
    fig = report.pca_figure(report.pca_projection(segments, embeddings, 0.5))
    assert [t.name for t in fig.data] == ["segment 1", "segment 2", "segment 3", "unassigned"]
    assert sum(len(t.x) for t in fig.data) == len(segments)
    texts = [text for trace in fig.data for text in trace.text]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (M0)<br>segment 1" in texts
    assert fig.data[-1].marker.color == "#B0B0B0"  # unassigned markets are grey
    # SegmentID n has the same colour in every month, whatever other segments exist.
    assert [t.marker.color for t in fig.data[:3]] == [report.segment_colour(x) for x in ("1", "2", "3")]
    assert report.segment_colour("6") == report._PALETTE[5] != report.segment_colour("1")


def test_axis_drivers_name_the_largest_parts_of_an_axis():
    # 3 static features, then a 4-column embedding: loadings squared are the shares.
    component = np.array([0.6, -0.0, -0.3, 0.5, 0.5, 0.1, np.sqrt(1 - 0.36 - 0.09 - 0.51)])
    words = ["Platinum share", "avg discount", "Gold share"]
    assert (
        report.axis_drivers(component, words) == "55% sales dynamics (LSTM), 36% Platinum share (+), 9% Gold share (-)"
    )


def test_k_flags_and_segment_id_gaps_are_explained():
    metrics = {"n_clusters": 2, "previous_k": 10, "previous_month": "2013-11", "k_curve": {"2": 0.2, "3": 0.1}}
    (changed,) = report.k_warnings(metrics, k_max=10)
    assert changed.startswith("k changed from 10 in 2013-11 to 2")
    top = report.k_warnings({"n_clusters": 10, "k_curve": {str(k): 0.1 for k in range(2, 11)}}, k_max=10)
    assert top == [
        "k = 10 is the largest k searched (2-10): the data may hold more segments; raise clustering.k_max to "
        "search further"
    ]
    assert report.k_warnings({"n_clusters": 4, "previous_k": 4, "k_curve": {"4": 0.2, "5": 0.1}}, k_max=10) == []
    # The search stopped at 4 for want of markets, below k_max: nothing to raise.
    assert report.k_warnings({"n_clusters": 4, "k_curve": {"2": 0.1, "3": 0.1, "4": 0.2}}, k_max=6) == []
    assert report.id_note(["1", "2", "unassigned"]) is None
    assert report.id_note(["1", "6"]).startswith("SegmentIDs this month: 1, 6. An id stays with its segment")


def test_changed_markets_lists_only_moves():
    segments, _ = _segments()
    moved = report.changed_markets(segments)
    # M1 2->1, M5 1->3, M6 3->unassigned; M3 is new (no previous id), the rest kept theirs
    assert moved.to_dict("list") == {
        "market_key": ["M1", "M5", "M6"],
        "market_name": ["Market 1", "Market 5", "Market 6"],
        "previous_segment": ["2", "1", "3"],
        "segment": ["1", "3", "unassigned"],
    }


def test_loss_and_k_curve_figures():
    loss = report.loss_figure([1.0, 0.5, 0.25])
    assert list(loss.data[0].y) == [1.0, 0.5, 0.25]
    assert loss.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="no per-epoch losses"):
        report.loss_figure([])
    curve = report.k_curve_figure({"2": 0.3, "3": 0.5, "10": 0.1}, 3, {"2": 10.0, "3": 12.0, "10": 4.0})
    assert list(curve.data[0].x) == [2, 3, 10]  # numeric order, not JSON key order
    assert list(curve.data[0].y) == [0.3, 0.5, 0.1]
    assert curve.data[1].name == "gap statistic (chooses k)"
    with pytest.raises(ValueError, match="empty k curve"):
        report.k_curve_figure({}, 3)


def test_profile_rows_read_columns_by_name():
    profiles = pd.DataFrame(
        {
            "description": ["noise", "big", "small"],
            "segment_id": [-1, 2, 1],
            "n_markets": [1, 5, 2],
            "share": [0.125, 0.625, 0.25],
            "avg_ltv": [1000.0, 2500.5, np.nan],
        }
    )
    headers, rows = report.profile_rows(profiles)
    assert [h["title"] for h in headers] == ["markets", "share", "avg lifetime value"]
    assert [r["segment"] for r in rows] == ["1", "2", "unassigned"]
    assert rows[1]["cells"] == ["5", "62.5%", "2,500"]
    assert rows[0]["cells"][2] == ""  # NaN stays empty
    with pytest.raises(ValueError, match=r"missing column\(s\) \['description'\]"):
        report.profile_rows(profiles.drop(columns="description"))


def test_build_report_names_missing_artifacts(tmp_path):
    run = steps.start_run(SegmentationConfig(artifacts_dir=str(tmp_path)), pd.Period("2013-12", "M"), "run-1")
    write_json(run.metrics, {})
    with pytest.raises(ArtifactError, match=rf"artifact {run.segments} does not exist"):
        steps.build_report(run)


# ---------------------------------------------------------------------------------------------
# The report of real runs (tests.ui_helpers: two months on the synthetic warehouse)


@pytest.fixture(scope="module")
def december(segmented_months):
    run = RunArtifacts.open(segmented_months.folders[-1])
    return {
        "page": run.report.read_text(),
        "segments": read_parquet(run.segments),
        "profiles": read_parquet(run.profiles),
        "metrics": read_json(run.metrics),
        "model": read_json(run.model),
    }


def test_report_has_the_pca_plot_of_every_market(december):
    page, segments = december["page"], december["segments"]
    data = _plot_data(page, "pca-plot")
    labels = [report.segment_label(v) for v in segments["segment_id"]]
    assert sorted(t["name"] for t in data) == sorted({f"segment {x}" for x in labels})
    # Hover: "name (key)" (the name alone when it is the key), then the market's segment.
    hover = re.compile(r"^(?P<name>[^<(]+?)(?: \((?P<key>[^)]+)\))?<br>(?P<segment>segment \d+|unassigned)$")
    parsed = [(trace["name"], hover.match(text)) for trace in data for text in trace["text"]]
    keys = [m["key"] or m["name"] for _, m in parsed]
    assert sorted(keys) == sorted(segments["market_key"])
    by_key = segments.set_index("market_key")["segment_id"].map(report.segment_label)
    for (trace_name, m), key in zip(parsed, keys, strict=True):  # each market in its own segment's trace
        assert m["segment"] == trace_name == f"segment {by_key[key]}"
    # Each axis says what drives it, in shares of the axis.
    layout = _plot_layout(page, "pca-plot")
    assert re.fullmatch(r"PC1, \d+% of variance: \d+% .+", layout["xaxis"]["title"]["text"])
    assert "sales dynamics (LSTM)" in layout["xaxis"]["title"]["text"] + layout["yaxis"]["title"]["text"]


def test_report_has_the_profile_table_and_one_description_per_segment(december):
    page, profiles = december["page"], december["profiles"]
    table = page[page.index('<table id="profile-table">') : page.index("</table>", page.index('id="profile-table"'))]
    rows = re.findall(r'<tr data-segment="([^"]+)">(.*?)</tr>', table, re.S)
    labels = sorted(report.segment_label(v) for v in profiles["segment_id"])
    assert sorted(label for label, _ in rows) == labels
    for label, cells in rows:
        profile = profiles[[report.segment_label(v) == label for v in profiles["segment_id"]]].iloc[0]
        values = re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)
        assert values[1] == str(int(profile["n_markets"]))  # after the segment column
        assert values[2] == f"{100 * profile['share']:.1f}%"
    descriptions = re.findall(r'<li class="segment-description" data-segment="([^"]+)">(.*?)</li>', page, re.S)
    assert sorted(label for label, _ in descriptions) == labels
    for label, item in descriptions:
        profile = profiles[[report.segment_label(v) == label for v in profiles["segment_id"]]].iloc[0]
        assert html.escape(profile["description"], quote=True) in item
        assert profile["description"].strip()


def test_report_has_the_run_figures_and_works_offline(december):
    page, metrics, model = december["page"], december["metrics"], december["model"]
    assert "lstm_hybrid_v2.0_20131231" in page
    for key in ("silhouette_hybrid", "silhouette_lstm", "silhouette_static"):
        assert f"{metrics[key]:.3f}" in page
    assert _plot_data(page, "silhouette-plot")[0]["text"] == [
        f"{metrics[k]:.3f}" for k in ("silhouette_hybrid", "silhouette_lstm", "silhouette_static")
    ]
    assert _plot_data(page, "loss-plot")[0]["y"] == pytest.approx(model["losses"])
    assert [int(k) for k in _plot_data(page, "k-curve-plot")[0]["x"]] == sorted(int(k) for k in metrics["k_curve"])
    assert "<dt>previous month</dt><dd>2013-11</dd>" in page  # the second month compares with the first
    # self-contained: plotly.js inline once, nothing loaded from elsewhere
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert not re.search(r"<link[^>]*\shref=", page)
    assert len(re.findall(r"Plotly\.newPlot\(", page)) == 4
    assert page.count(report.NAV_MARKER) == 1


def test_render_report_with_noise_moves_and_no_k_curve(tmp_path):
    """A DBSCAN-like run: unassigned markets, markets that moved, excluded ones, no k curve; all escaped."""
    segments, embeddings = _segments()
    segments.loc[1, "market_name"] = "<img src=x onerror=alert(1)>"
    profiles = pd.DataFrame(
        {
            "segment_id": [1, 2, 3, -1],
            "n_markets": [3, 2, 2, 1],
            "share": [0.375, 0.25, 0.25, 0.125],
            "description": ["Growing <markets>", "Shrinking ones", "Steady & small", "Unassigned markets (noise)"],
        }
    )
    run = steps.start_run(
        SegmentationConfig(artifacts_dir=str(tmp_path), clustering={"static_weight": 0.3}),
        pd.Period("2014-01", "M"),
        "manual__2014-02-03T10:00:00+00:00",
        {"dry_run": True, "started_at": "2014-02-03T10:00:00+00:00", "params": {"n_clusters": None, "seq_len": 12}},
    )
    write_parquet(segments, run.segments)
    write_parquet(embeddings, run.embeddings)
    write_parquet(profiles, run.profiles)
    write_json(
        run.metrics,
        {
            "algorithm": "dbscan",
            "n_clusters": 3,
            "noise_fraction": 0.125,
            "silhouette_hybrid": 0.3,
            "silhouette_lstm": float("nan"),
            "silhouette_static": 0.2,
            "stability": 0.6,
            "previous_month": "2013-12",
            "k_curve": {},
            "k_reason": "k kept at last month's 3: the 1-SE rule prefers 4, but gap(4)=0.812 is within one standard "
            "error of gap(3)=0.801",
        },
    )
    write_json(
        run.model,
        {
            "losses": [0.9, 0.5],
            "final_loss": 0.5,
            "device": "cuda",
            "stop_reason": "max_steps",
            "steps": 3000,
            "warm_start_from": "2013-12",
        },
    )
    excluded = {"market_key": ["Z", "Z"], "check": ["inactive", "thin"]}
    excluded["reason"] = ["sales in 1 of the last 12 months (< 3)", "2 order lines (< 10)"]
    write_parquet(pd.DataFrame(excluded), run.excluded)
    steps.build_report(run)
    page = run.report.read_text()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # in the changed-markets table
    assert "Growing &lt;markets&gt;" in page
    assert "Steady &amp; small" in page
    assert re.findall(r'<li class="segment-description" data-segment="([^"]+)">', page) == ["1", "2", "3", "unassigned"]
    assert "No k-selection curve" in page
    assert "k-curve-plot" not in page
    assert _plot_data(page, "silhouette-plot")[0]["text"] == ["0.300", "n/a", "0.200"]
    moved = page[page.index('<table id="changed-markets">') :]
    assert re.findall(r"<tr><td class=\"text\">(M\d)</td>", moved) == ["M1", "M5", "M6"]
    assert "3 market(s) changed segment since 2013-12; 1 market(s) had no SegmentID then (new, or unassigned)" in page
    excluded_table = page[page.index('<table id="excluded-markets">') :]
    assert re.findall(r"<tr><td class=\"text\">([^<]+)</td><td class=\"text\">([^<]+)</td>", excluded_table) == [
        ("Z", "sales in 1 of the last 12 months (&lt; 3); 2 order lines (&lt; 10)")
    ]
    assert "<dt>static weight</dt><dd>0.30</dd>" in page
    # which run this is, and that it wrote nothing
    assert "<dt>run id</dt><dd>manual__2014-02-03T10:00:00+00:00</dd>" in page
    assert "<dt>started (UTC)</dt><dd>2014-02-03T10:00:00+00:00</dd>" in page
    assert "<dt>params</dt><dd>seq_len=12</dd>" in page
    assert "<h1>Market segments, 2014-01 (dry run)</h1>" in page
    assert "<dt>run type</dt><dd>DRY RUN: nothing written to the warehouse</dd>" in page
    assert "<dt>markets excluded</dt><dd>1</dd>" in page  # one market, excluded by two checks
    assert "<dt>trained on</dt><dd>cuda</dd>" in page
    assert "<dt>why this k</dt><dd>k kept at last month&#39;s 3: the 1-SE rule prefers 4" in page
    assert (
        "<dt>training</dt><dd>WARNING: stopped at its budget (max_steps) after 3,000 steps, warm start from 2013-12 "
        "before the loss settled" in page
    )
