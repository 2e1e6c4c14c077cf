"""The run's catalogue: every file a run writes, named in one place.

Each run owns a folder, ``<artifacts_dir>/<YYYY-MM>/<run>/`` (``run_key``), so a dry run, a re-run,
two overlapping runs of one month and a backfill never share or overwrite a file. The folder
starts with the run's configuration snapshot (``config.json``, the configuration file plus Params,
taken once when the run starts) and ``run.json`` (run id, month, Params, dry run, start time); every
step opens the run from its folder (``RunArtifacts.open``) and reads and writes only the paths
named here, so a configuration edited mid-run changes nothing in a run already started.

Trained models are content-addressed and shared across runs: ``<artifacts_dir>/models/<fingerprint>.pt``,
the fingerprint hashing the training windows, settings, seed and starting model; a run's
``model.json`` names the fingerprint it used and the model's SHA-256, which is checked on every read.

Which month is *published* is not decided here: it is the run whose rows ``MARKET_SEGMENT`` holds
(the latest successful write of the month), read from the warehouse.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from include.segmentation.adapters.storage import ArtifactError, as_path, read_json, write_json
from include.segmentation.config import SegmentationConfig

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


class _File:
    """A file of the run's folder, named once: ``RunArtifacts.static`` is ``<folder>/static.parquet``."""

    def __init__(self, name: str, written_by: str) -> None:
        self.name, self.written_by = name, written_by

    def __get__(self, run: RunArtifacts | None, owner: type) -> ObjectStoragePath:
        if run is None:
            return self  # type: ignore[return-value]  # the descriptor itself, on the class
        return run.folder / self.name


#: Shared, content-addressed trained models: ``<artifacts_dir>/models/<fingerprint>.pt``.
MODELS = "models"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_key(run_id: str) -> str:
    """A folder name for an Airflow run id: its safe characters plus 8 hex digits of its hash.

    ``manual__2014-01-01T00:00:00+00:00`` -> ``manual__2014-01-01T00_00_00_00_00-1a2b3c4d``: readable,
    valid in a URL and an object key, and distinct for distinct run ids. Raises ``ValueError`` for an
    empty run id.
    """
    if not run_id or not run_id.strip():
        raise ValueError("run_id must be a non-empty string")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', run_id)[:80]}-{digest}"


@dataclass(frozen=True)
class RunArtifacts:
    """One run's files. ``config`` is the run's snapshot, ``info`` what ``run.json`` records.

    Build one with ``start`` (the first task: writes the snapshot) or ``open`` (every later task).
    """

    config: SegmentationConfig
    month: pd.Period
    run_id: str
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def root(self) -> ObjectStoragePath:
        """``artifacts_dir`` as a path."""
        return as_path(self.config.artifacts_dir)

    @property
    def folder(self) -> ObjectStoragePath:
        """``<artifacts_dir>/<YYYY-MM>/<run_key>``: this run's files and no other run's."""
        return self.root / self.month.strftime("%Y-%m") / run_key(self.run_id)

    # The run's files, in the order the steps write them.
    config_file = _File("config.json", "start_run: the configuration (file + Params), taken once")
    run_file = _File("run.json", "start_run: run id, month, Params, dry run, start time")
    contract = _File("contract.json", "check_warehouse: the mapped tables' columns and types")
    static = _File("static.parquet", "extract_static_features")
    trends = _File("trends.parquet", "build_sequences")
    sequences = _File("sequences.npz", "build_sequences")
    quality = _File("quality.json", "check_data_quality: per check its policy, count, examples")
    excluded = _File("excluded.parquet", "check_data_quality: market, check, reason")
    inputs = _File("inputs.npz", "prepare_inputs: training, held-out and latest windows, scaler")
    previous = _File("previous.json", "read_previous: the published month this run continues from")
    previous_segments = _File("previous.parquet", "read_previous: that month's SegmentIDs")
    model = _File("model.json", "train_autoencoder: fingerprint, checksum, losses, how training stopped")
    embeddings = _File("embeddings.parquet", "embed_markets")
    clusters = _File("clusters.parquet", "cluster_markets: each market's cluster label")
    clustering = _File("clustering.json", "cluster_markets: k, why, silhouettes, k curve")
    segments = _File("segments.parquet", "align_segments: SegmentIDs carried over from last month")
    metrics = _File("metrics.json", "align_segments: the month's figures for the run record and report")
    profiles = _File("profiles.parquet", "profile_segments: one row per SegmentID, with its description")
    report = _File("report.html", "build_report")
    approval = _File("approval.json", "decide_approval: the change against last month, whether to ask and why")
    outcome = _File("outcome.json", "record_outcome: written, dry run, rejected or failed, with k and stability")

    @property
    def dry_run(self) -> bool:
        """Compute everything, write nothing to the warehouse (the ``dry_run`` Param)."""
        return bool(self.info.get("dry_run", False))

    @property
    def fresh(self) -> bool:
        """No warm start of the model, k or centres (the ``force_retrain`` Param)."""
        return bool(self.info.get("fresh", False))

    @property
    def overwrite_history(self) -> bool:
        """Write this month even when a later month was written from it (the ``overwrite_history`` Param)."""
        return bool(self.info.get("overwrite_history", False))

    @property
    def derived_features(self) -> tuple[str, ...]:
        """Static features on columns a loader derived (``contract.json``; none before check_warehouse ran)."""
        if not self.contract.exists():
            return ()
        return tuple(read_json(self.contract).get("derived_features", ()))

    def model_file(self, fingerprint: str) -> ObjectStoragePath:
        """The shared trained model with this fingerprint (``<artifacts_dir>/models/<fingerprint>.pt``)."""
        if not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            raise ValueError(f"not a model fingerprint (64 hex digits): {fingerprint!r}")
        return self.root / MODELS / f"{fingerprint}.pt"

    def start(self) -> str:
        """Write the configuration snapshot and ``run.json``; returns the folder (a string, for XCom)."""
        snapshot = self.config.model_dump(mode="json", by_alias=True)
        snapshot["artifacts_dir"] = str(self.root)  # absolute: every worker finds the same files
        write_json(self.config_file, snapshot)
        write_json(self.run_file, {"run_id": self.run_id, "month": str(self.month), **self.info})
        return str(self.folder)

    @classmethod
    def open(cls, folder: str | ObjectStoragePath) -> RunArtifacts:
        """The run whose folder ``start`` wrote: its configuration snapshot, month, run id and info.

        Raises ``ArtifactError`` naming a missing or unreadable ``config.json`` / ``run.json``.
        """
        folder = as_path(folder)
        info = read_json(folder / cls.run_file.name)
        config_file = folder / cls.config_file.name
        try:
            config = SegmentationConfig.model_validate(read_json(config_file))
        except ArtifactError:
            raise
        except ValueError as err:
            raise ArtifactError(f"{config_file} is not a valid configuration: {err}") from err
        return cls(config, pd.Period(info.pop("month"), "M"), info.pop("run_id"), info)
