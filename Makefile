# Everything a newcomer needs: `make run` starts the local stack, `make test` runs the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: help install run test test-fast lint types pytest clean docs bench bench-ws loadtest loadtest-failover loadtest-ws image chart-up chart-down dashboards-snapshot

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/system-deps.sh
	./scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP) ## create .venv with the package (editable) and install missing system packages

run: install ## start the local stack in the foreground (Ctrl-C stops everything)
	$(BIN)/leaderboard up

test: install lint types pytest ## lint, type-check and run the whole test suite

test-fast: install lint types ## lint, types and the tests that start no containers, chaos or long drills (minutes)
	$(BIN)/pytest -m "not slow"

lint: install ## ruff (lint and formatting) and import-linter (which package may import which)
	$(BIN)/ruff check leaderboard leaderboard_tools tests bench scripts loadtest
	$(BIN)/ruff format --check leaderboard leaderboard_tools tests bench scripts loadtest
	$(BIN)/lint-imports --no-cache

types: install ## mypy (strict) on the package
	$(BIN)/mypy

pytest: install ## the test suite only
	$(BIN)/pytest

clean: ## remove the virtualenv and caches (not the local stack's data: `leaderboard down --purge`)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

IMAGE ?= localhost/leaderboard:dev
image: install ## build the one image (podman, or docker); makes stand-ins of bases no registry serves
	$(BIN)/python -m leaderboard_tools.containers.image --tag $(IMAGE)

chart-up: image ## the chart's pods as containers (podman), wired as the chart wires them; last line: JSON
	$(BIN)/python -m leaderboard_tools.containers.chartpods up --image $(IMAGE)

chart-down: install ## remove every container, network and volume chart-up made
	$(BIN)/python -m leaderboard_tools.containers.chartpods down

dashboards-snapshot: install ## a stack, a real Prometheus, load and a failover: each dashboard as a PNG in reports/dashboards/
	$(BIN)/python scripts/dashboards_snapshot.py

docs: install ## regenerate the generated files (docs/settings.md, Grafana dashboards)
	$(BIN)/python scripts/readme.py
	$(BIN)/python scripts/dashboards.py

bench: install ## measure the API's hot paths against pgbench and a bare endpoint; updates README
	@command -v wrk >/dev/null || ./scripts/system-deps.sh wrk
	$(BIN)/python bench/api_bench.py --write-readme

bench-ws: install ## 10,000 WebSocket clients on one broadcaster vs websockets.broadcast; updates README
	$(BIN)/python bench/ws_bench.py --write-readme

LOADTEST_HOST ?= http://127.0.0.1:8000
loadtest: install ## Locust players + viewers against the running stack (60 s); HTML + CSV in reports/
	@mkdir -p reports
	$(BIN)/locust -f loadtest/locustfile.py --headless --host $(LOADTEST_HOST) -u 100 -r 20 -t 60s \
		--csv reports/loadtest --html reports/loadtest.html

loadtest-failover: install ## players through a primary kill on the running stack; pass/fail + timeline PNG
	@mkdir -p reports
	$(BIN)/locust -f loadtest/failover.py --headless --host $(LOADTEST_HOST) -u 20 -r 10 -t 40s \
		--csv reports/failover --html reports/failover.html

loadtest-ws: install ## 10,000 WebSocket viewers (4 Locust processes) + 4 players on the running stack
	@mkdir -p reports
	ulimit -n 20000 && $(BIN)/locust -f loadtest/viewers.py --headless --host $(LOADTEST_HOST) \
		--processes 4 -u 10004 -r 500 -t 90s --csv reports/viewers --html reports/viewers.html \
		ManyViewers Changer
