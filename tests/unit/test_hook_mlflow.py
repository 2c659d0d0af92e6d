"""MLflowHook: no network until used, where it points, whose credentials, the one run per DAG run.

Connections come from ``AIRFLOW_CONN_*`` variables, MLflow is the real embedded (SQLite) store; the
unreachable server is a real closed port.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN",
                 "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(tmp_path))
    return tmp_path


def _conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlflow", **fields}))


def test_a_hook_on_a_dead_server_constructs_and_fails_only_when_used(root, monkeypatch) -> None:
    from mlops_provider.exceptions import ServiceUnavailableError
    from mlops_provider.hooks.mlflow import MLflowHook
    from tests.fixtures.processes import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _conn(monkeypatch, "mlflow_down", host=uri, password="tok")
    started = time.monotonic()
    hook = MLflowHook(mlflow_conn_id="mlflow_down")
    assert hook.tracking_uri == uri and hook.is_embedded is False
    assert time.monotonic() - started < 20  # resolving the URI contacts nothing (a connect would hang)
    with pytest.raises(ServiceUnavailableError, match=f"MLflow tracking server at {uri} is unreachable"):
        hook.client.search_experiments()
    assert time.monotonic() - started < 60  # one probe, not MLflow's minutes of HTTP retries
    ok, message = hook.test_connection()
    assert ok is False and uri in message


def test_tracking_uri_precedence(root, monkeypatch) -> None:
    from airflow.exceptions import AirflowNotFoundException

    from mlops_provider.hooks.mlflow import MLflowHook

    assert MLflowHook().tracking_uri == f"sqlite:///{root}/.mlops/mlflow.db"
    assert MLflowHook().artifact_root == (root / ".mlops" / "artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert MLflowHook().tracking_uri == "http://from-env:5000"
    _conn(monkeypatch, "mlflow_default", host="http://default-conn:5000/")
    assert MLflowHook().tracking_uri == "http://default-conn:5000"
    _conn(monkeypatch, "team", host="mlflow.team", port=5443, schema="https",
          extra={"registry_uri": "http://registry:5000"})
    team = MLflowHook(mlflow_conn_id="team")
    assert (team.tracking_uri, team.registry_uri) == ("https://mlflow.team:5443", "http://registry:5000")
    assert MLflowHook().registry_uri == "http://default-conn:5000"
    with pytest.raises(AirflowNotFoundException):
        _ = MLflowHook(mlflow_conn_id="missing").tracking_uri


def test_a_connection_keeps_its_registry_whatever_the_environment_says(root, monkeypatch) -> None:
    """``mlflow.set_registry_uri`` exports MLFLOW_REGISTRY_URI and never unsets it: a worker that ran fluent
    code keeps it. A hook on a connection must still register where its connection says, not there."""
    import mlflow

    from mlops_provider.hooks.mlflow import MLflowHook

    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////elsewhere/registry.db")
    assert MLflowHook().registry_uri == "sqlite:////elsewhere/registry.db"  # no connection: the environment
    _conn(monkeypatch, "team", host="http://mlflow.team:5000")
    assert MLflowHook(mlflow_conn_id="team").registry_uri == "http://mlflow.team:5000"
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    mlflow.set_registry_uri(f"sqlite:///{root}/leftover.db")
    try:
        assert MLflowHook(mlflow_conn_id="team").registry_uri == "http://mlflow.team:5000"
    finally:
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def test_credentials_exist_only_while_mlflow_is_used_and_are_masked(root, monkeypatch) -> None:
    import mlflow
    from airflow.sdk.log import redact

    from mlops_provider.hooks.mlflow import MLflowHook

    db = f"sqlite:///{root}/tracking.db"
    _conn(monkeypatch, "secured", host=db, password="tok-4f1a9c")
    hook = MLflowHook(mlflow_conn_id="secured")
    assert hook.client.search_experiments() is not None
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    with hook.activate():
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok-4f1a9c"
        assert mlflow.get_tracking_uri() == db
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ and mlflow.get_tracking_uri() != db
    assert redact("Authorization: Bearer tok-4f1a9c") == "Authorization: Bearer ***"

    _conn(monkeypatch, "basic", host=db, login="ann", password="pw-77d2e1")
    with MLflowHook(mlflow_conn_id="basic").activate():
        basic = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
        assert basic == ("ann", "pw-77d2e1")
        assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_one_mlflow_run_per_dag_run_reopened_on_retry(root) -> None:
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.tracking import runs

    hook = MLflowHook()
    client, experiment = hook.client, hook.get_or_create_experiment("e")

    def lineage(run_id: str, try_number: int, **extra: str) -> dict[str, str]:
        return runs.lineage_tags(dag_id="pipe", run_id=run_id, try_number=try_number, project_root=root,
                                 pipeline="pipe", **extra)

    dag_run = "manual__2024-01-01T00:00:00+00:00"
    first = runs.start_pipeline_run(client, experiment, lineage=lineage(dag_run, 1, spec_sha256="s1"))
    runs.end_pipeline_run(client, first, "FAILED")  # the stage failed for good...
    again = runs.start_pipeline_run(client, experiment, lineage=lineage(dag_run, 2))
    assert again == first  # ...then was cleared: same run, reopened, try recorded
    run = client.get_run(first)
    assert run.info.status == "RUNNING"
    tags = run.data.tags
    assert (tags["airflow.dag_id"], tags["airflow.run_id"]) == ("pipe", dag_run)
    assert tags["airflow.try_number"] == "2"
    assert (tags["mlops.spec_sha256"], tags["mlops.pipeline"]) == ("s1", "pipe")
    other = runs.start_pipeline_run(client, experiment, lineage=lineage("it's another run", 1))
    assert other != first
    assert runs.find_pipeline_run(client, experiment, dag_id="pipe", run_id="it's another run") == other
    assert runs.find_pipeline_run(client, experiment, dag_id="pipe", run_id="never ran") is None


def test_git_sha_read_without_git(tmp_path: Path) -> None:
    from mlops_provider.tracking.runs import git_sha

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"]}

    def git(*args: str, cwd: Path = tmp_path / "repo") -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    (tmp_path / "repo").mkdir()
    assert git_sha(tmp_path / "repo") is None
    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "one")
    assert git_sha(tmp_path / "repo") == git("rev-parse", "HEAD")
    git("pack-refs", "--all")  # the branch now lives in packed-refs only
    assert git_sha(tmp_path / "repo") == git("rev-parse", "HEAD")
    git("worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"))
    git("commit", "-q", "--allow-empty", "-m", "two", cwd=tmp_path / "wt")
    side = git("rev-parse", "HEAD", cwd=tmp_path / "wt")
    assert git_sha(tmp_path / "wt") == side != git_sha(tmp_path / "repo")
    git("checkout", "-q", "--detach")
    assert git_sha(tmp_path / "repo") == git("rev-parse", "HEAD")


def test_connection_type_and_form_are_registered_with_airflow() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    hook = manager.hooks["mlflow"]
    assert (hook.hook_class_name, hook.hook_name, hook.connection_testable) == (
        "mlops_provider.hooks.mlflow.MLflowHook", "MLflow", True)
    assert manager.field_behaviours["mlflow"]["relabeling"]["host"] == "Tracking URI"
    fields = set(manager.connection_form_widgets)
    assert {"extra__mlflow__registry_uri", "extra__mlflow__insecure_tls"} <= fields
