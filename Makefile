# Quick start: `make demo` (the DAG end to end on the embedded warehouse) and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint venv services warehouse-start warehouse-stop warehouse-load load clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	# torch==2.13.0 is pinned: pip takes the CPU wheel on disk instead of a multi-GB CUDA build.
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(STAMP)
	scripts/demo.sh

# PostgreSQL and Redis (CeleryExecutor test) and Chromium (UI plugin test), from Debian's packages;
# the tests start their own instances.
services:
	scripts/install_services.sh

# Every tier: tests/unit, tests/emulator, tests/integration (real Airflow, Celery, Chromium). CI runs this.
test: $(STAMP) services
	$(VENV)/bin/python -m pytest

# The fast loop: pure functions, the DAG's structure and Params (no warehouse, no Airflow processes).
test-unit: $(STAMP)
	$(VENV)/bin/python -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

warehouse-start: $(STAMP)
	scripts/warehouse.sh start

warehouse-stop:
	scripts/warehouse.sh stop

warehouse-load: $(STAMP)
	scripts/warehouse.sh load

# Your own flat sales extract into the embedded warehouse: make load FILE=sales.csv [MAPPING=mapping.yaml]
load: $(STAMP)
	@test -n "$(FILE)" || { echo "usage: make load FILE=sales.csv [MAPPING=mapping.yaml]"; exit 2; }
	scripts/warehouse.sh load-file "$(FILE)" $(MAPPING)

clean: warehouse-stop
	rm -rf .airflow .warehouse artifacts
