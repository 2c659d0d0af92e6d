# Developer and CI entry points. System packages (docker.io, debootstrap, chromium) come from .ci/run /
# apt-get; everything pip can install comes from here.
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 2>/dev/null || ls -1 /root/.pyenv/versions/3.11*/bin/python3.11 2>/dev/null | tail -n 1)
VENV ?= .venv
LOCK := requirements.lock
EXTRAS := all,dev
STAMP := $(VENV)/.mlops-deps-stamp
# The venv is up to date when it was installed from exactly this pyproject.toml + lock file.
DEPS_HASH = $(shell cat pyproject.toml $(LOCK) | sha256sum | cut -c1-32)
PYTEST_ARGS ?=

.PHONY: venv demo test lint lock lock-check

# `pip install -e .` leaves provider/<dist>.egg-info behind; the editable install puts provider/ on sys.path,
# so Python would see the package twice (Airflow: "Plugin 'mlops' already registered" import error).
venv:
	@if [ -x $(VENV)/bin/python ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$(DEPS_HASH)" ]; then \
		echo "venv: $(VENV) is up to date"; \
	else \
		set -e; \
		if [ ! -x $(VENV)/bin/python ]; then \
			test -n "$(PYTHON)" || { echo "python3.11 not found" >&2; exit 1; }; \
			echo "venv: creating $(VENV) with $(PYTHON)"; \
			$(PYTHON) -m venv $(VENV); \
		fi; \
		echo "venv: installing -e .[$(EXTRAS)] pinned by $(LOCK)"; \
		$(VENV)/bin/python -m pip install --quiet -c $(LOCK) pip; \
		$(VENV)/bin/python -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"; \
		rm -rf provider/*.egg-info; \
		echo "$(DEPS_HASH)" > $(STAMP); \
	fi

# The README's first command: dags/pipelines/breast_cancer.yaml end to end through Airflow (SQLite metadata
# DB in .airflow/) with the embedded MLflow store (.mlops/), twice, then the orchestration-overhead benchmark.
demo: venv
	env -u MLFLOW_TRACKING_URI -u MLFLOW_REGISTRY_URI AIRFLOW_HOME=$(CURDIR)/.airflow \
		AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags AIRFLOW__CORE__LOAD_EXAMPLES=False \
		AIRFLOW__MLOPS__PROJECT_ROOT=$(CURDIR) $(VENV)/bin/python -m mlops_provider.demo --project-root $(CURDIR)

# Parse benchmark (bench/README.md): N=500 pipelines as our specs vs hand-written Task-SDK DAGs vs dag-factory,
# BundleDagBag in fresh interpreters; writes bench/results/. Needs ../shared/bench (or MLOPS_SHARED_BENCH).
# Quicker: make bench BENCH_ARGS="--reps 3 --no-dagfactory".
BENCH_ARGS ?=
.PHONY: bench
bench: venv
	$(VENV)/bin/python bench/parse_bench.py $(BENCH_ARGS)

# pytest exit 5 (no tests collected) fails like any other non-zero exit.
test: venv
	@rc=0; $(VENV)/bin/python -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "make test: pytest exited with $$rc$$( [ $$rc -eq 5 ] && echo ' (no tests collected)')" >&2; fi; \
	exit $$rc

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Does requirements.lock pin what pyproject.toml asks for (and was it made from these requirements)? CI runs it.
lock-check:
	$(PYTHON) .ci/lock_check.py

# Re-resolve `pip install -e .[all,dev]` from scratch in a throw-away venv and pin everything it installed.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	test -n "$(PYTHON)" || { echo "python3.11 not found" >&2; exit 1; }; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e ".[$(EXTRAS)]"; \
	rm -rf provider/*.egg-info; \
	{ echo "# Pinned environment of: pip install -e \".[$(EXTRAS)]\" (Python 3.11). Regenerate: make lock"; \
	  $(PYTHON) .ci/lock_check.py --fingerprint; \
	  "$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v -e '^-e ' -e '^airflow-provider-mlops[= ]'; \
	} > $(LOCK).tmp; \
	mv $(LOCK).tmp $(LOCK); \
	echo "lock: wrote $(LOCK) ($$(grep -c '==' $(LOCK)) pins)"

# Every supported Airflow x Python combination (.ci/compat/matrix.txt) installed for real in its own venv under
# /tmp/mlops-compat and checked: lint, a real dag-processor parse, a parse importing nothing heavy, the
# approval operator, `mlops run` of the demo (README "Supported versions"). One line: COMPAT_ONLY=3.2.2.
.PHONY: compat
compat:
	bash .ci/compat/matrix.sh
