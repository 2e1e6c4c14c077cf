"""
### Monthly hybrid market segmentation

Segments every market for one calendar month from a Snowflake star schema:

1. **start_run**: the run's month, its configuration (file + Params, snapshot once) and its own
   artifact folder `<artifacts_dir>/<YYYY-MM>/<run>/`: no two runs share a file;
2. **check_warehouse**: the mapped tables and columns exist with usable types (numbers, dates) and
   dimension keys are unique, checked in `INFORMATION_SCHEMA` before any feature query;
3. **extract_static_features**: discount, Platinum/Gold/Silver shares, customer lifetime value,
   product-line and subcategory breadth per market (SQL in the warehouse);
4. **build_sequences**: monthly revenue, growth, customers and quantity per market over
   `history_months` ending at the run's month (beside step 3);
5. **check_data_quality**: loyalty values, lifetime values, NULL keys, duplicate lines, future-dated
   lines, returns, constant, inactive or thin series, markets with only static or only sequence
   data; each check fails the run, excludes the markets or warns, as configured (`quality`);
6. **prepare_inputs**: the model's windows of `seq_len` months for the markets that pass;
7. **wait_for_previous_month**: waits (without holding a worker slot) while a run of the month
   before is still in flight, so a backfill aligns its months in order;
8. **read_previous**: the published month this run continues from (SegmentIDs, model);
9. **train_autoencoder**: LSTM autoencoder on level-free windows (how sales move, not how big the
   market is), continued from last month's model, until the loss stops improving (GPU queue in
   production, CPU otherwise); a verified stored model is reused;
10. **embed_markets**: each market's latest window to a 32-D embedding;
11. **cluster_markets**: standardized static features + embedding, K-Means (k by the gap statistic,
    kept from last month unless the data say otherwise, started from last month's segments) /
    DBSCAN / HDBSCAN, with silhouettes for hybrid, LSTM-only and static-only;
12. **align_segments**: SegmentIDs carried over from the month before; stability;
13. **profile_segments**: a profile and one-line description per segment;
14. **build_report**: the run's HTML report (run id, Params, PCA scatter, loss and k curves,
    profiles, markets that moved), under "Segments" in the Airflow UI;
15. **decide_approval**: the change against last month (markets keeping their SegmentID, k, segments
    appearing or disappearing, markets excluded) and whether a person must approve (`approval`);
16. **approve_segments**: when asked, waits in *Required actions* (no worker slot held) for Approve
    or Reject, with the month, k before and after, stability, the biggest moves and the report link;
    a mail goes to `alerts.email_to`. Otherwise approves at once;
17. **write_segments**: in one transaction, the month's rows of `MARKET_SEGMENT`,
    `SEGMENT_MIGRATION` and `SEGMENT_PROFILE` replaced and one row added to `SEGMENTATION_RUN`;
    updates their Assets. Skipped by a dry run and by a rejection (nothing written);
18. **record_outcome**: written, dry run or rejected, with k and stability: the run's note.

A failed task mails `alerts.email_to` (and any configured notifier) with the month and links.

The run's month: the `target_month` Param; else the logical date's month (a scheduled run or backfill
of 2013-12-01 segments 2013-12, in any timezone); else, or when that month is not over yet, the last
complete month. Re-running a month replaces that month's rows; re-running one that a later month was
aligned to is refused unless `overwrite_history` is set. Logic lives in `include/segmentation/`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, PokeReturnValue, dag, get_current_context, task

from include.segmentation.alerts import RunFailedAlert
from include.segmentation.approval import approval_task
from include.segmentation.assets import segment_assets
from include.segmentation.config import load_config
from include.segmentation.params import run_params

# Parse-time: only the small pydantic config (no connections, no torch/sklearn/snowflake).
DEFAULTS = load_config()


def _call(step: Callable, *args) -> dict:
    """Run one step; bad data, config or Params (``ValueError``) fail the task at once: retrying cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return step(*args)
    except ValueError as err:
        raise AirflowFailException(f"{step.__name__}: {err}") from err


def _open(folder: str):
    from include.segmentation.adapters.catalog import RunArtifacts

    return _call(RunArtifacts.open, folder)


@task(multiple_outputs=False)
def start_run() -> str:
    from include.segmentation import steps
    from include.segmentation.run_context import run_info, settings_from_context

    context = get_current_context()
    config, run_month = _call(settings_from_context, context)
    info = run_info(context) | {"month_reason": run_month.reason}
    run = _call(steps.start_run, config, run_month.month, context["run_id"], info)
    return str(run.folder)


