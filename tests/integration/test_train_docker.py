"""Train stage with ``runner: {type: docker}``: the same training step in a container on a real Docker engine.

Real dockerd (``docker_engine``: a local debootstrapped image; the host's Python and venv bind-mounted
read-only, so nothing is pulled or pip-installed), real MLflow (the embedded store mounted at the same path,
and a real ``mlflow server`` reached over the host network), a real S3 workspace (SeaweedFS), real Airflow
(``dag.test()``). Every test checks that no container of its DAGs is left on the engine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._stage_helpers import make_project, pipeline_runs, states, try_number, unique, xcom

pytestmark = pytest.mark.integration

ENTRYPOINT = """
import os
import sys
import time
from pathlib import Path

from sklearn.linear_model import Ridge


def build(X_train, y_train, params):
    print("inside a container:", Path("/.dockerenv").exists())
    print("tracking token:", os.environ.get("MLFLOW_TRACKING_TOKEN"))
    print("command line:", " ".join(sys.argv[1:]))
    print("templated environment:", os.environ.get("S3_KEY_COPY") == os.environ.get("AWS_SECRET_ACCESS_KEY"))
    return Ridge(**params).fit(X_train, y_train)


def broken(X_train, y_train, params):
    print("about to fail")
    raise ValueError(f"alpha must be positive, got {params['alpha']}")


def hang(X_train, y_train, params):
    print("hanging", flush=True)
    time.sleep(3600)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_engine: Any) -> Path:
    root = make_project(tmp_path, monkeypatch)
    (root / "models").mkdir()
    (root / "models" / "ridge.py").write_text(ENTRYPOINT)
    # the host Python the test image runs lives outside the project root: the admin allows binding it
    monkeypatch.setenv(
        "AIRFLOW__MLOPS__DOCKER_ALLOWED_MOUNTS", ",".join(m["Source"] for m in docker_engine.mounts)
    )
    return root


@pytest.fixture
def dag_ids(docker_engine: Any) -> Iterator[list[str]]:
    """DAG ids a test creates; afterwards the engine may hold no container of theirs (running or not)."""
    ids: list[str] = []
    yield ids
    containers = docker_engine.client().containers.list(all=True, filters={"label": "mlops.dag_id"})
    left = [c.name for c in containers if c.labels["mlops.dag_id"] in ids]
    assert left == [], f"containers left behind: {left}"


def docker_runner(engine: Any, **extra: Any) -> dict[str, Any]:
    """What a spec's ``train.runner`` holds; the image runs the host's Python, mounted read-only."""
    return {
        "type": "docker",
        "image": engine.image,
        "docker_url": engine.docker_url,
        "python": engine.python,
        "mounts": [f"{m['Source']}:{m['Target']}:ro" for m in engine.mounts],
        "environment": dict(engine.environment),
        **extra,
    }


