"""The distributed deployment files: checked by parsing, since CI has no Docker engine."""

import yaml

from include.segmentation.config import load_config
from tests.processes import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_compose_has_the_airflow_3_celery_services():
    services = compose()["services"]
    expected = {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-init",
        "airflow-worker",
        "airflow-worker-gpu",
    }
    assert expected <= set(services)
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")


def test_gpu_worker_serves_the_training_queue_of_the_production_config():
    services = compose()["services"]
    gpu = services["airflow-worker-gpu"]
    queue = load_config(ROOT / "config" / "production.example.yaml").train_queue
    assert gpu["command"].split()[:2] == ["celery", "worker"]
    assert f"-q {queue}" in gpu["command"]
    assert "--concurrency 1" in gpu["command"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert "-q" not in services["airflow-worker"]["command"]  # the default queue
    assert gpu["profiles"] == ["gpu"]
    cpu = services["airflow-worker-cpu-training"]
    assert cpu["profiles"] == ["cpu"]
    assert f"-q {queue}" in cpu["command"]
    assert "deploy" not in cpu


def test_init_hands_the_shared_folders_to_the_airflow_user():
    init = compose()["services"]["airflow-init"]
    script = init["command"][1]
    assert 'chown -R "${AIRFLOW_UID:-50000}:0" /opt/airflow/logs /opt/airflow/artifacts' in script
    assert "_AIRFLOW_WWW_USER_CREATE" not in init["environment"]


def test_broker_visibility_timeout_outlasts_the_longest_task():
    env = compose()["services"]["airflow-worker"]["environment"]
    # the DAG's execution_timeout is 2 h: Redis must not re-deliver a training task still running
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) > 2 * 3600


def test_workers_share_artifacts_and_code_and_hold_no_credentials():
    services = compose()["services"]
    artifacts_dir = load_config(ROOT / "config" / "production.example.yaml").artifacts_dir
    for name in ("airflow-worker", "airflow-worker-gpu", "airflow-scheduler"):
        volumes = services[name]["volumes"]
        assert f"artifacts:{artifacts_dir}" in [v.split("#")[0].strip() for v in volumes]
        assert "./include:/opt/airflow/include" in volumes
        env = services[name]["environment"]
        assert "SEGMENTATION_ARTIFACTS" not in env  # it would override artifacts_dir (e.g. an s3:// URL)
        # every container verifies the tokens tasks get from the api-server: one secret, from .env
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW__API_AUTH__JWT_SECRET:?")
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "AIRFLOW_CONN_SNOWFLAKE" not in text.replace("AIRFLOW_CONN_SNOWFLAKE_DEFAULT=...", "")
    assert "artifacts" in compose()["volumes"]
