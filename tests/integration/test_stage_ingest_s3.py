"""ingest → validate → train from ``s3://`` (SeaweedFS) into an S3 workspace, tracked by a real
``mlflow server`` whose artifacts land in S3 too. The source appears only after ingest has deferred."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.integration._stage_helpers import make_project, once_deferred, pipeline_runs, states, unique, xcom

pytestmark = pytest.mark.integration


def test_pipeline_from_s3_with_tracking_server(airflow_home, s3_server, mlflow_server, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import DAG

    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.operators.train import TrainModelOperator
    from mlops_provider.operators.validate import ValidateDatasetOperator

    project = make_project(tmp_path, monkeypatch)
    data_bucket, work_bucket = s3_server.create_bucket(), s3_server.create_bucket()
    settings = {
        **s3_server.airflow_conn_env("seaweed"),
        **mlflow_server.airflow_conn_env("tracking"),
        "AIRFLOW__MLOPS__WORKSPACE": f"s3://{work_bucket}/ws",
        "AIRFLOW__MLOPS__WORKSPACE_CONN_ID": "seaweed",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)

    dag_id, experiment = unique("s3_pipeline"), unique("exp")
    common = {"experiment": experiment, "mlflow_conn_id": "tracking"}
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        (
            IngestDatasetOperator(
                task_id="ingest", source=f"s3://{data_bucket}/incoming/{{{{ ds }}}}/cancer.csv",
                source_conn_id="seaweed", stratify=True, wait_timeout=120, wait_poke_interval=0.5, **common,
            )
            >> ValidateDatasetOperator(
                task_id="validate",
                expectations=[{"expect_column_values_to_not_be_null": {"column": "target"}}],
                **common,
            )
            >> TrainModelOperator(task_id="train", estimator="sklearn.tree.DecisionTreeClassifier",
                                  hyperparams={"max_depth": 3}, seed=0, **common)
        )

    s3 = s3_server.client()

    def arrive() -> None:
        csv = project / "data" / "breast_cancer.csv"
        s3.upload_file(str(csv), data_bucket, "incoming/2024-05-01/cancer.csv")

    with once_deferred(dag_id, "ingest", arrive) as deferred:
        run = airflow_home.dag_test(dag, logical_date=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc))
    assert deferred.is_set()
    assert states(run) == {"ingest": "success", "validate": "success", "train": "success"}

    ingested = xcom(run, "ingest")
    assert ingested["source"] == f"s3://{data_bucket}/incoming/2024-05-01/cancer.csv"
    for key in ("snapshot_uri", "train_uri", "test_uri"):
        assert ingested[key].startswith(f"s3://{work_bucket}/ws/{dag_id}/")
        s3.head_object(Bucket=work_bucket, Key=ingested[key].split("/", 3)[3])  # raises if missing

    client = mlflow_server.client()
    (mlflow_run,) = pipeline_runs(client, experiment)
    assert mlflow_run.data.tags["mlops.data_sha256"] == ingested["data_sha256"]
    assert {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "validation")} == {
        "validation/result.json", "validation/report.html"}
    trained = xcom(run, "train")
    assert client.get_logged_model(trained["model_id"]).source_run_id == mlflow_run.info.run_id

    mlflow_bucket, prefix = mlflow_server.artifacts_destination.removeprefix("s3://").split("/", 1)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_bucket, Prefix=prefix)["Contents"]]
    assert any(k.endswith(f"{trained['model_id']}/artifacts/MLmodel") for k in keys)
    assert any(k.endswith("validation/report.html") for k in keys)

    assert xcom(run, "train", "_link_MLflowRunLink") == (
        f"{mlflow_server.tracking_uri}/#/experiments/{mlflow_run.info.experiment_id}/runs/{mlflow_run.info.run_id}"
    )
