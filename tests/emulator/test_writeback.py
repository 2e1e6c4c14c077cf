"""Idempotent, atomic write-back on the emulator."""

import re

import numpy as np
import pandas as pd
import pytest

from include.segmentation.adapters.writeback import HistoryConflict, RunRecord, model_version, write_segments
from include.segmentation.config import SegmentationConfig

W = SegmentationConfig().warehouse
DEC, NOV = pd.Period("2013-12", "M"), pd.Period("2013-11", "M")


def run(run_id="r1", **kw):
    base = dict(
        run_id=run_id,
        model_version=model_version("lstm_hybrid_v2.0", DEC),
        algorithm="kmeans",
        n_clusters=2,
        n_markets=3,
        n_excluded=0,
        noise_fraction=0.0,
        seq_len=12,
        silhouette_hybrid=0.4,
        silhouette_lstm=0.3,
        silhouette_static=float("nan"),
        final_loss=0.1,
    )
    return RunRecord(**(base | kw))


def rows(conn, month=None):
    sql = "SELECT MARKET_KEY, SEGMENT_MONTH, SEGMENT_ID, RUN_ID FROM MARKET_SEGMENT ORDER BY SEGMENT_MONTH, MARKET_KEY"
    cur = conn.cursor()
    cur.execute(sql)
    return [r for r in cur.fetchall() if month is None or r[1] == month.start_time.date()]


def segs(mapping):
    return pd.DataFrame({"market_key": list(mapping), "segment_id": list(mapping.values())})


def test_model_version_uses_the_month_end():
    assert model_version("lstm_hybrid_v2.0", DEC) == "lstm_hybrid_v2.0_20131231"
    assert model_version("lstm_hybrid_v2.0", pd.Period("2012-02", "M")) == "lstm_hybrid_v2.0_20120229"


def test_rerun_replaces_the_month_and_leaves_others(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), NOV, run("nov"))
    assert write_segments(fake_conn, W, segs({"A": 1, "B": 2, "C": -1}), DEC, run("r1")) == 3
    assert write_segments(fake_conn, W, segs({"A": 1, "B": 2, "C": -1}), DEC, run("r1")) == 3
    assert len(rows(fake_conn, DEC)) == 3
    # a later run where C dropped out and A moved: the month is replaced whole
    write_segments(fake_conn, W, segs({"A": 2, "B": 2}), DEC, run("r2"))
    assert [(r[0], r[2], r[3]) for r in rows(fake_conn, DEC)] == [("A", 2, "r2"), ("B", 2, "r2")]
    assert [(r[0], r[2], r[3]) for r in rows(fake_conn, NOV)] == [("A", 1, "nov"), ("B", 2, "nov")]
    cur = fake_conn.cursor()
    cur.execute("SELECT RUN_ID, N_CLUSTERS, SILHOUETTE_HYBRID, SILHOUETTE_STATIC FROM SEGMENTATION_RUN ORDER BY RUN_ID")
    assert cur.fetchall() == [("nov", 2, 0.4, None), ("r1", 2, 0.4, None), ("r2", 2, 0.4, None)]


def test_noise_is_written_as_null(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": -1}), DEC, run())
    assert [(r[0], r[2]) for r in rows(fake_conn, DEC)] == [("A", 1), ("B", None)]


def test_duplicate_market_is_refused_before_anything_changes(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run())
    before = rows(fake_conn)
    bad = pd.DataFrame({"market_key": ["A", "A"], "segment_id": [1, 2]})
    with pytest.raises(ValueError, match="market 'A' appears more than once"):
        write_segments(fake_conn, W, bad, DEC, run("r2"))
    assert rows(fake_conn) == before


def test_failure_inside_the_transaction_rolls_back(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run())
    before = rows(fake_conn)
    # N_CLUSTERS is NOT NULL: the run-record insert fails after the month's rows were deleted
    with pytest.raises(Exception, match="(?i)null"):
        write_segments(fake_conn, W, segs({"A": 3, "B": 3, "C": 3}), DEC, run("r2", n_clusters=None))
    assert rows(fake_conn) == before


def test_empty_segments_never_erase_a_month(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run())
    before = rows(fake_conn)
    with pytest.raises(ValueError, match="no segments to write for 2013-12"):
        write_segments(fake_conn, W, segs({}), DEC, run("r-empty"))
    assert rows(fake_conn) == before


def test_a_reused_run_id_does_not_touch_another_months_record(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), NOV, run("same"))
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run("same"))
    cur = fake_conn.cursor()
    cur.execute("SELECT RUN_ID, SEGMENT_MONTH FROM SEGMENTATION_RUN ORDER BY SEGMENT_MONTH")
    assert [(r[0], str(r[1])) for r in cur.fetchall()] == [("same", "2013-11-01"), ("same", "2013-12-01")]


