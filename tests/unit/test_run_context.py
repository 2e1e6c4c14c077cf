"""What a DAG run is, from its Airflow context: what run.json records, and which runs a month waits for."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pandas as pd

from include.segmentation.run_context import earlier_month_in_flight, run_info


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
            "states": ["queued", "running"],
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
        "started_at": "2014-01-01T00:05:00+00:00",
        "logical_date": "2013-12-01T00:00:00+00:00",
        "run_type": "scheduled",
        "dag_id": "market_segmentation",
    }
