"""DAG integrity: parses cleanly, stays light at parse time, wires the steps, validates Params."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.processes import ROOT

#: Each step's task and what runs after it: the flow of steps.py (start_run also feeds every task its folder).
FLOW = {
    "start_run": [],
    "check_warehouse": ["build_sequences", "extract_static_features"],
    "extract_static_features": ["check_data_quality"],
    "build_sequences": ["check_data_quality"],
    "check_data_quality": ["prepare_inputs"],
    "prepare_inputs": ["train_autoencoder"],
    "wait_for_previous_month": ["read_previous"],
    "read_previous": ["train_autoencoder"],
    "train_autoencoder": ["embed_markets"],
    "embed_markets": ["cluster_markets"],
    "cluster_markets": ["align_segments"],
    "align_segments": ["profile_segments"],
    "profile_segments": ["build_report"],
    "build_report": ["decide_approval"],
    "decide_approval": ["approve_segments", "record_outcome"],
    "approve_segments": ["write_segments"],
    "write_segments": ["record_outcome"],
    "record_outcome": [],
}
TASKS = list(FLOW)


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=ROOT / "dags")
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="module")
def dag(bag):
    return bag.dags["market_segmentation"]


def test_parse_time_imports_no_heavy_modules_and_opens_no_connection():
    # A fresh interpreter, with sockets disabled, parses the DAG file the way the DAG processor does.
    script = textwrap.dedent(
        f"""
        import runpy, socket, sys
        def refuse(*args, **kwargs):
            raise RuntimeError("network access at DAG parse time")
        socket.socket.connect = refuse
        sys.path.insert(0, {str(ROOT)!r})
        runpy.run_path({str(ROOT / "dags" / "market_segmentation.py")!r})
        heavy = [m for m in ("torch", "sklearn", "snowflake.connector", "fakesnow", "pandas") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "HEAVY=\n" in out.stdout, out.stdout + out.stderr


def test_tasks_and_dependencies(dag):
    assert sorted(dag.task_ids) == sorted(TASKS)
    down = {t: sorted(dag.get_task(t).downstream_task_ids) for t in TASKS if t != "start_run"}
    assert down == {t: d for t, d in FLOW.items() if t != "start_run"}
    # every task gets the run's folder from start_run, and nothing else through XCom (the approval
    # task reads decide_approval's small decision)
    assert dag.get_task("start_run").downstream_task_ids == set(TASKS) - {"start_run", "approve_segments"}
    # a rejection skips the write, and the outcome is still recorded; a failed write fails the run
    approve = dag.get_task("approve_segments")
    assert approve.options == ["Approve", "Reject"]
    assert approve.defaults == ["Reject"]  # an unanswered request writes nothing
    assert approve.response_timeout.total_seconds() == 72 * 3600
    assert dag.get_task("write_segments").trigger_rule == "none_failed"
    assert dag.get_task("record_outcome").trigger_rule == "none_failed_min_one_success"
    assert all(any(type(cb).__name__ == "RunFailedAlert" for cb in dag.get_task(t).on_failure_callback) for t in TASKS)
    # a waiting month holds no worker slot
    assert dag.get_task("wait_for_previous_month").mode == "reschedule"
    assert dag.doc_md.strip().startswith("### Monthly hybrid market segmentation")
    for task_id in TASKS:
        assert dag.get_task(task_id).execution_timeout is not None
        # a person's answer is not retried
        assert dag.get_task(task_id).retries == (0 if task_id == "approve_segments" else 2)


def test_schedule_is_a_monthly_data_interval_in_utc(dag):
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 1 * *"
    assert str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False


def test_scheduled_and_manual_runs_segment_the_month_their_logical_date_names(dag):
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    from include.segmentation.months import resolve_month

    core = coerce_to_core_timetable(dag.timetable)
    utc = pendulum.UTC
    # the scheduled run after November's: data interval = December, runs on 2014-01-01
    info = core.next_dagrun_info(
        last_automated_data_interval=DataInterval(
            pendulum.datetime(2013, 11, 1, tz=utc), pendulum.datetime(2013, 12, 1, tz=utc)
        ),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert (info.data_interval.start, info.data_interval.end) == (
        pendulum.datetime(2013, 12, 1, tz=utc),
        pendulum.datetime(2014, 1, 1, tz=utc),
    )
    assert info.run_after == pendulum.datetime(2014, 1, 1, tz=utc)
    assert str(resolve_month(None, info.logical_date, info.run_after).month) == "2013-12"
    # a manual trigger on 2014-01-15 with the form's default logical date (now): the last complete month
    now = pendulum.datetime(2014, 1, 15, 9, tz=utc)
    assert str(resolve_month(None, now, now).month) == "2013-12"


def test_segment_tables_are_assets_and_the_consumer_waits_for_them(bag, dag):
    outlets = sorted(a.uri for a in dag.get_task("write_segments").outlets)
    assert outlets == [
        "snowflake://fakesnow/SEGMENTATION/MART/MARKET_SEGMENT",
        "snowflake://fakesnow/SEGMENTATION/MART/SEGMENTATION_RUN",
        "snowflake://fakesnow/SEGMENTATION/MART/SEGMENT_PROFILE",
    ]
    consumer = bag.dags["segment_consumer"]
    assert [a.uri for a in consumer.timetable.asset_condition.objects] == [
        "snowflake://fakesnow/SEGMENTATION/MART/MARKET_SEGMENT"
    ]


def test_training_queue_comes_from_config(dag, tmp_path):
    assert dag.get_task("train_autoencoder").queue == "default"
    config = tmp_path / "segmentation.yaml"
    config.write_text("train_queue: gpu\n")
    script = textwrap.dedent(
        f"""
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder={str(ROOT / "dags")!r}).dags["market_segmentation"]
        print("QUEUES=" + ",".join(sorted({{t.queue for t in dag.tasks if t.task_id != "train_autoencoder"}})))
        print("TRAIN=" + dag.get_task("train_autoencoder").queue)
        """
    )
    env = {**os.environ, "SEGMENTATION_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert "TRAIN=gpu" in out.stdout, out.stdout + out.stderr
    assert "QUEUES=default" in out.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seq_len", 5),
        ("seq_len", 25),
        ("algorithm", "spectral"),
        ("n_clusters", 1),
        ("static_weight", 1.5),
        ("target_month", "2013-13"),
        ("epochs", 0),
    ],
)
def test_invalid_params_are_refused(dag, name, value):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dict(dag.params.items()))
    params.get_param(name)  # the Param exists
    # ParamsDict validates on assignment, as the trigger form's submission does
    with pytest.raises(ParamValidationError, match=name if name != "algorithm" else "spectral"):
        params[name] = value


def test_valid_params_pass(dag):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dict(dag.params.items()))
    for name, value in {"target_month": "2013-06", "seq_len": 24, "n_clusters": None, "static_weight": 0.0}.items():
        params[name] = value
    assert params.validate()["seq_len"] == 24
