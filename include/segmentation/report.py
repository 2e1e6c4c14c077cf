"""One self-contained HTML report per run: what the month's segmentation found, in figures.

``render_report(run)`` reads one run's artifacts (``adapters.catalog.RunArtifacts``; the step
``steps.build_report`` writes the result to ``run.report``): the run itself (run id, start time,
Params, dry run or not), its figures (month, model version, k, silhouettes), a 2-D
PCA scatter of the hybrid features coloured by segment, the autoencoder's training loss, the
k-selection curve, the segment profiles with their descriptions, and the markets that changed
segment since the previous month. The figures are plotly; plotly.js is inlined once (about 5 MB),
so the file opens offline without any CDN; the Airflow UI plugin serves the library once, cached, in
its place (``external_plotly``).

Each figure or table is built by a pure function from frames, so it can be tested on its own.
plotly and scikit-learn are imported inside the functions that need them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from include.segmentation.adapters.storage import read_json, read_parquet
from include.segmentation.config import DEFAULT_FEATURES, StaticFeature
from include.segmentation.core.autoencoder import training_summary
from include.segmentation.core.features import STATIC_FEATURES

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from include.segmentation.adapters.catalog import RunArtifacts

#: The report's page layout (jinja2; every value is autoescaped).
TEMPLATES = Path(__file__).with_name("templates")

#: The plugin replaces this comment with its navigation bar when it serves the report.
NAV_MARKER = "<!--segments-nav-->"
#: Around the inlined plotly.js: the plugin serves the library once, cached, in its place (``external_plotly``).
PLOTLY_START, PLOTLY_END = "<!--plotly.js-->", "<!--/plotly.js-->"

#: Segment colours (plotly's qualitative "Plotly" palette, then "D3"); unassigned markets are grey.
_PALETTE = (
    "#636EFA #EF553B #00CC96 #AB63FA #FFA15A #19D3F3 #FF6692 #B6E880 #FF97FF #FECB52 "
    "#1F77B4 #FF7F0E #2CA02C #D62728 #9467BD #8C564B #E377C2 #7F7F7F #BCBD22 #17BECF"
).split()
_NOISE_COLOUR = "#B0B0B0"


@dataclass(frozen=True)
class ReportInputs:
    """What one run left in the artifact store, as the report reads it (``load_inputs``).

    ``segments``: one row per market (``market_key``, ``STATIC_FEATURES``, names, ``segment_id``
    with -1 for unassigned, ``previous_segment_id`` NaN when none); ``embeddings``: ``market_key``,
    ``e0..e{d-1}``; ``profiles``: one row per SegmentID (see ``profiles.segment_profiles``);
    ``metrics``: ``metrics.json``; ``model``: ``model.json`` (``losses`` per round, ``device``, how
    training stopped); ``excluded``: ``market_key``, ``check``, ``reason``.
    """

    segments: pd.DataFrame
    embeddings: pd.DataFrame
    profiles: pd.DataFrame
    metrics: dict[str, Any]
    model: dict[str, Any]
    excluded: pd.DataFrame


def load_inputs(run: RunArtifacts) -> ReportInputs:
    """Read the run's artifacts the report needs. Raises ``ArtifactError`` naming a missing or unreadable one."""
    return ReportInputs(
        segments=read_parquet(run.segments),
        embeddings=read_parquet(run.embeddings),
        profiles=read_parquet(run.profiles),
        metrics=read_json(run.metrics),
        model=read_json(run.model),
        excluded=read_parquet(run.excluded),
    )


def run_facts(run: RunArtifacts) -> list[tuple[str, str]]:
    """Which run this is: run id, start time (UTC), dry run or real, and the Params it ran with."""
    info = run.info
    params = info.get("params") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None) or "defaults"
    return [
        ("run id", run.run_id),
        ("started (UTC)", str(info.get("started_at") or "n/a")),
        ("run type", "DRY RUN: nothing written to the warehouse" if run.dry_run else "writes to the warehouse"),
        ("params", shown),
    ]


def feature_fact(features: Sequence[StaticFeature], clustered: Sequence[StaticFeature], derived: Sequence[str]) -> str:
    """The report's line on the static features: each with its weight; which only profile the segments
    (weight 0, or on a column the loader derived) and why."""
    used = {f.name for f in clustered}
    parts = []
    for f in features:
        note = f"weight {f.weight:g}"
        if f.name in derived:
            note += ", DERIVED by the loader" + ("" if f.name in used else ": profiled, not clustered")
        elif f.name not in used:
            note += ": profiled, not clustered"
        parts.append(f"{f.name} ({note})")
    return "; ".join(parts)


