"""
### Monthly hybrid market segmentation

Segments every market for one calendar month from a Snowflake star schema:

1. **extract_static_features**: discount, Platinum/Gold/Silver shares, customer lifetime value,
   product-line and subcategory breadth per market (SQL in the warehouse);
2. **build_sequences**: monthly revenue, growth, customers and quantity per market over
   `history_months` ending at the run's month (runs beside step 1);
3. **check_data_quality**: loyalty values, lifetime values, NULL keys, duplicate lines, future-dated
   lines, returns, constant or inactive series, markets with only static or only sequence data;
   each check fails the run, excludes the markets or warns, as configured (`quality` in the
   configuration); then the model's windows of `seq_len` months for the markets that pass;
4. **train_autoencoder**: LSTM autoencoder on level-free windows (how sales move, not how big the
   market is), continued from last month's model, until the loss stops improving (GPU queue in
   production, CPU otherwise);
5. **embed_markets**: each market's latest window to a 32-D embedding;
6. **cluster_markets**: standardized static features + embedding, K-Means (k by the gap statistic,
   kept from last month unless the data say otherwise, started from last month's segments) /
   DBSCAN / HDBSCAN, with silhouettes for hybrid, LSTM-only and static-only; SegmentIDs carried
   over from the month before; a profile and one-line description per segment;
7. **build_report**: the run's HTML report (PCA scatter, loss and k curves, profiles, markets that
   moved), shown under "Market segments" in the Airflow UI;
8. **write_segments**: in one transaction, the month's rows of `MARKET_SEGMENT`,
   `SEGMENT_MIGRATION` and `SEGMENT_PROFILE` replaced and one row added to `SEGMENTATION_RUN`;
   updates their Assets.

The run's month is the data interval (the previous calendar month, UTC), or the `target_month`
Param. Re-running a month replaces that month's rows. Logic lives in `include/segmentation/`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

from include.segmentation.assets import segment_assets
from include.segmentation.config import load_config
from include.segmentation.params import run_params

# Parse-time: only the small pydantic config (no connections, no torch/sklearn/snowflake).
DEFAULTS = load_config()


def _step(name: str, *args, **kwargs) -> dict:
    """Run ``include.segmentation.steps.<name>`` for this run's configuration and month."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.segmentation import steps as pipeline

    try:
        config, month = pipeline.settings_from_context(get_current_context())
        return getattr(pipeline, name)(config, month, *args, **kwargs)
    except ValueError as err:  # bad data, config or Params: retrying cannot help, so fail at once
        raise AirflowFailException(f"{name}: {err}") from err


@dag(
    dag_id="market_segmentation",
    doc_md=__doc__,
    # A data-interval timetable (not a cron string, which Airflow 3 turns into a zero-length
    # CronTriggerTimetable): the run on the 1st covers the previous calendar month.
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2011, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
    },
    tags=["segmentation", "snowflake", "pytorch"],
    params=run_params(DEFAULTS),
)
def market_segmentation():
    @task(multiple_outputs=False)
    def extract_static_features() -> dict:
        return _step("extract_static_features")

    @task(multiple_outputs=False)
    def build_sequences() -> dict:
        return _step("build_sequences")

    @task(multiple_outputs=False)
    def check_data_quality(static: dict, sequences: dict) -> dict:
        return _step("check_data_quality", static["path"], sequences["path"])

    @task(multiple_outputs=False, queue=DEFAULTS.train_queue)
    def train_autoencoder(checked: dict) -> dict:
        force = bool(get_current_context()["params"]["force_retrain"])
        return _step("train_autoencoder", checked["path"], force=force, previous_month=checked.get("previous_month"))

    @task(multiple_outputs=False)
    def embed_markets(checked: dict, model: dict) -> dict:
        return _step("embed_markets", checked["path"], model["path"])

    @task(multiple_outputs=False)
    def cluster_markets(static: dict, sequences: dict, embeddings: dict) -> dict:
        fresh = bool(get_current_context()["params"]["force_retrain"])
        return _step("cluster_markets", static["path"], embeddings["path"], sequences["trends_path"], fresh=fresh)

    # Beside the write, so a dry run still gets its report and a report problem never holds back segments.
    @task(multiple_outputs=False)
    def build_report(clusters: dict) -> dict:
        return _step("build_report")

    # Outlets: a successful write updates the segment assets; a failed or dry run (skipped) does not.
    @task(multiple_outputs=False, outlets=segment_assets(DEFAULTS.warehouse))
    def write_segments(clusters: dict, model: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.segmentation.steps import run_metrics

        context = get_current_context()
        metrics = run_metrics(clusters, model)
        dry_run = bool(context["params"]["dry_run"])
        result = _step(
            "write_month", clusters["path"], clusters["profiles_path"], metrics, context["run_id"], dry_run=dry_run
        )
        if dry_run:
            raise AirflowSkipException(f"dry run: {result['model_version']} computed, nothing written")
        return result

    static = extract_static_features()
    sequences = build_sequences()
    checked = check_data_quality(static, sequences)
    model = train_autoencoder(checked)
    embeddings = embed_markets(checked, model)
    clusters = cluster_markets(static, sequences, embeddings)
    build_report(clusters)
    write_segments(clusters, model)


market_segmentation()
