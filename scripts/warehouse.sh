#!/usr/bin/env bash
# Start, stop or (re)load the embedded Snowflake emulator (fakesnow served on 127.0.0.1).
#   scripts/warehouse.sh start|stop|status|load [auto|adventureworks|synthetic]|load-file FILE [MAPPING]
# The server's PID is kept in $WAREHOUSE_DIR/server.pid and it is stopped by that PID.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PIDFILE="$WAREHOUSE_DIR/server.pid"
LOG="$WAREHOUSE_DIR/server.log"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
port_open() {
  python - "$WAREHOUSE_PORT" <<'PY' 2>/dev/null
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()
PY
}

start() {
  if running; then echo "warehouse already running (pid $(cat "$PIDFILE"), port $WAREHOUSE_PORT)"; return; fi
  if port_open; then echo "port $WAREHOUSE_PORT is taken by another process: set WAREHOUSE_PORT"; exit 1; fi
  mkdir -p "$WAREHOUSE_DIR"
  python -m include.segmentation.local.emulator serve --db-path "$WAREHOUSE_DIR" --port "$WAREHOUSE_PORT" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if port_open; then
      echo "warehouse up on 127.0.0.1:$WAREHOUSE_PORT (pid $(cat "$PIDFILE")), database SEGMENTATION, schema MART"
      echo "  Airflow connection: export AIRFLOW_CONN_SNOWFLAKE_DEFAULT='$(python -m include.segmentation.local.emulator conn-uri --port "$WAREHOUSE_PORT")'"
      return
    fi
    running || { echo "warehouse failed to start:"; cat "$LOG"; exit 1; }
    sleep 0.2
  done
  echo "warehouse did not open port $WAREHOUSE_PORT in 20 s"; cat "$LOG"; exit 1
}

stop() {
  if running; then
    pid="$(cat "$PIDFILE")"; kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "warehouse stopped (pid $pid)"
  else
    echo "warehouse not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "stopped"; exit 1; fi ;;
  load)
    # The server holds the DuckDB files open, so loading happens while it is stopped.
    was_running=0; running && was_running=1
    stop
    python -m include.segmentation.local.emulator load --db-path "$WAREHOUSE_DIR" --source "${2:-auto}"
    if [[ $was_running == 1 ]]; then start; fi
    ;;
  load-file)
    # A flat sales extract (CSV/parquet) as the star schema (include/segmentation/local/flatfile.py).
    [[ -n "${2:-}" ]] || { echo "usage: $0 load-file FILE [MAPPING]"; exit 2; }
    was_running=0; running && was_running=1
    stop
    rc=0
    python -m include.segmentation.local.flatfile load "$2" ${3:+--mapping "$3"} --db-path "$WAREHOUSE_DIR" || rc=$?
    if [[ $was_running == 1 ]]; then start; fi
    exit $rc
    ;;
  *) echo "usage: $0 start|stop|status|load [auto|adventureworks|synthetic]|load-file FILE [MAPPING]"; exit 2 ;;
esac
