# Environment shared by the demo and the warehouse scripts (sourced, not run).
# Everything lives inside the checkout: the venv, Airflow's home (SQLite metadata DB), the embedded
# warehouse's files and the run artifacts.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DEFAULT_TIMEZONE=utc
export SEGMENTATION_ARTIFACTS="${SEGMENTATION_ARTIFACTS:-$ROOT/artifacts}"
export WAREHOUSE_DIR="${WAREHOUSE_DIR:-$ROOT/.warehouse}"
export WAREHOUSE_PORT="${WAREHOUSE_PORT:-8765}"
