#!/usr/bin/env bash
# Throughput of the autoencoder on a large synthetic set (default 1M markets x 24 months) on the GPU.
# Extra arguments go to benchmarks/gpu_check.py (--markets, --months, --steps, --batch, --device).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-.venv/bin/python}" -m benchmarks.gpu_check "$@"
