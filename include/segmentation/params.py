"""The DAG's Params: what a user may set per run in the Airflow trigger form.

JSON-schema validated by Airflow before any task runs; scalar types only (object Params render
poorly in the form). Defaults come from the configuration, so the form shows what a run would use.
"""

from __future__ import annotations

from airflow.sdk import Param

from include.segmentation.config import MONTH_PATTERN, SegmentationConfig


def run_params(defaults: SegmentationConfig) -> dict[str, Param]:
    """Params for ``market_segmentation``, defaulting to ``defaults``' values."""
    return {
        "target_month": Param(
            None,
            type=["null", "string"],
            pattern=MONTH_PATTERN,
            title="Target month",
            section="Month",
            description="YYYY-MM to segment. Empty: the month of the run's logical date once that month is "
            "over (2013-12-01 segments 2013-12, in any timezone); the form's default logical date is now, so "
            "empty here means the last complete month.",
        ),
        "seq_len": Param(
            defaults.sequences.seq_len,
            type="integer",
            minimum=6,
            maximum=24,
            title="Window length (months)",
            section="Model and segments",
            description="Months of history per market, 6-24.",
        ),
        "algorithm": Param(
            defaults.clustering.algorithm,
            type="string",
            enum=["kmeans", "dbscan", "hdbscan"],
            title="Clustering algorithm",
            section="Model and segments",
            description="kmeans: k by the gap statistic (or n_clusters); dbscan / hdbscan: density-based, markets "
            "in no dense region are unassigned (noise); fewer than 2 segments fails the run.",
        ),
        "n_clusters": Param(
            defaults.clustering.n_clusters,
            type=["null", "integer"],
            minimum=2,
            maximum=50,
            title="Number of segments",
            section="Model and segments",
            description="K-Means only (DBSCAN/HDBSCAN ignore it); empty: chosen by the gap statistic, kept from "
            "last month unless the data say otherwise.",
        ),
        "static_weight": Param(
            defaults.clustering.static_weight,
            type="number",
            minimum=0,
            maximum=1,
            title="Static weight",
            section="Model and segments",
            description="Share (0-1) of the static block in the hybrid features.",
        ),
        "epochs": Param(
            defaults.model.epochs,
            type="integer",
            minimum=1,
            maximum=10_000,
            title="Maximum training epochs",
            section="Model and segments",
            description="Training stops earlier when the loss stops improving, or at model.max_steps.",
        ),
        "approval": Param(
            defaults.approval.mode,
            type="string",
            enum=["never", "on_change", "always"],
            title="Approval before writing",
            section="Run",
            description="never: write at once; on_change: a person approves in Required actions when SegmentIDs "
            "change (fewer markets keep theirs than approval.min_kept_share, k changes, a segment appears or "
            "disappears, or many markets were excluded); always: every month. Rejected: nothing is written.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            section="Run",
            description="Compute everything (report included), write nothing to the warehouse.",
        ),
        "overwrite_history": Param(
            False,
            type="boolean",
            title="Overwrite history",
            section="Run",
            description="Re-write this month even though a later month was already written and aligned to it "
            "(its SegmentIDs, migrations and stability then refer to the old ids: re-run the later months "
            "afterwards, in order). Off: such a run is refused and names the months to re-run.",
        ),
        "force_retrain": Param(
            False,
            type="boolean",
            title="Start fresh (force retrain)",
            section="Run",
            description="Train from scratch (no warm start from last month's model) and choose k and segment "
            "centres afresh, even if this month's model exists. Segments are still matched to last month's "
            "SegmentIDs.",
        ),
    }
