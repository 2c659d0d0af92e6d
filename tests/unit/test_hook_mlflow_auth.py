"""The connection's login/password reach a real MLflow server with authentication (basic-auth app)."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.processes import VENV_BIN, ServiceProcess, free_port, http_get, service_missing, wait_for

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "adm-Pw-5c1e0b7d"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        service_missing("MLflow's basic-auth app needs Flask-WTF (dev extra)")
    base = tmp_path_factory.mktemp("mlflow-auth")
    ini = base / "auth.ini"
    ini.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{base / 'auth.db'}\n"
        f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    service = ServiceProcess(
        "mlflow-auth",
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--artifacts-destination", str(base / "artifacts")],
        log_path=base / "mlflow.log", env=env, cwd=base,
    ).start()
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(f"{uri}/health")[0] == 200, what="mlflow basic-auth server", timeout=120,
                 service=service)
        yield uri
    finally:
        service.stop()


def test_basic_auth_credentials_from_the_connection(auth_server: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from mlops_provider.hooks.mlflow import MLflowHook

    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(tmp_path))
    for conn_id, password in (("good", ADMIN_PASSWORD), ("bad", "wrong")):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": "mlflow", "host": auth_server, "login": "admin", "password": password}))

    good = MLflowHook(mlflow_conn_id="good")
    experiment_id = good.get_or_create_experiment("secured")
    assert good.client.get_experiment(experiment_id).name == "secured"
    with pytest.raises(MlflowException, match=r"401|[Uu]nauthenticated|credentials"):
        MLflowHook(mlflow_conn_id="bad").client.get_experiment(experiment_id)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
