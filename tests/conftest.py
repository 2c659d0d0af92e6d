"""Shared test set-up. Airflow never touches ~/airflow from the tests: AIRFLOW_HOME is a fresh temp dir,
set before anything imports Airflow (which writes airflow.cfg into AIRFLOW_HOME on first import).

Real-service fixtures (airflow_home, s3_server, mlflow_server, mlflow_server_local, docker_engine) live in
``tests/services.py``, loaded below as a plugin; see /work/notes/fixtures.md for what each returns.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.services")

from tests.services import configure_airflow_env  # noqa: E402

# Sets AIRFLOW_HOME, AIRFLOW__CORE__DAGS_FOLDER, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, LOAD_EXAMPLES=False
# to a per-process temp dir (removed at the end of the session).
configure_airflow_env()

pytest_plugins = ("tests.services",)
