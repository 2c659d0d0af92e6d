"""Ingest stage through Airflow (``dag.test()`` of hand-written DAGs) against the embedded MLflow store."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from tests.integration._stage_helpers import make_project, once_deferred, pipeline_runs, states, unique, xcom

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def _git_commit(root: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    for argv in (["git", "init", "-q"], ["git", "add", "data"], ["git", "commit", "-qm", "data"]):
        subprocess.run(argv, cwd=root, env=env, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_ingest_snapshots_splits_and_records_lineage(airflow_home, project: Path) -> None:
    import pandas as pd
    from airflow.sdk import DAG
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri
    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.storage.workspace import frame_sha256

    head = _git_commit(project)
    dag_id, experiment = unique("ingest_local"), unique("exp")
    params = {"file": "breast_cancer.csv"}
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1), params=params) as dag:
        IngestDatasetOperator(
            task_id="ingest", source="data/{{ params.file }}", experiment=experiment, spec_sha256="ab" * 32,
            stratify=True, test_size=0.2, seed=7,
        )
    run = airflow_home.dag_test(dag)
    assert states(run) == {"ingest": "success"}

    out = xcom(run, "ingest")
    assert out["source"] == str(project / "data" / "breast_cancer.csv")
    assert (out["rows"], out["train_rows"], out["test_rows"]) == (569, 455, 114)
    assert out["target"] == "target" and len(out["features"]) == 30 and out["columns"][-1] == "target"
    workspace = project / ".mlops" / "workspace" / dag_id
    snapshot, train, test = (Path(out[k]) for k in ("snapshot_uri", "train_uri", "test_uri"))
    assert all(p.is_file() and p.is_relative_to(workspace) for p in (snapshot, train, test))
    assert frame_sha256(pd.read_parquet(snapshot)) == out["data_sha256"]
    # stratified: class balance of the test split within one row of the whole table's
    assert abs(pd.read_parquet(test)["target"].mean() - pd.read_parquet(snapshot)["target"].mean()) < 0.01

    client = MlflowClient(embedded_tracking_uri(project))
    (mlflow_run,) = pipeline_runs(client, experiment)
    assert mlflow_run.info.run_id == out["mlflow_run_id"]
    assert mlflow_run.info.status == "RUNNING"  # later stages log to it; deploy ends it
    tags = mlflow_run.data.tags
    assert tags["airflow.dag_id"] == dag_id and tags["airflow.run_id"] == run.run_id
    assert tags["airflow.try_number"] == "1"
    assert tags["mlops.spec_sha256"] == "ab" * 32
    assert tags["mlops.git_sha"] == head
    assert tags["mlops.data_sha256"] == out["data_sha256"]
    inputs = mlflow_run.inputs.dataset_inputs
    contexts = {{t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset for d in inputs}
    assert set(contexts) == {"training", "testing"}
    assert str(project / "data" / "breast_cancer.csv") in contexts["training"].source

    link = xcom(run, "ingest", "_link_MLflowRunLink")
    assert link == (f"http://localhost:5000/#/experiments/{mlflow_run.info.experiment_id}"
                    f"/runs/{mlflow_run.info.run_id}")


def test_source_outside_project_root_fails_and_ends_run_failed(airflow_home, project: Path) -> None:
    from airflow.sdk import DAG
    from mlflow import MlflowClient

    from mlops_provider.exceptions import NotAllowedError
    from mlops_provider.hooks.mlflow import embedded_tracking_uri
    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.stages.ingest import source_uri

    (project.parent / "secret.csv").write_text("a,target\n1,0\n")
    with pytest.raises(NotAllowedError, match=r"ingest source '\.\./secret\.csv' .* outside the project"):
        source_uri("../secret.csv")

    dag_id, experiment = unique("ingest_escape"), unique("exp")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        IngestDatasetOperator(task_id="ingest", source="../secret.csv", experiment=experiment)
    run = airflow_home.dag_test(dag)
    assert states(run) == {"ingest": "failed"}
    (mlflow_run,) = pipeline_runs(MlflowClient(embedded_tracking_uri(project)), experiment)
    assert mlflow_run.info.status == "FAILED"  # no orphaned RUNNING run


def test_ingest_waits_deferred_for_a_late_source(airflow_home, project: Path) -> None:
    from airflow.sdk import DAG

    from mlops_provider.operators.ingest import IngestDatasetOperator

    late = project / "data" / "late.csv"
    dag_id = unique("ingest_wait")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        IngestDatasetOperator(task_id="ingest", source="data/late.csv", experiment=unique("exp"),
                              target="target", wait_timeout=120, wait_poke_interval=0.5)

    def arrive() -> None:
        (project / "data" / "diabetes.csv").replace(late)

    with once_deferred(dag_id, "ingest", arrive) as deferred:
        run = airflow_home.dag_test(dag)
    assert deferred.is_set(), "the task never deferred while the source was missing"
    assert states(run) == {"ingest": "success"}
    assert xcom(run, "ingest")["rows"] == 442