@task(multiple_outputs=False)
def check_warehouse(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.check_warehouse, _open(run))


@task(multiple_outputs=False)
def extract_static_features(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.extract_static_features, _open(run))


@task(multiple_outputs=False)
def build_sequences(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.build_sequences, _open(run))


@task(multiple_outputs=False)
def check_data_quality(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.check_data_quality, _open(run))


@task(multiple_outputs=False)
def prepare_inputs(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.prepare_inputs, _open(run))


# Reschedule mode: a waiting run holds no worker slot. A backfill's months start together
# (max_active_runs) but each aligns to the month before only once that month is written.
@task.sensor(poke_interval=30, timeout=timedelta(hours=24).total_seconds(), mode="reschedule")
def wait_for_previous_month(run: str) -> PokeReturnValue:
    from include.segmentation.run_context import earlier_month_in_flight

    in_flight = earlier_month_in_flight(get_current_context(), _open(run).month)
    return PokeReturnValue(is_done=in_flight == 0)


@task(multiple_outputs=False)
def read_previous(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.read_previous, _open(run))


@task(multiple_outputs=False, queue=DEFAULTS.train_queue)
def train_autoencoder(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.train_autoencoder, _open(run))


@task(multiple_outputs=False)
def embed_markets(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.embed_markets, _open(run))


@task(multiple_outputs=False)
def cluster_markets(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.cluster_markets, _open(run))


@task(multiple_outputs=False)
def align_segments(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.align_segments, _open(run))


@task(multiple_outputs=False)
def profile_segments(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.profile_segments, _open(run))


# Beside the write, so a dry run still gets its report and a report problem never holds back segments.
@task(multiple_outputs=False)
def build_report(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.build_report, _open(run))


@task(multiple_outputs=False)
def decide_approval(run: str) -> dict:
    from include.segmentation import steps

    return _call(steps.decide_approval, _open(run))


# Outlets: a successful write updates the segment assets; a failed, rejected or dry run does not.
# none_failed: the approval task's "Reject" skips this task, as does a dry run below.
@task(multiple_outputs=False, outlets=segment_assets(DEFAULTS.warehouse), trigger_rule="none_failed")
def write_segments(run: str) -> dict:
    from airflow.sdk.exceptions import AirflowSkipException

    from include.segmentation import alerts, steps

    opened = _open(run)
    result = _call(steps.write_segments, opened)
    if result["dry_run"]:
        raise AirflowSkipException(f"dry run: {result['model_version']} computed, nothing written")
    context = get_current_context()
    alerts.announce_change(opened, context["ti"].xcom_pull(task_ids="decide_approval") or {}, context)
    return result


# After the write, or after a rejection or dry run skipped it; not after a failed write (the run fails).
@task(multiple_outputs=False, trigger_rule="none_failed_min_one_success")
def record_outcome(run: str) -> dict:
    from include.segmentation import steps

    ti = get_current_context()["ti"]
    asked = bool((ti.xcom_pull(task_ids="decide_approval") or {}).get("ask"))
    answer, written = ti.xcom_pull(task_ids="approve_segments"), ti.xcom_pull(task_ids="write_segments")
    return _call(steps.record_outcome, _open(run), steps.approval_answer(asked, answer), written)


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
        # A mail (alerts.email_to) and any configured notifier when a task fails for good.
        "on_failure_callback": [RunFailedAlert()],
    },
    tags=["segmentation", "snowflake", "pytorch"],
    params=run_params(DEFAULTS),
)
def market_segmentation():
    # Every task gets the run's folder from start_run (the files it reads are named by the run's
    # catalogue); the arrows are the order of the steps.
    run = start_run()
    checked = check_data_quality(run)
    check_warehouse(run) >> [extract_static_features(run), build_sequences(run)] >> checked
    model = train_autoencoder(run)
    checked >> prepare_inputs(run) >> model
    wait_for_previous_month(run) >> read_previous(run) >> model
    profiles = profile_segments(run)
    model >> embed_markets(run) >> cluster_markets(run) >> align_segments(run) >> profiles
    decision = decide_approval(run)
    written = write_segments(run)
    profiles >> build_report(run) >> decision >> approval_task(DEFAULTS.approval) >> written
    [decision, written] >> record_outcome(run)


market_segmentation()
