"""Each run owns its files: dry and real runs, overlapping runs of one month, concurrent writers,
damaged artifacts and a configuration edited mid-run (issue 13's broken cases, each reproduced)."""

from __future__ import annotations

import json
import logging
import threading

import pandas as pd
import pytest

from include.segmentation import steps
from include.segmentation.adapters.catalog import RunArtifacts
from include.segmentation.adapters.storage import ArtifactError, read_bytes, read_json, read_npz, read_parquet
from include.segmentation.adapters.warehouse import connect, query_frame, render_sql, split_statements
from include.segmentation.config import SegmentationConfig
from include.segmentation.local.demo_data import synthetic_star
from tests.processes import served_warehouse

MONTH = pd.Period("2013-12", "M")
SETTINGS = {
    "sequences": {"seq_len": 6, "history_months": 24},
    "model": {"epochs": 1, "min_steps": 40, "hidden_dim": 16, "cpu_threads": 1},
    "clustering": {"k_max": 6},
}


@pytest.fixture
def config(tmp_path, emulated_warehouse) -> SegmentationConfig:
    emulated_warehouse(synthetic_star(n_markets=12, start="2012-01", end="2014-01", seed=5))
    return SegmentationConfig.model_validate(SETTINGS | {"artifacts_dir": str(tmp_path / "artifacts")})


def _written(config: SegmentationConfig, month: pd.Period = MONTH) -> pd.DataFrame:
    with connect(config.warehouse) as conn:
        return query_frame(
            conn,
            "SELECT MARKET_KEY, SEGMENT_ID, RUN_ID FROM MARKET_SEGMENT WHERE SEGMENT_MONTH = %(m)s ORDER BY MARKET_KEY",
            {"m": month.start_time.date()},
        )


def _files(run: RunArtifacts) -> dict[str, bytes]:
    return {name: read_bytes(getattr(run, name)) for name in ("segments", "profiles", "metrics", "model", "report")}


@pytest.mark.parametrize("dry_first", [False, True])
def test_a_dry_run_never_touches_the_published_run(config, dry_first):
    trial = config.with_overrides(n_clusters=3)  # the default run finds 4 segments here
    if dry_first:
        dry = steps.run_month(trial, MONTH, "dry", dry_run=True)
    real = steps.run_month(config, MONTH, "real")
    real_run = RunArtifacts.open(real["folder"])
    before = _files(real_run)
    if not dry_first:
        dry = steps.run_month(trial, MONTH, "dry", dry_run=True)
    dry_run = RunArtifacts.open(dry["folder"])
    assert dry_run.folder != real_run.folder
    assert _files(real_run) == before  # the real run's segments, profiles, metrics, model and report
    written = _written(config)
    assert set(written["run_id"]) == {"real"}
    segments = read_parquet(real_run.segments).sort_values("market_key")
    assert written["segment_id"].astype(int).tolist() == segments["segment_id"].tolist()
    assert read_json(dry_run.metrics)["n_clusters"] == 3
    assert read_json(real_run.metrics)["n_clusters"] == real["cluster_markets"]["n_clusters"] == 4
    dry_report = read_bytes(dry_run.report).decode()
    real_report = read_bytes(real_run.report).decode()
    assert "(dry run)</h1>" in dry_report
    assert "(dry run)</h1>" not in real_report
    assert "<dd>real</dd>" in real_report
    assert "<dd>dry</dd>" in dry_report


