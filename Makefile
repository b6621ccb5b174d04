# People need two commands: `make run` (server + client) and `make test` (every test).
# Each target first runs scripts/bootstrap.sh, which creates .venv and installs what is
# missing; once everything is in place it does nothing and costs well under a second.

SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help bootstrap run cluster test lint bench clean

help:
	@echo "make run     start a local server and open the client (stops the server on exit)"
	@echo "make cluster PostgreSQL, Redis and two nodes on this machine; prints the client settings"
	@echo "make test    run the whole test suite, GUI tests included (under Xvfb)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   python -m bench: micro-benchmarks, then every load scenario (JSON)"
	@echo "make clean   remove caches (keeps .venv and data/)"

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@bash scripts/run_local.sh

# A private PostgreSQL and redis-server (never the system services) and two nodes; state in
# data/cluster (CLUSTER_ARGS="--root DIR --port-a 9999 --port-b 10000" to change). Ctrl-C stops all.
cluster:
	@bash scripts/bootstrap.sh --cluster
	@$(PY) -m server.cluster.local_cluster $(CLUSTER_ARGS)

test:
	@bash scripts/bootstrap.sh --test
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Both linters always run, so one report shows every problem; either failing fails lint.
lint: bootstrap
	@status=0; \
	$(PY) -m ruff check . || status=1; \
	$(PY) -m mypy || status=1; \
	exit $$status

bench: bootstrap
	@bash scripts/run_benches.sh

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
