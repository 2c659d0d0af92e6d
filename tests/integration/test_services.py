"""Smoke tests of the real-service fixtures in tests/fixtures/: each one proves its service really works
(and really refuses what it should), so a stage test that fails points at the stage, not the set-up."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.airflow import AirflowHome
from tests.fixtures.docker import DockerEngine
from tests.fixtures.mlflow import MLflowServer
from tests.fixtures.processes import ServiceProcess, _pid_alive, free_port, kill_process_group
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------------- S3
def test_s3_put_and_get_roundtrip(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    s3 = s3_server.client()
    body = f"hello {uuid.uuid4()}".encode()
    s3.put_object(Bucket=bucket, Key="dir/object.txt", Body=body)

    assert s3.get_object(Bucket=bucket, Key="dir/object.txt")["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/object.txt"]


def test_s3_refuses_wrong_secret(s3_server: S3Server) -> None:
    from botocore.exceptions import ClientError

    bucket = s3_server.create_bucket()
    intruder = s3_server.client(aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as excinfo:
        intruder.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_airflow_connection_via_env(s3_server: S3Server, airflow_home: AirflowHome, monkeypatch) -> None:
    """The fixture's AIRFLOW_CONN_<ID> JSON is a working Airflow `aws` connection (S3Hook talks to it)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    bucket = s3_server.create_bucket()
    for key, value in s3_server.airflow_conn_env("s3_test").items():
        monkeypatch.setenv(key, value)
    hook = S3Hook(aws_conn_id="s3_test")
    hook.load_string("via airflow", key="k.txt", bucket_name=bucket)

    body = s3_server.client().get_object(Bucket=bucket, Key="k.txt")["Body"].read()
    assert body == b"via airflow"
    assert hook.read_key("k.txt", bucket_name=bucket) == "via airflow"


# --------------------------------------------------------------------------------------------- MLflow
def _log_run_with_artifact(server: MLflowServer, tmp_path: Path) -> tuple[str, str]:
    import mlflow

    client = server.client()
    experiment_id = client.create_experiment(f"smoke-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "accuracy", 0.93)
    payload = f"artifact {uuid.uuid4()}"
    src = tmp_path / "note.txt"
    src.write_text(payload)
    client.log_artifact(run.info.run_id, str(src), artifact_path="notes")
    client.set_terminated(run.info.run_id)

    back = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="notes/note.txt", dst_path=str(tmp_path / "dl"),
        tracking_uri=server.tracking_uri,
    )  # fmt: skip
    assert Path(back).read_text() == payload
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.93}
    return run.info.run_id, payload


def test_mlflow_server_artifacts_land_in_s3(mlflow_server: MLflowServer, tmp_path: Path) -> None:
    run_id, payload = _log_run_with_artifact(mlflow_server, tmp_path)

    # The artifact went through the server (mlflow-artifacts:/ proxy) into the S3 bucket.
    run = mlflow_server.client().get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert mlflow_server.s3 is not None
    bucket, _, prefix = mlflow_server.artifacts_destination.removeprefix("s3://").partition("/")
    objects = mlflow_server.s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for o in objects.get("Contents", [])]
    matching = [k for k in keys if run_id in k and k.endswith("notes/note.txt")]
    assert matching, keys
    body = mlflow_server.s3.client().get_object(Bucket=bucket, Key=matching[0])["Body"].read()
    assert body.decode() == payload


def test_mlflow_server_local_artifacts(mlflow_server_local: MLflowServer, tmp_path: Path) -> None:
    run_id, payload = _log_run_with_artifact(mlflow_server_local, tmp_path)

    stored = list(Path(mlflow_server_local.artifacts_destination).rglob("note.txt"))
    assert [p.read_text() for p in stored] == [payload]
    assert run_id in str(stored[0])


# --------------------------------------------------------------------------------------------- Docker
def test_docker_runs_a_container(docker_engine: DockerEngine) -> None:
    client = docker_engine.client()
    out = client.containers.run(
        docker_engine.image, ["sh", "-c", "echo hello from $(cat /etc/debian_version)"], remove=True
    )
    assert out.decode().startswith("hello from 12.")


def test_docker_container_runs_host_python_and_reaches_mlflow(
    docker_engine: DockerEngine, mlflow_server_local: MLflowServer
) -> None:
    """The plan for containerised training: host venv mounted read-only, host network to reach MLflow."""
    code = (
        "import sklearn, mlflow, mlops_provider\n"
        "from mlflow.tracking import MlflowClient\n"
        f"c = MlflowClient({mlflow_server_local.tracking_uri!r})\n"
        "e = c.create_experiment('from-container')\n"
        "r = c.create_run(e); c.log_metric(r.info.run_id, 'rows', 7); c.set_terminated(r.info.run_id)\n"
        "print('RUN', r.info.run_id, sklearn.__version__)\n"
    )
    out = docker_engine.run_python(code)
    run_id = out.strip().splitlines()[-1].split()[1]
    assert mlflow_server_local.client().get_run(run_id).data.metrics == {"rows": 7.0}


def test_docker_mounts_are_read_only(docker_engine: DockerEngine) -> None:
    target = docker_engine.mounts[0]["Target"]
    out = docker_engine.run_python(
        f"import pathlib\ntry:\n    pathlib.Path({target!r}, 'x').write_text('x')\n"
        "except OSError as e:\n    print('refused', e.errno)\n"
    )
    assert out.strip() == "refused 30"  # EROFS


# -------------------------------------------------------------------------------------------- Airflow
def _tiny_dag(dag_id: str, marker: Path, fail: bool = False):
    import pendulum
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    def produce() -> int:
        marker.write_text(os.environ["AIRFLOW_HOME"])
        if fail:
            raise ValueError("boom")
        return 42

    def consume(ti) -> None:
        assert ti.xcom_pull(task_ids="produce") == 42
        marker.write_text(marker.read_text() + "|consumed")

    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        PythonOperator(task_id="produce", python_callable=produce) >> PythonOperator(
            task_id="consume", python_callable=consume
        )
    return dag


def test_airflow_dag_test_runs_tasks(airflow_home: AirflowHome, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    dr = airflow_home.dag_test(_tiny_dag("smoke_ok", marker))

    assert dr.state == "success"
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()} == {
        "produce": "success",
        "consume": "success",
    }
    assert marker.read_text() == f"{airflow_home.path}|consumed"
    assert airflow_home.path != Path.home() / "airflow"


def test_airflow_dag_test_reports_failure(airflow_home: AirflowHome, tmp_path: Path) -> None:
    dr = airflow_home.dag_test(_tiny_dag("smoke_fail", tmp_path / "ran", fail=True))

    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states == {"produce": "failed", "consume": "upstream_failed"}


# ------------------------------------------------------------------------------------- process hygiene
def test_service_process_kills_whole_group(tmp_path: Path) -> None:
    """stop() takes the server's children along (mlflow/uvicorn, dockerd/containerd spawn some)."""
    port = free_port()
    script = (
        "import socket, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print(child.pid, flush=True); time.sleep(600)\n"
    )
    service = ServiceProcess("sleeper", [sys.executable, "-c", script], log_path=tmp_path / "log").start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int((tmp_path / "log").read_text().split()[0])
    leader = service.pid

    service.stop(timeout=5)

    deadline = time.monotonic() + 10  # the orphaned child is reaped by init shortly after SIGTERM
    while any(_pid_alive(pid) for pid in (leader, child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(leader)
    assert not _pid_alive(child_pid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free again
    kill_process_group(leader, timeout=0.1)  # idempotent on a gone group