def train_task(task_id: str, *, retries: int = 0, timeout: float | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
    from mlops_provider.operators.train import TrainModelOperator

    return TrainModelOperator(
        task_id=task_id, seed=3, retries=retries, retry_delay=dt.timedelta(seconds=0),
        execution_timeout=dt.timedelta(seconds=timeout) if timeout else None, **kwargs,
    )  # fmt: skip


def pipeline(dag_id: str, source: str, trains: dict[str, dict[str, Any]], **common: Any):  # type: ignore[no-untyped-def]
    """ingest >> each train task (``task_id -> kwargs``), as a spec would render them."""
    from airflow.sdk import DAG

    from mlops_provider.operators.ingest import IngestDatasetOperator

    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        ingest = IngestDatasetOperator(task_id="ingest", source=source, seed=3, **common)
        for task_id, kwargs in trains.items():
            ingest >> train_task(task_id, **common, **kwargs)
    return dag


def test_trains_in_a_container_against_the_embedded_store(
    airflow_home: Any,
    docker_engine: Any,
    project: Path,
    dag_ids: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The embedded MLflow store and the run workspace are mounted at the same path: no network needed."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.docker_engine import LABEL_PREFIX
    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    experiment, dag_id = unique("exp"), unique("docker_local")
    dag_ids.append(dag_id)
    # kept after the run (auto_remove false), so the limits are read back from the engine itself
    runner = docker_runner(docker_engine, network_mode="none", mem_limit="1g", cpus=1, auto_remove=False)
    dag = pipeline(dag_id, "data/breast_cancer.csv", {"train": {
        "runner": runner, "estimator": "sklearn.ensemble.RandomForestClassifier",
        "hyperparams": {"n_estimators": 10, "max_depth": 3}}}, experiment=experiment)  # fmt: skip
    run = airflow_home.dag_test(dag)
    log = capfd.readouterr().out
    assert states(run) == {"ingest": "success", "train": "success"}
    engine = docker_engine.client()
    (container,) = engine.containers.list(all=True, filters={"label": f"{LABEL_PREFIX}dag_id={dag_id}"})
    try:
        host = container.attrs["HostConfig"]
        assert (host["NetworkMode"], host["Memory"], host["NanoCpus"]) == ("none", 1024**3, 10**9), host
        assert container.attrs["State"]["ExitCode"] == 0
        assert f"Kept container {container.id[:12]} (auto_remove is false)" in log
    finally:
        container.remove(force=True)

    out, ingested = xcom(run, "train"), xcom(run, "ingest")
    assert out["mlflow_run_id"] == ingested["mlflow_run_id"]
    assert out["model_uri"] == f"models:/{out['model_id']}" and out["train_rows"] == 426
    assert out["params"] == {"n_estimators": 10, "max_depth": 3, "random_state": 3}

    client = MlflowClient(embedded_tracking_uri(project))
    (mlflow_run,) = pipeline_runs(client, experiment)
    params = mlflow_run.data.params
    assert (params["train.estimator"], params["param.n_estimators"], params["param.random_state"]) == (
        "sklearn.ensemble.RandomForestClassifier", "10", "3")  # fmt: skip
    model = client.get_logged_model(out["model_id"])
    assert (model.source_run_id, model.experiment_id) == (
        mlflow_run.info.run_id,
        mlflow_run.info.experiment_id,
    )
    assert model.artifact_location.startswith((project / ".mlops").as_uri())

    mlflow.set_tracking_uri(embedded_tracking_uri(project))
    try:
        test = pd.read_parquet(ingested["test_uri"])
        predictions = mlflow.pyfunc.load_model(out["model_uri"]).predict(test[ingested["features"]])
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert (predictions == test["target"]).mean() > 0.9


def test_trains_in_a_container_against_a_tracking_server_with_an_s3_workspace(
    airflow_home: Any, docker_engine: Any, s3_server: Any, mlflow_server: Any, mlflow_token_gate: Any,
    project: Path, dag_ids: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Split read from S3 with the workspace's credentials, model logged over HTTP with the connection's
    token, to a tracking server that refuses any request without it (a bearer-token gate in front of the
    MLflow server): both reach the container through its environment only, and the token is masked."""
    from airflow.sdk._shared.secrets_masker import redact

    token = mlflow_token_gate.token
    tracking = {"conn_type": "mlflow", "host": mlflow_token_gate.tracking_uri, "password": token}
    bucket = s3_server.create_bucket()
    for key, value in {**s3_server.airflow_conn_env("seaweed"), "AIRFLOW_CONN_TRACKING": json.dumps(tracking),
                       "AIRFLOW__MLOPS__WORKSPACE": f"s3://{bucket}/ws",
                       "AIRFLOW__MLOPS__WORKSPACE_CONN_ID": "seaweed"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)

    experiment, dag_id = unique("exp"), unique("docker_server")
    dag_ids.append(dag_id)
    runner = docker_runner(docker_engine, network_mode="host")
    runner["environment"]["S3_KEY_COPY"] = "{{ conn.seaweed.password }}"  # the runner is templated
    dag = pipeline(dag_id, "data/diabetes.csv", {"train": {
        "runner": runner, "entrypoint": "models/ridge.py:build", "hyperparams": {"alpha": 0.25}}},
        experiment=experiment, mlflow_conn_id="tracking")  # fmt: skip
    run = airflow_home.dag_test(dag)
    log = capfd.readouterr().out
    assert states(run) == {"ingest": "success", "train": "success"}

    ingested, out = xcom(run, "ingest"), xcom(run, "train")
    assert ingested["train_uri"].startswith(f"s3://{bucket}/ws/")
    # the container logged its model through the gate, which let nothing through without the token but the
    # hook's reachability probe (GET /health, sent without credentials: any answer means "reachable")
    assert mlflow_token_gate.allowed > 0
    assert set(mlflow_token_gate.refused) <= {"GET /health"}, mlflow_token_gate.refused
    assert "inside a container: True" in log  # the entrypoint's output, streamed into the task log
    assert "templated environment: True" in log
    # the token reached the container, and nothing but the entrypoint printing it put it in the log ...
    assert [line for line in log.splitlines() if token in line] == [
        line for line in log.splitlines() if f"tracking token: {token}" in line]  # fmt: skip
    # ... where the task's supervisor masks it (dag.test() prints the task's log in-process, unmasked)
    assert redact(f"tracking token: {token}") == "tracking token: ***"
    assert redact(s3_server.secret_key) == "***"
    (command_line,) = [line for line in log.splitlines() if "command line: --train-uri" in line]
    assert ingested["train_uri"] in command_line and "alpha" not in command_line  # params travel in the env

    client = mlflow_server.client()
    (mlflow_run,) = pipeline_runs(client, experiment)
    assert out["mlflow_run_id"] == mlflow_run.info.run_id
    assert mlflow_run.data.params["train.entrypoint"] == "models/ridge.py:build"
    assert mlflow_run.data.params["param.alpha"] == "0.25"
    model = client.get_logged_model(out["model_id"])
    assert (model.source_run_id, model.experiment_id) == (
        mlflow_run.info.run_id,
        mlflow_run.info.experiment_id,
    )
    assert out["model_class"] == "sklearn.linear_model._ridge.Ridge"


def test_failures_inside_the_container_are_explained(
    airflow_home: Any,
    docker_engine: Any,
    project: Path,
    dag_ids: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A crashing entrypoint fails with the container's last lines; a refused estimator or mount fails at
    once, without retrying; a container still running at execution_timeout is killed. None is left behind."""
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    experiment, dag_id = unique("exp"), unique("docker_fail")
    dag_ids.append(dag_id)
    runner = docker_runner(docker_engine, network_mode="none")
    dag = pipeline(dag_id, "data/diabetes.csv", {
        "raises": {"runner": runner, "entrypoint": "models/ridge.py:broken", "hyperparams": {"alpha": -1}},
        "not_allowed": {"runner": runner, "estimator": "subprocess.Popen", "retries": 2},
        "bad_mount": {"runner": {**runner, "mounts": [*runner["mounts"], "/etc:/host-etc:ro"]},
                      "estimator": "sklearn.linear_model.Ridge", "retries": 2},
        "hangs": {"runner": runner, "entrypoint": "models/ridge.py:hang", "timeout": 30},
    }, experiment=experiment)  # fmt: skip
    run = airflow_home.dag_test(dag)
    log = capfd.readouterr().out
    assert states(run) == {"ingest": "success", "raises": "failed", "not_allowed": "failed",
                           "bad_mount": "failed", "hangs": "failed"}  # fmt: skip
    assert [try_number(run, t) for t in ("not_allowed", "bad_mount")] == [1, 1]  # configuration: no retry

    failure = log[log.index("exited with code 1; its last") :]
    assert "about to fail" in failure and "ValueError: alpha must be positive, got -1" in failure
    assert "estimator 'subprocess.Popen' is not allowed" in log
    assert "runner mount source '/etc' resolves to /etc, outside the project root" in log
    assert "hanging" in log and "AirflowTaskTimeout" in log
    assert run.get_task_instance("hangs").duration < 30 + 30  # killed, not left to sleep for an hour

    (mlflow_run,) = pipeline_runs(MlflowClient(embedded_tracking_uri(project)), experiment)
    assert mlflow_run.info.status == "FAILED"


def test_unreachable_engine_is_a_retryable_service_error(
    airflow_home: Any,
    docker_engine: Any,
    project: Path,
    dag_ids: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    from mlops_provider.exceptions import ServiceUnavailableError
    from mlops_provider.runners.docker import DockerTrainRunner

    url = f"unix://{project}/no-such-docker.sock"
    with pytest.raises(ServiceUnavailableError, match=f"Docker engine at {url} is unreachable"):
        DockerTrainRunner({"type": "docker", "image": "any", "docker_url": url}, log=None).client()  # type: ignore[arg-type]

    dag_id = unique("docker_down")
    dag_ids.append(dag_id)
    runner = {**docker_runner(docker_engine), "docker_url": url}
    dag = pipeline(
        dag_id,
        "data/diabetes.csv",
        {"train": {"runner": runner, "estimator": "sklearn.linear_model.Ridge", "retries": 1}},
        experiment=unique("exp"),
    )
    run = airflow_home.dag_test(dag)
    assert states(run) == {"ingest": "success", "train": "failed"}
    assert try_number(run, "train") == 2  # retried: the engine may come back
    assert f"ServiceUnavailableError: Docker engine at {url} is unreachable" in capfd.readouterr().out


def test_mounts_from_a_spec_stay_inside_the_allowed_folders(project: Path) -> None:
    from mlops_provider.docker_engine import MountSpec, parse_mount, same_path_mounts
    from mlops_provider.exceptions import NotAllowedError

    assert parse_mount("./data:/data:ro") == MountSpec(str(project / "data"), "/data", read_only=True)
    assert parse_mount(f"{project}/models:/m") == MountSpec(str(project / "models"), "/m", read_only=False)
    assert parse_mount("pip-cache:/root/.cache") == MountSpec(
        "pip-cache", "/root/.cache", False, type="volume"
    )
    (project.parent / "secret").mkdir()
    (project / "escape").symlink_to(project.parent / "secret")
    for source in ("/etc", "../secret", "./escape"):
        with pytest.raises(NotAllowedError, match="outside the project root"):
            parse_mount(f"{source}:/x:ro")
    with pytest.raises(Exception, match="source:/target"):
        parse_mount("/data")

    root, mlops = project, project / ".mlops"
    needed = [(mlops / "ws" / "run1", False), (mlops, True), (root, False), (mlops, False)]
    assert [m.describe() for m in same_path_mounts(needed)] == [f"{root}:{root}:ro", f"{mlops}:{mlops}:rw"]


def test_a_container_left_by_an_earlier_try_is_removed(docker_engine: Any, project: Path) -> None:
    """A worker killed hard cannot remove its container; the next try of the same task instance does."""
    from mlops_provider.runners.docker import DockerTrainRunner

    dag_id = unique("docker_crash")
    labels = {
        "mlops.dag_id": dag_id,
        "mlops.run_id": "manual__1",
        "mlops.task_id": "train",
        "mlops.map_index": "-1",
    }
    client = docker_engine.client()
    kept = client.containers.run(
        docker_engine.image, ["sleep", "600"], detach=True, labels={**labels, "mlops.task_id": "other_task"}
    )
    left = client.containers.run(docker_engine.image, ["sleep", "600"], detach=True,
                                 labels={**labels, "mlops.try_number": "1"})  # fmt: skip
    try:
        runner = DockerTrainRunner(docker_runner(docker_engine), log=logging.getLogger("test"))
        runner._remove_leftovers(runner.client(), {**labels, "mlops.try_number": "2"})
        remaining = {
            c.id for c in client.containers.list(all=True, filters={"label": f"mlops.dag_id={dag_id}"})
        }
        assert left.id not in remaining and kept.id in remaining
    finally:
        for container in (kept, left):
            with contextlib.suppress(Exception):
                container.remove(force=True)
