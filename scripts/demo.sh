#!/usr/bin/env bash
# The main job, end to end: load the demo warehouse, run the DAG through Airflow for one month,
# print the segments. DEMO_MONTH=YYYY-MM picks another month (default 2013-12).
set -euo pipefail
source "$(dirname "$0")/env.sh"
MONTH="${DEMO_MONTH:-2013-12}"
# The scheduled run for a month has the first day of the following month as its data interval end.
LOGICAL_DATE="$(python -c "import pandas as pd; print((pd.Period('$MONTH', 'M') + 1).start_time.date())")"

scripts/warehouse.sh load "${DEMO_SOURCE:-auto}"
scripts/warehouse.sh start
trap 'scripts/warehouse.sh stop' EXIT

mkdir -p "$AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
echo "running DAG market_segmentation for $MONTH (logical date $LOGICAL_DATE) ..."
airflow dags test market_segmentation "$LOGICAL_DATE" >"$AIRFLOW_HOME/dags-test.log" 2>&1 \
  || { tail -n 80 "$AIRFLOW_HOME/dags-test.log"; echo "DAG run failed; full log: $AIRFLOW_HOME/dags-test.log"; exit 1; }
grep -E "DagRun Finished|state=" "$AIRFLOW_HOME/dags-test.log" | tail -n 1 || true
python -m include.segmentation.summary --month "$MONTH"