@pytest.mark.parametrize(("bad", "message"), [(1.7, "1.7"), (0, "SegmentID 0"), ("x", "'x'"), (-7, "-7")])
def test_bad_segment_ids_name_the_market(fake_conn, bad, message):
    with pytest.raises(ValueError, match=f"market 'B' has {message}" if message.startswith("S") else message):
        write_segments(fake_conn, W, segs({"A": 1, "B": bad}), DEC, run())


def test_null_market_keys_are_refused(fake_conn):
    with pytest.raises(ValueError, match="1 segment row"):
        write_segments(fake_conn, W, pd.DataFrame({"market_key": ["A", None], "segment_id": [1, 2]}), DEC, run())


def test_numpy_and_non_finite_metrics_are_bound(fake_conn):
    import numpy as np

    record = run(
        n_markets=np.int64(2), n_clusters=np.int64(2), silhouette_hybrid=float("inf"), final_loss=np.float32(0.5)
    )
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, record)
    cur = fake_conn.cursor()
    cur.execute("SELECT N_MARKETS, SILHOUETTE_HYBRID, FINAL_LOSS FROM SEGMENTATION_RUN")
    assert cur.fetchall() == [(2, None, 0.5)]


def test_migrations_record_who_moved(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), NOV, run("nov"))
    dec = pd.DataFrame({"market_key": ["A", "B", "C"], "segment_id": [1, 1, 2], "previous_segment_id": [1, 2, None]})
    write_segments(fake_conn, W, dec, DEC, run("dec", stability=0.5), previous_month=NOV)
    cur = fake_conn.cursor()
    cur.execute(
        "SELECT MARKET_KEY, PREVIOUS_MONTH, PREVIOUS_SEGMENT_ID, SEGMENT_ID, MOVED FROM SEGMENT_MIGRATION "
        "WHERE SEGMENT_MONTH = '2013-12-01' ORDER BY MARKET_KEY"
    )
    got = [(k, str(m), p, s, moved) for k, m, p, s, moved in cur.fetchall()]
    assert got == [
        ("A", "2013-11-01", 1, 1, False),
        ("B", "2013-11-01", 2, 1, True),
        ("C", "2013-11-01", None, 2, False),
    ]
    cur.execute("SELECT STABILITY FROM SEGMENTATION_RUN WHERE RUN_ID = 'dec'")
    assert cur.fetchall() == [(0.5,)]
    # a re-run replaces the month's migrations too
    write_segments(fake_conn, W, dec.iloc[:2], DEC, run("dec2"), previous_month=NOV)
    cur.execute("SELECT COUNT(*) FROM SEGMENT_MIGRATION WHERE SEGMENT_MONTH = '2013-12-01'")
    assert cur.fetchone()[0] == 2


