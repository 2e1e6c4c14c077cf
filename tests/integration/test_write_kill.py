"""A write-back that cannot half-happen: the writing process is SIGKILLed at chosen statements of
``writeback.write_segments`` against a file-backed emulator (fakesnow on a DuckDB file, as the
embedded warehouse persists it). After each kill the file reopens (DuckDB replays its write-ahead
log), every month of MARKET_SEGMENT, SEGMENT_MIGRATION, SEGMENT_PROFILE and SEGMENTATION_RUN is as
before (or, killed after COMMIT, as after the write), and a retry with the same run id completes.

The child process kills itself (``os.kill(os.getpid(), SIGKILL)``) from a wrapper around the
emulator cursor's ``execute``, before or after the n-th statement that starts with a given text:
no Python cleanup, no ROLLBACK, no checkpoint runs, as when a worker is OOM-killed or evicted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOV, DEC = pd.Period("2013-11", "M"), pd.Period("2013-12", "M")
TABLES = {
    "MARKET_SEGMENT": "MARKET_KEY, SEGMENT_MONTH",
    "SEGMENT_MIGRATION": "MARKET_KEY, SEGMENT_MONTH",
    "SEGMENT_PROFILE": "SEGMENT_MONTH, SEGMENT_ID",
    "SEGMENTATION_RUN": "SEGMENT_MONTH, RUN_ID",
}

#: name -> (kill before/after the statement, statement prefix (whitespace-normalised, upper case), n-th match)
KILL_POINTS = {
    "while staging": ("before", "COPY INTO SEGMENT_MIGRATION_STAGE", 1),
    "before BEGIN": ("before", "BEGIN", 1),
    "after the DELETE": ("after", "DELETE FROM MARKET_SEGMENT WHERE", 1),
    "after the INSERT": ("after", "INSERT INTO MARKET_SEGMENT (", 1),
    "after the profiles": ("after", "INSERT INTO SEGMENT_PROFILE ", 1),
    "after the run record": ("after", "INSERT INTO SEGMENTATION_RUN", 1),
    "before COMMIT": ("before", "COMMIT", 1),
}


def _profiles(ids: list[int]) -> pd.DataFrame:
    from include.segmentation.adapters.writeback import PROFILE_FIELDS

    frame = pd.DataFrame({"segment_id": ids})
    for name in PROFILE_FIELDS:
        frame[name] = 0.25
    frame["n_markets"] = 1
    frame["main_group"], frame["main_country"], frame["examples"] = "Europe", "France", "Paris"
    frame["description"] = [f"segment {i}" for i in ids]
    return frame


def _run(run_id: str, n_clusters: int):
    from include.segmentation.adapters.writeback import RunRecord

    return RunRecord(
        run_id=run_id,
        model_version="lstm_hybrid_v2.0_20131231",
        algorithm="kmeans",
        n_clusters=n_clusters,
        n_markets=4,
        n_excluded=0,
        noise_fraction=0.0,
        seq_len=12,
        silhouette_hybrid=0.4,
        silhouette_lstm=0.3,
        silhouette_static=0.2,
        final_loss=0.1,
        stability=0.5,
    )


def _write(conn, which: str) -> int:
    """The writes of this test: November, December's first version, and December's re-run."""
    from include.segmentation.adapters.writeback import write_segments
    from include.segmentation.config import SegmentationConfig

    w = SegmentationConfig().warehouse
    if which == "nov":
        segs = pd.DataFrame({"market_key": ["A", "B", "C"], "segment_id": [1, 2, 2]})
        return write_segments(conn, w, segs, NOV, _run("nov", 2), profiles=_profiles([1, 2]))
    if which == "dec-old":
        segs = pd.DataFrame({"market_key": ["A", "B", "C"], "segment_id": [1, 2, 1], "previous_segment_id": [1, 2, 2]})
        return write_segments(conn, w, segs, DEC, _run("dec-old", 2), NOV, _profiles([1, 2]))
    segs = pd.DataFrame(
        {"market_key": ["A", "B", "C", "D"], "segment_id": [2, 2, 1, 3], "previous_segment_id": [1, 2, 2, None]}
    )
    return write_segments(conn, w, segs, DEC, _run("dec-new", 3), NOV, _profiles([1, 2, 3]))


def _connect(db: Path):
    import snowflake.connector

    return snowflake.connector.connect(database="SEGMENTATION", schema="MART")


def _snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row of the four result tables (None for a table that does not exist), reopening the file."""
    import fakesnow

    out: dict[str, list[tuple] | None] = {}
    with fakesnow.patch(db_path=db):
        conn = _connect(db)
        cur = conn.cursor()
        for table, order in TABLES.items():
            cur.execute("SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME = %s", (table,))
            if cur.fetchone()[0] == 0:
                out[table] = None
                continue
            cur.execute(f"SELECT * FROM {table} ORDER BY {order}")
            out[table] = [tuple(str(v) for v in row) for row in cur.fetchall()]
        conn.close()
    return out


