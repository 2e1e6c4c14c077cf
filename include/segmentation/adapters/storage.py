"""Where each month's artifacts live: a local folder or object storage, through one path type.

``artifacts_dir`` may be a local path (``artifacts``, ``/opt/airflow/artifacts``: a volume shared by
the workers) or an object-storage URL (``s3://bucket/segmentation``, ``gs://...``), read and written
through Airflow's ``ObjectStoragePath`` (fsspec; the matching provider and its Airflow connection
give the credentials, e.g. ``s3://aws_default@bucket/...``). Paths travel through XCom as strings.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


def as_path(location: str | Path) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a URL, or for a local path (made absolute, ``file://``)."""
    from airflow.sdk import ObjectStoragePath

    text = str(location)
    if "://" not in text:
        text = Path(text).resolve().as_uri()
    return ObjectStoragePath(text)


def _writable(path: ObjectStoragePath) -> ObjectStoragePath:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_parquet(frame: pd.DataFrame, path: ObjectStoragePath) -> str:
    """Write ``frame`` (no index) and return the path as a string for XCom."""
    with _writable(path).open("wb") as out:
        frame.to_parquet(out, index=False)
    return str(path)


def read_parquet(location: str | ObjectStoragePath) -> pd.DataFrame:
    with as_path(location).open("rb") as src:
        return pd.read_parquet(src)


def write_npz(path: ObjectStoragePath, **arrays: np.ndarray) -> str:
    """Write arrays as one ``.npz`` (uncompressed) and return the path as a string."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _writable(path).write_bytes(buffer.getvalue())
    return str(path)


def read_npz(location: str | ObjectStoragePath) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (``allow_pickle`` off: no code runs on load)."""
    with np.load(io.BytesIO(as_path(location).read_bytes()), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def write_json(path: ObjectStoragePath, value: Any) -> str:
    _writable(path).write_text(json.dumps(value, indent=2))
    return str(path)


def read_json(location: str | ObjectStoragePath) -> Any:
    return json.loads(as_path(location).read_text())