def test_rewriting_a_month_a_later_month_follows_is_refused_unless_overwrite_history(fake_conn):
    oct_ = pd.Period("2013-10", "M")
    write_segments(fake_conn, W, segs({"A": 1, "B": 2, "C": 2}), oct_, run("oct"))
    # filling a month never written changes no stored id: allowed
    write_segments(fake_conn, W, segs({"A": 1}), pd.Period("2013-09", "M"), run("sep"))
    write_segments(fake_conn, W, segs({"A": 1, "B": 2, "C": 2}), NOV, run("nov"), previous_month=oct_)
    write_segments(fake_conn, W, segs({"A": 1, "B": 1, "C": 2}), DEC, run("dec"), previous_month=NOV)
    before = rows(fake_conn)
    # the same SegmentIDs again (a plain re-run of October): nothing later goes stale, it writes
    assert write_segments(fake_conn, W, segs({"A": 1, "B": 2, "C": 2}), oct_, run("oct-2")) == 3
    # other SegmentIDs for October: November and December were aligned to the old ones
    with pytest.raises(HistoryConflict, match=r"2013-10 is already written .* 2013-11, 2013-12 were written") as err:
        write_segments(fake_conn, W, segs({"A": 2, "B": 1, "C": 1}), oct_, run("oct-3"))
    assert err.value.later == [NOV, DEC]
    assert "overwrite_history" in str(err.value)
    after = rows(fake_conn)
    assert [r for r in after if r[3] != "oct-2"] == [r for r in before if r[3] != "oct"]  # nothing else changed
    cur = fake_conn.cursor()
    cur.execute("SELECT COUNT(*) FROM SEGMENTATION_RUN WHERE RUN_ID = 'oct-3'")
    assert cur.fetchone()[0] == 0
    # the newest month may always be re-written; with overwrite_history an older one too
    write_segments(fake_conn, W, segs({"A": 2, "B": 2, "C": 1}), DEC, run("dec-2"), previous_month=NOV)
    write_segments(fake_conn, W, segs({"A": 2, "B": 1, "C": 1}), oct_, run("oct-3"), overwrite_history=True)
    assert [(r[0], r[2]) for r in rows(fake_conn, oct_)] == [("A", 2), ("B", 1), ("C", 1)]


def profiles_for(ids, description="Europe markets with declining sales (-2.0%/month)"):
    from include.segmentation.adapters.writeback import PROFILE_FIELDS

    frame = pd.DataFrame({"segment_id": ids})
    for name in PROFILE_FIELDS:
        frame[name] = 0.5
    frame["n_markets"] = 1
    frame["main_group"], frame["main_country"], frame["examples"] = "Europe", "France", "Paris"
    frame["description"] = [f"{description} #{i}" for i in ids]
    frame.loc[0, "seasonality"] = float("nan")  # undefined (short history): NULL in the warehouse
    return frame


def test_profiles_are_written_with_the_segments_and_replaced_with_them(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2, "C": -1}), DEC, run(), profiles=profiles_for([1, 2, -1]))
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), NOV, run("nov"), profiles=profiles_for([1, 2]))
    cur = fake_conn.cursor()
    cur.execute(
        "SELECT SEGMENT_ID, N_MARKETS, SEASONALITY, MAIN_GROUP, DESCRIPTION, RUN_ID FROM SEGMENT_PROFILE "
        "WHERE SEGMENT_MONTH = '2013-12-01' ORDER BY SEGMENT_ID NULLS LAST"
    )
    assert cur.fetchall() == [
        (1, 1, None, "Europe", "Europe markets with declining sales (-2.0%/month) #1", "r1"),
        (2, 1, 0.5, "Europe", "Europe markets with declining sales (-2.0%/month) #2", "r1"),
        (None, 1, 0.5, "Europe", "Europe markets with declining sales (-2.0%/month) #-1", "r1"),
    ]
    # a re-run of December with one segment replaces December's profiles and leaves November's
    write_segments(fake_conn, W, segs({"A": 1, "B": 1}), DEC, run("r2"), profiles=profiles_for([1], "Steady"))
    cur.execute("SELECT SEGMENT_MONTH, SEGMENT_ID, DESCRIPTION FROM SEGMENT_PROFILE ORDER BY 1, 2")
    got = [(str(m), s, d) for m, s, d in cur.fetchall()]
    assert got == [
        ("2013-11-01", 1, "Europe markets with declining sales (-2.0%/month) #1"),
        ("2013-11-01", 2, "Europe markets with declining sales (-2.0%/month) #2"),
        ("2013-12-01", 1, "Steady #1"),
    ]