def test_overlapping_runs_of_a_month_write_their_own_segments(config):
    a = steps.start_run(config.with_overrides(n_clusters=2, seq_len=12), MONTH, "run-a")
    b = steps.start_run(config.with_overrides(n_clusters=5, seq_len=6), MONTH, "run-b")
    *compute, write = steps.STEPS
    for step in compute:  # A computes ...
        step(a)
    for step in steps.STEPS:  # ... B computes and writes ...
        step(b)
    assert _written(config)["segment_id"].nunique() == 5
    write(a)  # ... then A writes: A's segments under A's record, none of B's
    written = _written(config)
    assert set(written["run_id"]) == {"run-a"}
    assert written["segment_id"].nunique() == 2
    expected = read_parquet(a.segments).sort_values("market_key")["segment_id"].tolist()
    assert written["segment_id"].astype(int).tolist() == expected
    with connect(config.warehouse) as conn:
        record = query_frame(conn, "SELECT SEQ_LEN, N_CLUSTERS FROM SEGMENTATION_RUN WHERE RUN_ID = 'run-a'")
    assert record.iloc[0].tolist() == [12, 2]
    assert read_npz(a.inputs)["latest"].shape[1] == 12
    assert read_npz(b.inputs)["latest"].shape[1] == 6


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_truncated_stored_model_is_discarded_and_retrained(config):
    first = RunArtifacts.open(steps.run_month(config, MONTH, "first")["folder"])
    meta = read_json(first.model)
    model_path = first.model_file(meta["fingerprint"])
    blob = read_bytes(model_path)
    model_path.write_bytes(blob[: len(blob) // 2])
    # Airflow's logging set-up replaces the root handlers (and may disable loggers that existed before
    # it), so listen on the module's own logger.
    logger, records = logging.getLogger(steps.__name__), _Records()
    disabled, logger.disabled = logger.disabled, False
    logger.addHandler(records)
    try:
        again = RunArtifacts.open(steps.run_month(config, MONTH, "again")["folder"])
    finally:
        logger.removeHandler(records)
        logger.disabled = disabled
    assert any(m.startswith(f"discarding the stored model {model_path}") for m in records.messages)
    assert read_bytes(model_path) == blob  # retrained with the same seed: the same model, stored whole again
    # the same segments (the static features' floats may differ in the last bit: DuckDB sums in parallel)
    ids = ["market_key", "segment_id"]
    assert read_parquet(again.segments)[ids].equals(read_parquet(first.segments)[ids])


@pytest.mark.parametrize("damaged", ["sequences", "static"])
def test_a_truncated_artifact_is_named(config, damaged):
    run = steps.start_run(config, MONTH, "damaged")
    steps.extract_static_features(run)
    steps.build_sequences(run)
    path = getattr(run, damaged)
    path.write_bytes(read_bytes(path)[:100])
    with pytest.raises(ArtifactError, match=rf"artifact {path} is not a readable .*truncated or corrupt"):
        steps.check_data_quality(run)


def test_a_configuration_edited_mid_run_does_not_reach_the_run(config, tmp_path, monkeypatch):
    from include.segmentation.run_context import settings_from_context

    config_file = tmp_path / "segmentation.json"
    config_file.write_text(json.dumps(config.model_dump(mode="json", by_alias=True)))
    monkeypatch.setenv("SEGMENTATION_CONFIG", str(config_file))
    params = {"target_month": "2013-12", "seq_len": 6, "epochs": 1, "algorithm": "kmeans", "n_clusters": None}
    settings, run_month = settings_from_context({"params": params | {"static_weight": 0.5}})
    run = steps.start_run(settings, run_month.month, "edited")
    edited = config.model_dump(mode="json", by_alias=True)
    edited["sequences"]["history_months"] = 18
    edited["model"]["hidden_dim"] = 8
    config_file.write_text(json.dumps(edited))
    reopened = RunArtifacts.open(run.folder)
    for step in steps.STEPS:
        step(reopened)
    assert read_npz(reopened.sequences)["features"].shape[1] == 24  # the snapshot's history, not the edit's 18
    assert steps.load_model(reopened, read_json(reopened.model)).hidden_dim == 16


def test_concurrent_writers_of_two_months_keep_every_row(tmp_path, monkeypatch):
    """Two writers at once on the served emulator, 10 rounds each: before per-write staging names, writes
    failed (`Referenced column "MODEL_VERSION" not found`) or left a month empty while saying ok."""
    from include.segmentation.adapters.writeback import PROFILE_FIELDS, RunRecord, write_segments
    from include.segmentation.local.emulator import connection_json

    warehouse = SegmentationConfig().warehouse
    months = [pd.Period("2013-10", "M"), pd.Period("2013-11", "M")]
    errors: list[BaseException] = []

    def writer(month: pd.Period, n_markets: int) -> None:
        segments = pd.DataFrame(
            {"market_key": [f"M{i}" for i in range(n_markets)], "segment_id": [1, 2] * (n_markets // 2)}
        )
        profiles = pd.DataFrame({f: [0.0, 0.0] for f in PROFILE_FIELDS} | {"segment_id": [1, 2]})
        profiles = profiles.assign(n_markets=n_markets // 2, description="d", main_group="g", main_country="c")
        profiles = profiles.assign(examples="e")
        record = RunRecord(f"run-{month}", "v", "kmeans", 2, n_markets, 0, 0.0, 6, None, None, None, None)
        try:
            for _ in range(10):
                with connect(warehouse) as conn:
                    assert write_segments(conn, warehouse, segments, month, record, profiles=profiles) == n_markets
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    with served_warehouse(tmp_path / "db") as port:
        monkeypatch.setenv("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", connection_json(port))
        # The result tables exist before the race (DuckDB refuses two CREATE TABLE of one table at once;
        # Snowflake does not); what is raced is the writes.
        with connect(warehouse) as conn:
            for stmt in split_statements(render_sql("create_result_tables.sql", warehouse)):
                conn.cursor().execute(stmt)
        threads = [threading.Thread(target=writer, args=(m, n)) for m, n in zip(months, (10, 20), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        with connect(warehouse) as conn:
            counts = query_frame(
                conn,
                "SELECT SEGMENT_MONTH AS M, COUNT(*) AS N FROM MARKET_SEGMENT GROUP BY 1 ORDER BY 1",
            )
            profile_rows = query_frame(conn, "SELECT COUNT(*) AS N FROM SEGMENT_PROFILE")
        assert counts["n"].tolist() == [10, 20]
        assert int(profile_rows["n"].iloc[0]) == 4
