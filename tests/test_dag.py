"""DAG integrity: parses cleanly, stays light at parse time, wires the six steps, validates Params."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

TASKS = [
    "extract_static_features",
    "build_sequences",
    "train_autoencoder",
    "embed_markets",
    "cluster_markets",
    "write_segments",
]


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=ROOT / "dags")
    assert bag.import_errors == {}
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
    down = {t: sorted(dag.get_task(t).downstream_task_ids) for t in TASKS}
    assert down == {
        "extract_static_features": ["build_sequences", "cluster_markets"],
        "build_sequences": ["embed_markets", "train_autoencoder"],
        "train_autoencoder": ["embed_markets", "write_segments"],
        "embed_markets": ["cluster_markets"],
        "cluster_markets": ["write_segments"],
        "write_segments": [],
    }
    assert dag.doc_md.strip().startswith("### Monthly hybrid market segmentation")
    for task_id in TASKS:
        assert dag.get_task(task_id).execution_timeout is not None
        assert dag.get_task(task_id).retries == 2


def test_schedule_is_a_monthly_data_interval_in_utc(dag):
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 1 * *"
    assert str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False


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