def test_profiles_must_match_the_segments(fake_conn):
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run(), profiles=profiles_for([1, 2]))
    before = rows(fake_conn)
    with pytest.raises(
        ValueError, match=r"profiles describe SegmentIDs \[1, 3\] but the segments to write have \[1, 2\]"
    ):
        write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run("r2"), profiles=profiles_for([1, 3]))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['description'\]"):
        write_segments(
            fake_conn,
            W,
            segs({"A": 1, "B": 2}),
            DEC,
            run("r2"),
            profiles=profiles_for([1, 2]).drop(columns="description"),
        )
    assert rows(fake_conn) == before


def test_stage_frames_are_built_without_a_loop_over_markets_and_typed():
    from include.segmentation.adapters.writeback import migration_frame, segment_frame

    n = 50_000
    segments = pd.DataFrame(
        {
            "market_key": [f"M{i:06d}" for i in range(n)],
            "segment_id": np.where(np.arange(n) % 10 == 0, -1, np.arange(n) % 4 + 1),
            "previous_segment_id": np.where(np.arange(n) % 7 == 0, np.nan, np.arange(n) % 3 + 1),
        }
    )
    stage = segment_frame(segments, DEC, run())
    assert list(stage.columns) == ["MARKET_KEY", "SEGMENT_MONTH", "SEGMENT_ID", "MODEL_VERSION", "ALGORITHM", "RUN_ID"]
    assert str(stage["SEGMENT_ID"].dtype) == "Int64"
    assert stage["SEGMENT_ID"].isna().sum() == n // 10
    assert stage["SEGMENT_MONTH"].iloc[0] == pd.Timestamp("2013-12-01").date()
    moves = migration_frame(stage, segments, NOV)
    expected = (
        segments["previous_segment_id"].notna()
        & (segments["segment_id"] != -1)
        & (segments["previous_segment_id"] != segments["segment_id"])
    )
    np.testing.assert_array_equal(moves["MOVED"].to_numpy(), expected.to_numpy())
    assert moves["PREVIOUS_MONTH"].iloc[0] == pd.Timestamp("2013-11-01").date()


def test_a_large_month_is_one_bulk_load_per_table(fake_conn, monkeypatch):
    from fakesnow.cursor import FakeSnowflakeCursor

    statements = []
    original = FakeSnowflakeCursor.execute

    def execute(self, command, *args, **kwargs):
        statements.append(" ".join(str(command).split()).upper())
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(FakeSnowflakeCursor, "execute", execute)
    n = 20_000
    segments = pd.DataFrame(
        {
            "market_key": [f"M{i:06d}" for i in range(n)],
            "segment_id": np.arange(n) % 3 + 1,
            "previous_segment_id": np.arange(n) % 2 + 1,
        }
    )
    assert write_segments(fake_conn, W, segments, DEC, run(), previous_month=NOV) == n
    for table in ("MARKET_SEGMENT_STAGE", "SEGMENT_MIGRATION_STAGE"):
        # one COPY INTO this write's staging table (named with the write's own token), no row inserts
        assert sum(re.match(rf"COPY INTO {table}_[0-9A-F]{{12}} ", s) is not None for s in statements) == 1
        assert not any(s.startswith(f"INSERT INTO {table}") for s in statements)
    cur = fake_conn.cursor()
    cur.execute("SELECT COUNT(*), COUNT(DISTINCT MARKET_KEY), SUM(SEGMENT_ID) FROM MARKET_SEGMENT")
    assert cur.fetchone() == (n, n, int(segments["segment_id"].sum()))
    cur.execute("SELECT SUM(CASE WHEN MOVED THEN 1 ELSE 0 END), COUNT(PREVIOUS_MONTH) FROM SEGMENT_MIGRATION")
    moved = int((segments["segment_id"] != segments["previous_segment_id"]).sum())
    assert cur.fetchone() == (moved, n)


