"""Reading and writing artifacts: a local folder or object storage, through one path type.

``artifacts_dir`` may be a local path (``artifacts``, ``/opt/airflow/artifacts``: a volume shared by
the workers) or an object-storage URL (``s3://bucket/segmentation``, ``gs://...``), read and written
through Airflow's ``ObjectStoragePath`` (fsspec; the matching provider and its Airflow connection
give the credentials, e.g. ``s3://aws_default@bucket/...``). Which file is which is ``catalog.py``'s
business; this module only moves bytes.

Writes are atomic: a local file is written under a temporary name in the same folder and renamed
over the target (``os.replace``), so a reader sees the old file or the new one, never half of one;
on object storage a PUT is already all-or-nothing. A file that cannot be read (missing, truncated,
not the expected format) raises ``ArtifactError`` naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


class ArtifactError(ValueError):
    """An artifact is missing or cannot be read (truncated, corrupt, another format).

    A ``ValueError``: the DAG fails the task at once, since retrying the reader cannot repair the file;
    re-running the run (or the task that writes the file) can.
    """


def as_path(location: str | os.PathLike) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a URL, or for a local path (made absolute, ``file://``)."""
    from airflow.sdk import ObjectStoragePath

    text = str(location)
    if "://" not in text:
        text = Path(text).resolve().as_uri()
    return ObjectStoragePath(text)


def write_bytes(path: ObjectStoragePath, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.protocol in ("file", "local"):
        target = Path(path.path)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
    else:
        path.write_bytes(data)
    return str(path)


def read_bytes(location: str | ObjectStoragePath) -> bytes:
    """The file's bytes. Raises ``ArtifactError`` naming a missing file."""
    path = as_path(location)
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise ArtifactError(f"artifact {path} does not exist") from err


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the checksum a stored model is verified against."""
    return hashlib.sha256(data).hexdigest()


def _unreadable(path: object, what: str, err: Exception) -> ArtifactError:
    return ArtifactError(f"artifact {path} is not a readable {what} (truncated or corrupt?): {err}")


def write_parquet(frame: pd.DataFrame, path: ObjectStoragePath) -> str:
    """Write ``frame`` (no index) and return the path as a string."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return write_bytes(path, buffer.getvalue())


def read_parquet(location: str | ObjectStoragePath) -> pd.DataFrame:
    """A Parquet artifact as a frame. Raises ``ArtifactError`` naming a missing or unreadable file."""
    data = read_bytes(location)
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError... for a damaged file
        raise _unreadable(location, "Parquet file", err) from err


def write_npz(path: ObjectStoragePath, **arrays: np.ndarray) -> str:
    """Write arrays as one ``.npz`` (uncompressed) and return the path as a string."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def read_npz(location: str | ObjectStoragePath) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (``allow_pickle`` off: no code runs on load).

    Raises ``ArtifactError`` naming a missing or unreadable file.
    """
    data = read_bytes(location)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as err:  # BadZipFile, EOFError, ValueError...
        raise _unreadable(location, "npz archive", err) from err


def write_json(path: ObjectStoragePath, value: Any) -> str:
    """Write ``value`` as indented JSON and return the path as a string."""
    return write_bytes(path, json.dumps(value, indent=2).encode())


def read_json(location: str | ObjectStoragePath) -> Any:
    """A JSON artifact. Raises ``ArtifactError`` naming a missing or unreadable file."""
    data = read_bytes(location)
    try:
        return json.loads(data)
    except ValueError as err:
        raise _unreadable(location, "JSON file", err) from err


def write_text(path: ObjectStoragePath, text: str) -> str:
    """Write UTF-8 text and return the path as a string."""
    return write_bytes(path, text.encode("utf-8"))