def _write_in_process(db: Path, *which: str) -> None:
    import fakesnow

    with fakesnow.patch(db_path=db):
        conn = _connect(db)
        for w in which:
            _write(conn, w)
        conn.close()


def _child(db: str, point: str) -> None:
    """Run December's re-run against ``db`` and SIGKILL this process at ``point``."""
    import fakesnow
    from fakesnow.cursor import FakeSnowflakeCursor

    when, prefix, nth = KILL_POINTS.get(point, ("after", point, 1))
    no_transaction = os.environ.get("KILL_TEST_WITHOUT_TRANSACTION") == "1"  # the control case
    seen = 0
    original = FakeSnowflakeCursor.execute

    def execute(self, command, *args, **kwargs):
        nonlocal seen
        statement = " ".join(str(command).split()).upper()
        if no_transaction and statement in ("BEGIN", "COMMIT", "ROLLBACK"):
            return self
        hit = statement.startswith(prefix)
        seen += hit
        if hit and seen == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(self, command, *args, **kwargs)
        if hit and seen == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    FakeSnowflakeCursor.execute = execute
    with fakesnow.patch(db_path=db):
        _write(_connect(Path(db)), "dec-new")
    sys.exit(3)  # the kill point was never reached


def _kill_at(db: Path, point: str, **env: str) -> None:
    child = subprocess.run(
        [sys.executable, __file__, str(db), point],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, f"exit {child.returncode}: {child.stderr[-3000:]}"


@pytest.fixture(scope="module")
def states(tmp_path_factory) -> dict:
    """A warehouse file with November and December written, its contents, and the contents a clean
    re-run of December leaves."""
    base = tmp_path_factory.mktemp("base")
    _write_in_process(base, "nov", "dec-old")
    reference = tmp_path_factory.mktemp("reference")
    shutil.copytree(base, reference, dirs_exist_ok=True)
    _write_in_process(reference, "dec-new")
    before, after = _snapshot(base), _snapshot(reference)
    assert before != after
    assert [r[0] for r in after["MARKET_SEGMENT"] if r[1] == "2013-12-01"] == ["A", "B", "C", "D"]
    return {"base": base, "before": before, "after": after}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_write_leaves_every_month_as_it_was_and_a_retry_completes(states, tmp_path, point):
    db = tmp_path / "warehouse"
    shutil.copytree(states["base"], db)
    _kill_at(db, point)
    assert _snapshot(db) == states["before"]  # reopens (WAL replayed), nothing of the killed write
    _write_in_process(db, "dec-new")  # the task's retry: same run id
    assert _snapshot(db) == states["after"]


def test_a_write_killed_right_after_commit_is_complete_and_a_retry_is_idempotent(states, tmp_path):
    db = tmp_path / "warehouse"
    shutil.copytree(states["base"], db)
    _kill_at(db, "COMMIT")  # after COMMIT returned: committed, never checkpointed
    assert (db / "SEGMENTATION.db.wal").exists()  # the commit lives only in the write-ahead log
    assert _snapshot(db) == states["after"]
    _write_in_process(db, "dec-new")
    assert _snapshot(db) == states["after"]


def test_the_harness_catches_a_write_without_a_transaction(states, tmp_path):
    """Control: with BEGIN/COMMIT turned into no-ops (each statement commits on its own), the same
    kill after the DELETE loses December's rows, so the tests above would fail for such a write."""
    db = tmp_path / "warehouse"
    shutil.copytree(states["base"], db)
    _kill_at(db, "after the DELETE", KILL_TEST_WITHOUT_TRANSACTION="1")
    months = {row[1] for row in _snapshot(db)["MARKET_SEGMENT"]}
    assert months == {"2013-11-01"}  # December gone, nothing written in its place


def test_a_first_write_killed_between_its_create_tables_is_retried(tmp_path):
    """DDL commits on its own in Snowflake, so a kill between the CREATE TABLEs of a first write
    leaves some result tables, empty; the retry creates the rest (IF NOT EXISTS) and writes."""
    db = tmp_path / "warehouse"
    db.mkdir()
    _kill_at(db, "CREATE TABLE IF NOT EXISTS SEGMENTATION_RUN")
    partial = _snapshot(db)
    assert partial["MARKET_SEGMENT"] == []
    assert partial["SEGMENTATION_RUN"] == []
    assert partial["SEGMENT_MIGRATION"] is None
    assert partial["SEGMENT_PROFILE"] is None
    _write_in_process(db, "dec-new")
    assert len(_snapshot(db)["MARKET_SEGMENT"]) == 4


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
