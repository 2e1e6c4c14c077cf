#!/usr/bin/env bash
# The main job, end to end: load the demo warehouse, run the DAG through Airflow for one month,
# print the segments. DEMO_MONTH=YYYY-MM picks another month (default 2013-12; AdventureWorks
# covers 2010-12 to 2014-01). A warehouse the user started stays up; one the demo started stops.
set -euo pipefail
source "$(dirname "$0")/env.sh"
MONTH="${DEMO_MONTH:-2013-12}"
# The logical date names the month (include/segmentation/months.py): the month's first day.
LOGICAL_DATE="$(python - "$MONTH" <<'PY'
import sys
from include.segmentation.months import parse_month
try:
    print(parse_month(sys.argv[1]).start_time.date())
except ValueError as err:
    sys.exit(f"DEMO_MONTH: {err}")
PY
)"
# The embedded warehouse as an ordinary Airflow connection; in production this points at Snowflake.
AIRFLOW_CONN_SNOWFLAKE_DEFAULT="$(python -m include.segmentation.local.emulator conn-uri --port "$WAREHOUSE_PORT")"
export AIRFLOW_CONN_SNOWFLAKE_DEFAULT

if ! scripts/warehouse.sh status >/dev/null; then trap 'scripts/warehouse.sh stop' EXIT; fi
# DEMO_SOURCE=keep: segment what is loaded already (e.g. your own extract, `make load FILE=...`).
if [[ "${DEMO_SOURCE:-auto}" != keep ]]; then scripts/warehouse.sh load "${DEMO_SOURCE:-auto}"; fi
scripts/warehouse.sh start

mkdir -p "$AIRFLOW_HOME"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
LOG="$AIRFLOW_HOME/dags-test.log"
echo "running DAG market_segmentation for $MONTH (logical date $LOGICAL_DATE); log: $LOG"
if ! airflow dags test market_segmentation "$LOGICAL_DATE" >"$LOG" 2>&1 || ! grep -q "state=success" "$LOG"; then
  grep -E "AirflowFailException|Error:" "$LOG" | tail -n 5 || true
  echo "DAG run failed; full log: $LOG"
  exit 1
fi
echo "DAG run succeeded"
python -m include.segmentation.local.summary --month "$MONTH"