def test_object_columns_and_non_finite_profile_values(fake_conn):
    mixed = pd.DataFrame({"market_key": ["A", "B", "C"], "segment_id": pd.Series([1, None, np.nan], dtype=object)})
    profiles = profiles_for([1, -1])
    profiles.loc[1, "volatility"] = float("inf")
    profiles.loc[1, "main_group"] = None
    write_segments(fake_conn, W, mixed, DEC, run(), profiles=profiles)
    assert [(r[0], r[2]) for r in rows(fake_conn, DEC)] == [("A", 1), ("B", None), ("C", None)]
    cur = fake_conn.cursor()
    cur.execute("SELECT SEGMENT_ID, VOLATILITY, MAIN_GROUP FROM SEGMENT_PROFILE ORDER BY SEGMENT_ID NULLS LAST")
    assert cur.fetchall() == [(1, 0.5, "Europe"), (None, None, None)]


def test_months_written_before_the_feature_table_are_copied_into_it_once(fake_conn):
    """A warehouse written by the release before the feature table: its profile columns become rows."""
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), NOV, run("nov"), profiles=profiles_for([1, 2]))
    cur = fake_conn.cursor()
    cur.execute("DROP TABLE SEGMENT_FEATURE")  # as the previous release left it
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run("dec"), NOV, profiles_for([1, 2]))
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run("dec2"), NOV, profiles_for([1, 2]))
    cur.execute(
        "SELECT FEATURE, STATISTIC, KIND, VALUE, RUN_ID FROM SEGMENT_FEATURE "
        "WHERE SEGMENT_MONTH = '2013-11-01' AND SEGMENT_ID = 1 ORDER BY FEATURE"
    )
    got = cur.fetchall()
    assert len(got) == 11  # the seed's 7 static features and 4 temporal statistics, once
    assert ("platinum_share", "mean", "fraction", 0.5, "nov") in got
    assert ("avg_ltv", "mean", "currency", 0.5, "nov") in got
    assert ("trend_slope", "median", "ratio", 0.5, "nov") in got
    cur.execute("SELECT COUNT(DISTINCT RUN_ID), COUNT(*) FROM SEGMENT_FEATURE WHERE SEGMENT_MONTH = '2013-12-01'")
    assert cur.fetchone() == (1, 22)  # the re-run replaced December's rows: 2 segments x 11


def test_current_segment_view_has_one_row_per_market_after_months_written_out_of_order(fake_conn):
    """CURRENT_MARKET_SEGMENT (for BI tools): each market's newest month, whatever order months were written."""
    write_segments(fake_conn, W, segs({"A": 1, "B": 2}), DEC, run("dec"), profiles=profiles_for([1, 2], "December"))
    # November written afterwards (a backfill), with a market December no longer has
    write_segments(fake_conn, W, segs({"A": 2, "B": 2, "C": 1}), NOV, run("nov"), profiles=profiles_for([1, 2], "Nov"))
    cur = fake_conn.cursor()
    cur.execute(
        f"SELECT MARKET_KEY, SEGMENT_ID, SEGMENT_DESCRIPTION, SEGMENT_MONTH, MODEL_VERSION, RUN_ID "
        f"FROM {W.current_segment_view} ORDER BY MARKET_KEY"
    )
    assert [(k, s, d, str(m), v, r) for k, s, d, m, v, r in cur.fetchall()] == [
        ("A", 1, "December #1", "2013-12-01", "lstm_hybrid_v2.0_20131231", "dec"),
        ("B", 2, "December #2", "2013-12-01", "lstm_hybrid_v2.0_20131231", "dec"),
        ("C", 1, "Nov #1", "2013-11-01", "lstm_hybrid_v2.0_20131231", "nov"),
    ]
    # a re-run of December without B: B's current segment is November's
    write_segments(fake_conn, W, segs({"A": 1}), DEC, run("dec2"), profiles=profiles_for([1], "Again"))
    cur.execute(f"SELECT MARKET_KEY, SEGMENT_ID, SEGMENT_MONTH FROM {W.current_segment_view} ORDER BY MARKET_KEY")
    assert [(k, s, str(m)) for k, s, m in cur.fetchall()] == [
        ("A", 1, "2013-12-01"),
        ("B", 2, "2013-11-01"),
        ("C", 1, "2013-11-01"),
    ]