def segment_label(segment_id: object) -> str:
    """``"3"`` for SegmentID 3; ``"unassigned"`` for -1, NaN, NA or None (DBSCAN/HDBSCAN noise)."""
    if pd.isna(segment_id) or int(segment_id) < 0:  # type: ignore[call-overload]
        return "unassigned"
    return str(int(segment_id))


def segment_colour(label: str) -> str:
    """The colour of SegmentID ``label`` in every report and page, whatever month: SegmentID n takes the
    palette's n-th colour (they repeat after 20); ``unassigned`` is grey."""
    if label == "unassigned":
        return _NOISE_COLOUR
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def _colours(labels: Sequence[str]) -> dict[str, str]:
    return {label: segment_colour(label) for label in set(labels)} | {"unassigned": _NOISE_COLOUR}


def pca_projection(
    segments: pd.DataFrame,
    embeddings: pd.DataFrame,
    static_weight: float,
    features: tuple[StaticFeature, ...] = DEFAULT_FEATURES,
) -> pd.DataFrame:
    """2-D PCA of the hybrid features the clustering saw (``clustering.hybrid_features``).

    ``segments``: one row per market with ``market_key``, ``segment_id`` and the clustered static
    ``features``' columns (``config.clustered_features``, weighted as the clustering weighed them);
    ``embeddings``: ``market_key`` and the embedding columns. Returns one row per market of
    ``segments`` with ``market_key``, ``market_name`` (the key when absent), ``segment`` (label),
    ``pc1``, ``pc2`` (unit-free scores); in ``attrs["explained"]`` the two components' shares (0-1) of
    the hybrid features' variance, and in ``attrs["drivers"]`` what drives each axis (``axis_drivers``).
    Raises ``ValueError`` naming markets without an embedding
    or a missing column.
    """
    from sklearn.decomposition import PCA

    from include.segmentation.core.clustering import hybrid_features

    clustered = list(features)
    names = [f.name for f in clustered]
    missing = [c for c in ("market_key", "segment_id", *names) if c not in segments]
    if missing:
        raise ValueError(f"segments frame is missing column(s) {missing}")
    emb = embeddings.set_index(embeddings["market_key"].astype(str)).drop(columns="market_key")
    keys = segments["market_key"].astype(str)
    absent = keys[~keys.isin(emb.index)]
    if len(absent):
        raise ValueError(f"market(s) {absent.tolist()[:5]} have a segment but no embedding")
    static = segments[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    weights = np.array([f.weight for f in clustered])
    x = hybrid_features(static, emb.loc[keys].to_numpy(dtype=np.float64), static_weight, feature_weights=weights)
    n_components = min(2, *x.shape)
    pca = PCA(n_components=n_components, svd_solver="full")
    scores = np.zeros((len(x), 2))
    scores[:, :n_components] = pca.fit_transform(x)
    explained = np.zeros(2)
    explained[:n_components] = pca.explained_variance_ratio_
    drivers = [axis_drivers(axis, [f.words for f in clustered]) for axis in pca.components_]
    names = segments.get("market_name", keys)
    frame = pd.DataFrame(
        {
            "market_key": keys.to_numpy(),
            "market_name": names.fillna(keys).astype(str).to_numpy(),
            "segment": [segment_label(v) for v in segments["segment_id"]],
            "pc1": scores[:, 0],
            "pc2": scores[:, 1],
        }
    )
    frame.attrs["explained"] = tuple(float(v) for v in explained)
    frame.attrs["drivers"] = tuple(drivers + [""] * (2 - len(drivers)))
    return frame


def axis_drivers(component: np.ndarray, static_words: Sequence[str], top: int = 3) -> str:
    """What drives one principal axis, in words: its ``top`` largest parts, e.g. "45% sales dynamics
    (LSTM), 31% Platinum share (+), 12% avg discount (-)".

    ``component`` ``(s + e,)``: the axis' unit loading vector over the hybrid columns, the ``s`` static
    features (``static_words``, in order) then the embedding. A static feature's part is its squared
    loading with its sign (+: markets with more of it lie further along the axis); the embedding's
    columns count as one part, "sales dynamics (LSTM)", without a sign (an embedding dimension has no
    direction of its own). Squared loadings of a unit vector sum to 1, so parts are shares of the axis
    (Jolliffe, *Principal Component Analysis*, 2nd ed. 2002, sec. 4.1).
    """
    component = np.asarray(component, dtype=np.float64)
    s = len(static_words)
    parts = [(w, float(component[i] ** 2), " (+)" if component[i] >= 0 else " (-)") for i, w in enumerate(static_words)]
    parts.append(("sales dynamics (LSTM)", float((component[s:] ** 2).sum()), ""))
    parts.sort(key=lambda p: -p[1])
    return ", ".join(f"{share:.0%} {words}{sign}" for words, share, sign in parts[:top] if share >= 0.005)


def pca_figure(projection: pd.DataFrame) -> go.Figure:
    """Scatter of ``pca_projection``'s ``pc1``/``pc2``, one trace (legend entry) per segment.

    Hover shows the market's name (and key when it differs) and its segment, HTML-escaped (plotly
    renders some tags in text); each axis title says what drives it (``axis_drivers``).
    """
    import plotly.graph_objects as go

    colours = _colours(projection["segment"].tolist())
    fig = go.Figure()
    for label in sorted(colours, key=_label_order):
        part = projection[projection["segment"] == label]
        if part.empty:
            continue
        segment = "unassigned" if label == "unassigned" else f"segment {label}"
        text = [
            html.escape(n if n == k else f"{n} ({k})") + f"<br>{segment}"
            for n, k in zip(part["market_name"], part["market_key"], strict=True)
        ]
        fig.add_trace(
            go.Scatter(
                x=part["pc1"],
                y=part["pc2"],
                mode="markers",
                name=f"segment {label}" if label != "unassigned" else "unassigned",
                text=text,
                hovertemplate="%{text}<br>PC1 %{x:.2f}, PC2 %{y:.2f}<extra></extra>",
                marker={"size": 10, "color": colours[label], "line": {"width": 0.5, "color": "#333"}},
            )
        )
    ev1, ev2 = projection.attrs.get("explained", (float("nan"), float("nan")))
    d1, d2 = projection.attrs.get("drivers", ("", ""))
    fig.update_layout(
        title="Markets in the hybrid feature space (PCA of static + LSTM features)",
        xaxis_title=f"PC1, {100 * ev1:.0f}% of variance" + (f": {d1}" if d1 else ""),
        yaxis_title=f"PC2, {100 * ev2:.0f}% of variance" + (f": {d2}" if d2 else ""),
        legend_title="SegmentID",
        height=560,
    )
    return fig


def loss_figure(losses: Sequence[float]) -> go.Figure:
    """Mean reconstruction loss (MSE on scaled sequences) per round (an epoch, or 100 steps), log scale."""
    import plotly.graph_objects as go

    values = [float(v) for v in losses]
    if not values:
        raise ValueError("model.json has no per-epoch losses")
    fig = go.Figure(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines+markers", name="loss"))
    fig.update_layout(
        title="LSTM autoencoder training loss",
        xaxis_title="round (an epoch, or 100 steps)",
        yaxis_title="reconstruction loss (MSE)",
        yaxis_type="log" if min(values) > 0 else "linear",
        # Full numbers on every tick: plotly's default log ticks within a decade read "8 7 6 ... 0.1 9".
        yaxis_tickformat=".2~g",
        yaxis_nticks=6,
        height=380,
    )
    return fig


def k_curve_figure(k_curve: Mapping[str, float], chosen_k: int, gap: Mapping[str, float] | None = None) -> go.Figure:
    """Silhouette (-1..1) of the hybrid clustering for each k tried, the chosen k marked.

    ``k_curve`` maps k (as JSON keys, strings) to silhouette; ``gap`` (optional, JSON keys, unit-free:
    the gap statistic that chose k, ``k_selection``) is drawn on a second axis. Raises
    ``ValueError`` for an empty curve.
    """
    import plotly.graph_objects as go

    if not k_curve:
        raise ValueError("empty k curve (k was given, or the algorithm finds k itself)")
    ks = sorted(int(k) for k in k_curve)
    fig = go.Figure(go.Scatter(x=ks, y=[k_curve[str(k)] for k in ks], mode="lines+markers", name="silhouette (hybrid)"))
    if gap:
        gap_ks = sorted(int(k) for k in gap)
        fig.add_trace(
            go.Scatter(
                x=gap_ks,
                y=[gap[str(k)] for k in gap_ks],
                mode="lines+markers",
                name="gap statistic (chooses k)",
                yaxis="y2",
                line={"dash": "dot"},
            )
        )
        fig.update_layout(
            yaxis2={"title": "gap statistic", "overlaying": "y", "side": "right", "tickformat": ".2f", "nticks": 6}
        )
    fig.add_vline(x=chosen_k, line_dash="dash", line_color="#444", annotation_text=f"chosen k = {chosen_k}")
    fig.update_layout(
        title="Choosing the number of segments",
        xaxis_title="k (number of segments)",
        yaxis_title="silhouette",
        yaxis_tickformat=".2f",
        xaxis={"dtick": 1},
        # The legend below the plot: at the top right it covers the title and the second axis.
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0},
        margin={"b": 90},
        height=400,
    )
    return fig


def silhouette_figure(metrics: Mapping[str, Any]) -> go.Figure:
    """Bars of the silhouettes (-1..1) of the hybrid, LSTM-only and static-only views (same k)."""
    import plotly.graph_objects as go

    views = {"hybrid": "silhouette_hybrid", "LSTM-only": "silhouette_lstm", "static-only": "silhouette_static"}
    values = [_finite(metrics.get(key)) for key in views.values()]
    fig = go.Figure(
        go.Bar(
            x=list(views),
            y=[v if v is not None else 0.0 for v in values],
            text=[f"{v:.3f}" if v is not None else "n/a" for v in values],
            textposition="outside",
            marker_color=["#636EFA", "#AB63FA", "#00CC96"],
        )
    )
    fig.update_layout(
        title="Silhouette by feature view (higher: better separated)", yaxis_title="silhouette", height=380
    )
    return fig


def k_warnings(metrics: Mapping[str, Any], k_max: int) -> list[str]:
    """Flags on the run's k for the report: k changed from last month's (SegmentIDs then move in bulk),
    and k at ``k_max`` (``clustering.k_max``), the top of the range searched: the data may hold more
    segments. (A search that stopped below ``k_max``, for want of markets, is not flagged.)"""
    flags = []
    k, previous = metrics.get("n_clusters"), metrics.get("previous_k")
    if isinstance(previous, int) and isinstance(k, int) and previous != k:
        when = f" in {metrics['previous_month']}" if metrics.get("previous_month") else ""
        flags.append(
            f"k changed from {previous}{when} to {k}: many markets may have changed segment; check the "
            "markets that changed segment before relying on this month's SegmentIDs"
        )
    searched = sorted(int(x) for x in metrics.get("k_curve") or {})
    if isinstance(k, int) and len(searched) > 1 and k == searched[-1] == k_max:
        flags.append(
            f"k = {k} is the largest k searched ({searched[0]}-{searched[-1]}): the data may hold more segments; "
            "raise clustering.k_max to search further"
        )
    return flags


def id_note(labels: Sequence[str]) -> str | None:
    """Why this month's SegmentIDs are not 1..k (None when they are): ids follow segments across months
    (``core.alignment``), so an id whose segment ended is not reused and a new segment takes a new one."""
    ids = sorted(int(x) for x in set(labels) if x != "unassigned")
    if ids == list(range(1, len(ids) + 1)):
        return None
    return (
        f"SegmentIDs this month: {', '.join(map(str, ids))}. An id stays with its segment from month to month, so "
        "the ids of segments that ended are not reused and a new segment takes a new id: gaps are expected."
    )


def excluded_rows(excluded: pd.DataFrame) -> list[dict[str, str]]:
    """One row per excluded market (``market_key``, ``reason``: every check's reason, joined), by key."""
    if excluded.empty:
        return []
    grouped = excluded.groupby(excluded["market_key"].astype(str), sort=True)["reason"].agg(
        lambda reasons: "; ".join(dict.fromkeys(map(str, reasons)))
    )
    return [{"market_key": key, "reason": reason} for key, reason in grouped.items()]


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def changed_markets(segments: pd.DataFrame) -> pd.DataFrame:
    """Markets segmented in both months whose SegmentID changed (``previous_segment_id`` != ``segment_id``).

    Returns ``market_key``, ``market_name``, ``previous_segment``, ``segment`` (labels), sorted by key.
    Markets new this month (no previous SegmentID) are not moves and are left out.
    """
    prev = pd.to_numeric(segments["previous_segment_id"], errors="coerce")
    now = pd.to_numeric(segments["segment_id"], errors="coerce")
    moved = segments[prev.notna() & (prev != now)]
    names = moved["market_name"] if "market_name" in moved else moved["market_key"]
    out = pd.DataFrame(
        {
            "market_key": moved["market_key"].astype(str),
            "market_name": names.astype(str),
            "previous_segment": [segment_label(v) for v in prev[moved.index]],
            "segment": [segment_label(v) for v in now[moved.index]],
        }
    )
    return out.sort_values("market_key", ignore_index=True)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


#: Profile table columns: (profile column, header, formatter, is text).
_PROFILE_COLUMNS: tuple[tuple[str, str, Any, bool], ...] = (
    ("n_markets", "markets", lambda v: f"{int(v)}", False),
    ("share", "share", _pct, False),
    ("avg_discount", "avg discount", _pct, False),
    ("platinum_share", "Platinum", _pct, False),
    ("gold_share", "Gold", _pct, False),
    ("silver_share", "Silver", _pct, False),
    ("avg_ltv", "avg lifetime value", lambda v: f"{v:,.0f}", False),
    ("total_product_lines", "product lines", lambda v: f"{v:.1f}", False),
    ("total_subcategories", "subcategories", lambda v: f"{v:.1f}", False),
    ("avg_monthly_revenue", "avg revenue/month", lambda v: f"{v:,.0f}", False),
    ("trend_slope", "trend (/month)", lambda v: f"{100 * v:+.1f}%", False),
    ("recent_growth", "recent growth", lambda v: f"{100 * v:+.0f}%", False),
    ("volatility", "volatility", _pct, False),
    ("seasonality", "seasonality", _pct, False),
    ("main_group", "main group", str, True),
    ("main_country", "main country", str, True),
    ("examples", "examples", str, True),
)


def _label_order(label: str) -> tuple[bool, int]:
    return (label == "unassigned", int(label) if label != "unassigned" else 0)


#: How a configured static feature outside the seed's is printed, by its kind.
_KIND_FORMATS: dict[str, Any] = {
    "fraction": _pct,
    "currency": lambda v: f"{v:,.0f}",
    "count": lambda v: f"{v:.1f}",
    "ratio": lambda v: f"{v:.2f}",
}


def profile_rows(
    profiles: pd.DataFrame, features: tuple[StaticFeature, ...] = DEFAULT_FEATURES
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Column headers and formatted rows of the profile table, one row per SegmentID (unassigned last).

    Reads ``profiles`` by column name: ``segment_id``, ``n_markets`` and ``description`` are required
    (``ValueError`` naming them otherwise); any other profile column that is absent is left out. Static
    ``features`` outside the seed's seven get a column after the seed's, titled with their label and
    printed by their kind (a fraction as a percentage).
    Headers are ``{"title", "text"}``; rows ``{"segment", "colour", "n_markets", "cells",
    "description"}`` with plain strings (the template escapes them).
    """
    missing = [c for c in ("segment_id", "n_markets", "description") if c not in profiles]
    if missing:
        raise ValueError(f"profiles.parquet is missing column(s) {missing}")
    extra = [(f.name, f.words, _KIND_FORMATS[f.kind], False) for f in features if f.name not in STATIC_FEATURES]
    columns = [c for c in _PROFILE_COLUMNS if c[0] in profiles]
    columns[2:2] = [c for c in extra if c[0] in profiles]
    labels = [segment_label(v) for v in profiles["segment_id"]]
    colours = _colours(labels)
    rows = []
    for i in sorted(range(len(profiles)), key=lambda i: _label_order(labels[i])):
        record = profiles.iloc[i]
        cells = []
        for name, _title, fmt, _text in columns:
            value = record[name]
            cells.append("" if pd.isna(value) else fmt(value))
        rows.append(
            {
                "segment": labels[i],
                "colour": colours[labels[i]],
                "n_markets": int(record["n_markets"]),
                "cells": cells,
                "description": str(record["description"]),
            }
        )
    return [{"title": title, "text": text} for _name, title, _fmt, text in columns], rows


def _figure_html(fig: go.Figure, div_id: str) -> str:
    # plotly.js is inlined once in the page head; each figure is a div and its JSON (plotly escapes
    # "<" in the JSON, so data cannot close the script element).
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("report.html")


def _fmt(value: object, spec: str = ".3f") -> str:
    number = _finite(value)
    return format(number, spec) if number is not None else "n/a"


def _training_fact(model: Mapping) -> str:
    # model.json of train_autoencoder; older ones have no stop_reason.
    if not model.get("stop_reason"):
        return "n/a"
    text = training_summary(model)
    if model["stop_reason"] != "converged":
        knob = "model.max_steps" if model["stop_reason"] == "max_steps" else "model.epochs"
        text = f"WARNING: {text} before the loss settled; raise {knob} for a better-converged encoder"
    return text


def external_plotly(page: str, src: str) -> str:
    """``page`` (a report) with its inlined plotly.js replaced by ``<script src=src>``: the file stays
    self-contained for offline use, the served page loads the library from a cached URL. A page without
    the markers (an older report) is returned as it is."""
    start, end = page.find(PLOTLY_START), page.find(PLOTLY_END)
    if start < 0 or end < start:
        return page
    return f'{page[:start]}<script src="{html.escape(src)}"></script>{page[end + len(PLOTLY_END) :]}'


def render_report(run: RunArtifacts) -> str:
    """The report's HTML (a complete document, plotly.js inline) from a run's artifacts.

    The PCA uses the run's own ``clustering.static_weight`` (after Params), so it shows the features
    that were clustered. Raises ``ArtifactError`` for a missing artifact and ``ValueError`` from the
    figure builders on inconsistent ones.
    """
    from plotly.offline import get_plotlyjs

    from include.segmentation.adapters.writeback import model_version

    inputs = load_inputs(run)
    metrics, model = inputs.metrics, inputs.model
    static_weight = run.config.clustering.static_weight
    k = int(metrics["n_clusters"])
    clustered = run.config.clustered_features(run.derived_features)
    projection = pca_projection(inputs.segments, inputs.embeddings, static_weight, clustered)
    figures = {
        "pca": _figure_html(pca_figure(projection), "pca-plot"),
        "silhouette": _figure_html(silhouette_figure(metrics), "silhouette-plot"),
        "loss": _figure_html(loss_figure(model.get("losses") or []), "loss-plot"),
    }
    if metrics.get("k_curve"):
        figures["k_curve"] = _figure_html(
            k_curve_figure(metrics["k_curve"], k, metrics.get("k_curve_gap")), "k-curve-plot"
        )
    headers, rows = profile_rows(inputs.profiles, run.config.static_features)
    moved = changed_markets(inputs.segments)
    previous_month = metrics.get("previous_month")
    prev = pd.to_numeric(inputs.segments["previous_segment_id"], errors="coerce")
    stability = _finite(metrics.get("stability"))
    facts = [
        ("month", f"{run.month} ({run.info['month_reason']})" if run.info.get("month_reason") else str(run.month)),
        *run_facts(run),
        ("model version", model_version(run.config.model_version_prefix, run.month)),
        ("algorithm", str(metrics.get("algorithm", "n/a"))),
        (
            "k (segments)",
            f"{k} (was {metrics['previous_k']})" if metrics.get("previous_k") not in (None, k) else str(k),
        ),
        ("why this k", str(metrics.get("k_reason") or "n/a")),
        ("static features", feature_fact(run.config.static_features, clustered, run.derived_features)),
        ("markets segmented", str(len(inputs.segments))),
        ("markets excluded", str(inputs.excluded["market_key"].nunique())),
        ("unassigned share", _fmt(metrics.get("noise_fraction"), ".1%")),
        ("silhouette hybrid", _fmt(metrics.get("silhouette_hybrid"))),
        ("silhouette LSTM-only", _fmt(metrics.get("silhouette_lstm"))),
        ("silhouette static-only", _fmt(metrics.get("silhouette_static"))),
        ("static weight", f"{static_weight:.2f}"),
        ("final training loss", _fmt(model.get("final_loss"), ".4g")),
        ("training", _training_fact(model)),
        ("trained on", str(model.get("device", "n/a"))),
        ("previous month", previous_month or "none (first month)"),
        ("kept their SegmentID", f"{stability:.0%}" if stability is not None else "n/a"),
    ]
    return _template().render(
        month=str(run.month),
        dry_run=run.dry_run,
        facts=facts,
        plotlyjs=Markup(get_plotlyjs()),
        figures={name: Markup(value) for name, value in figures.items()},
        headers=headers,
        rows=rows,
        moved=moved.to_dict("records"),
        previous_month=previous_month,
        n_new=int((prev.isna()).sum()) if previous_month else 0,
        excluded=excluded_rows(inputs.excluded),
        warnings=k_warnings(metrics, run.config.clustering.k_max),
        id_note=id_note([row["segment"] for row in rows]),
        nav=Markup(NAV_MARKER),
    )
