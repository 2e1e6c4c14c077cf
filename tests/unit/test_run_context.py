"""What a DAG run is, from its Airflow context: what run.json records, and which runs a month waits for."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pandas as pd
import pytest

from include.segmentation.run_context import earlier_month_in_flight, flag, run_info, settings_from_context


class _TaskInstance:
    """Records the run-count query ``earlier_month_in_flight`` sends to Airflow, and answers ``count``."""

    def __init__(self, count: int) -> None:
        self.count, self.calls = count, []

    def get_dr_count(self, **query) -> int:
        self.calls.append(query)
        return self.count


def test_a_month_waits_for_runs_of_the_month_before_by_logical_date():
    ti = _TaskInstance(count=1)
    context = {"ti": ti, "dag": SimpleNamespace(dag_id="market_segmentation")}
    assert earlier_month_in_flight(context, pd.Period("2013-01", "M")) == 1
    assert ti.calls == [
        {
            "dag_id": "market_segmentation",
            "logical_dates": [datetime(2012, 12, 1, tzinfo=UTC)],  # December's data interval starts here
            "states": ["running"],  # not queued: one held back by this run's max_active_runs would deadlock
        }
    ]


def test_run_info_records_params_dry_run_and_the_runs_own_times_in_utc():
    dag_run = SimpleNamespace(
        start_date=datetime(2014, 1, 1, 0, 5, tzinfo=UTC),
        run_after=datetime(2014, 1, 1, tzinfo=UTC),
        run_type="scheduled",
        dag_id="market_segmentation",
    )
    params = {"target_month": None, "dry_run": True, "force_retrain": False, "seq_len": 12}
    info = run_info({"params": params, "dag_run": dag_run, "logical_date": datetime(2013, 12, 1, tzinfo=UTC)})
    assert info == {
        "params": params,
        "dry_run": True,
        "fresh": False,
        "overwrite_history": False,
        "started_at": "2014-01-01T00:05:00+00:00",
        "run_after": "2014-01-01T00:00:00+00:00",
        "logical_date": "2013-12-01T00:00:00+00:00",
        "run_type": "scheduled",
        "dag_id": "market_segmentation",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("True", True), ("true", True), ("false", False), ("False", False), (None, False)],
)
def test_boolean_params_from_the_cli_are_read_as_meant(value, expected):
    # `airflow dags trigger --conf '{"dry_run": "false"}'`: a non-empty string must not mean True
    assert flag(value) is expected


def test_the_run_month_comes_from_the_logical_date_not_the_data_interval(monkeypatch):
    # A CLI trigger with --logical-date 2013-10-01: Airflow infers the data interval from now.
    monkeypatch.delenv("SEGMENTATION_CONFIG", raising=False)
    context = {
        "params": {"target_month": None, "seq_len": 12, "epochs": 200, "algorithm": "kmeans", "n_clusters": None}
        | {"static_weight": 0.5},
        "logical_date": datetime(2013, 10, 1, tzinfo=UTC),
        "data_interval_start": datetime(2026, 11, 1, tzinfo=UTC),
        "data_interval_end": datetime(2026, 12, 1, tzinfo=UTC),
        "dag_run": SimpleNamespace(run_after=datetime(2026, 12, 1, 22, 50, tzinfo=UTC)),
    }
    _, run_month = settings_from_context(context)
    assert str(run_month.month) == "2013-10"
    assert run_month.reason == "logical date 2013-10-01T00:00:00Z"
