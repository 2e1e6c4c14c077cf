#!/usr/bin/env bash
# The main job, end to end: load the demo warehouse, run the DAG through Airflow for one month,
# print the segments. A warehouse the user started stays up; one the demo started stops.
#   DEMO_SOURCE: auto (default) keeps a file you loaded (`make load FILE=...`) and otherwise loads
#     AdventureWorks (the synthetic generator without ../shared/data); adventureworks or synthetic
#     replace what is loaded; keep segments whatever is loaded.
#   DEMO_MONTH=YYYY-MM: the month (default: the loaded data's latest complete month; 2013-12 for the
#     demo data, which covers 2010-12 to 2014-01).
set -euo pipefail
source "$(dirname "$0")/env.sh"
dataset() { python -m include.segmentation.local.emulator dataset --db-path "$WAREHOUSE_DIR" --field "$1"; }
SOURCE="${DEMO_SOURCE:-auto}"
if [[ "$SOURCE" == auto && "$(dataset source)" == unreadable ]]; then
  echo "$WAREHOUSE_DIR/dataset.json cannot be read, so what the warehouse holds is unknown: DEMO_SOURCE=keep make demo segments it, DEMO_SOURCE=adventureworks make demo replaces it"
  exit 2
fi
if [[ "$SOURCE" == auto && "$(dataset source)" == file ]]; then
  echo "keeping your data loaded from $(dataset name) (DEMO_SOURCE=adventureworks make demo replaces it with the demo data)"
  SOURCE=keep
fi
if [[ "$SOURCE" == keep && -z "$(ls -A "$WAREHOUSE_DIR" 2>/dev/null)" ]]; then
  echo "DEMO_SOURCE=keep: the embedded warehouse ($WAREHOUSE_DIR) has no data loaded; run make load FILE=... or make demo"
  exit 2
fi
if ! scripts/warehouse.sh status >/dev/null; then trap 'scripts/warehouse.sh stop' EXIT; fi
if [[ "$SOURCE" != keep ]]; then scripts/warehouse.sh load "$SOURCE"; fi
MONTH="${DEMO_MONTH:-$(dataset latest_month)}"
MONTH="${MONTH:-2013-12}"
echo "data set: $(dataset name || true); month $MONTH"
# The logical date names the month (include/segmentation/months.py): the month's first day.
LOGICAL_DATE="$(python - "$MONTH" <<'PY'
import sys
from include.segmentation.months import parse_month
try:
    print(parse_month(sys.argv[1], field="DEMO_MONTH").start_time.date())
except ValueError as err:
    sys.exit(str(err))
PY
)"
# The embedded warehouse as an ordinary Airflow connection; in production this points at Snowflake.
AIRFLOW_CONN_SNOWFLAKE_DEFAULT="$(python -m include.segmentation.local.emulator conn-uri --port "$WAREHOUSE_PORT")"
export AIRFLOW_CONN_SNOWFLAKE_DEFAULT
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
