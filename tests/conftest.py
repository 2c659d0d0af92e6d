"""Shared test set-up. Airflow never touches ~/airflow from the tests: AIRFLOW_HOME is a fresh temp dir,
set before anything imports Airflow (which writes airflow.cfg into AIRFLOW_HOME on first import).

Real-service fixtures (airflow_home, s3_server, mlflow_server, mlflow_server_local, docker_engine) live in
``tests/fixtures/``, one module per service, loaded below as plugins; ``tests/fixtures/__init__.py`` lists
which module holds each and what it returns.
"""

from __future__ import annotations

import pytest

pytest_plugins = (
    "tests.fixtures.processes",
    "tests.fixtures.airflow",
    "tests.fixtures.s3",
    "tests.fixtures.mlflow",
    "tests.fixtures.docker",
    "tests.fixtures.hooks",
    "tests.fixtures.dag_processor",
    "tests.fixtures.celery",
)

pytest.register_assert_rewrite(*pytest_plugins)

from tests.fixtures.airflow import configure_airflow_env  # noqa: E402

# Sets AIRFLOW_HOME, AIRFLOW__CORE__DAGS_FOLDER, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, LOAD_EXAMPLES=False
# to a per-process temp dir (removed at the end of the session).
configure_airflow_env()

# MLflow's defaults write into the current directory (./mlruns, ./mlflow.db) when code forgets to pass a
# store. Users would find those files in their project; here they fail the session.
_CWD_LITTER = ("mlruns", "mlflow.db", "mlartifacts")
_litter_before: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    root = session.config.invocation_params.dir
    _litter_before.update(name for name in _CWD_LITTER if (root / name).exists())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    root = session.config.invocation_params.dir
    new = [name for name in _CWD_LITTER if (root / name).exists() and name not in _litter_before]
    if new:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"tests left MLflow's default store in {root}: {', '.join(new)}"
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True)
