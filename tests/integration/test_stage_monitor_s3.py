"""The monitor with everything remote: live data in ``s3://`` (SeaweedFS, signed requests, a connection
id), the champion's training data in an S3 workspace, and a real ``mlflow server`` over HTTP that stores
the drift report in S3. Both DAGs are the factory's, rendered from one spec."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.integration._monitor_helpers import asset_events, monitor_conf, spec_dags, unpause
from tests.integration._stage_helpers import make_project, states, unique, xcom

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = """\
version: 1
name: {name}
task: classification
defaults: {{retries: 0, execution_timeout: 10m}}
mlflow: {{experiment: {name}, model: {name}_model, conn_id: tracking}}
ingest:
  source: s3://{bucket}/cancer.csv
  conn_id: seaweed
  target: target
  split: {{test_size: 0.25, seed: 7, stratify: true}}
train:
  estimator: sklearn.ensemble.RandomForestClassifier
  params: {{n_estimators: 20, max_depth: 4, random_state: 0}}
evaluate: {{metrics: [roc_auc], thresholds: {{roc_auc: {{min: 0.8}}}}}}
monitor:
  current: "s3://{bucket}/live/{{{{ dag_run.conf['batch'] }}}}.parquet"
  drift: {{share: 0.5, method: psi, threshold: 0.2}}
  retrain: true
"""


def test_monitor_reads_s3_and_reports_to_a_tracking_server(
    airflow_home, s3_server, mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.plan.build import retrain_asset_uri

    project = make_project(tmp_path, monkeypatch)
    data_bucket, work_bucket = s3_server.create_bucket(), s3_server.create_bucket()
    for key, value in {**s3_server.airflow_conn_env("seaweed"), **mlflow_server.airflow_conn_env("tracking"),
                       "AIRFLOW__MLOPS__WORKSPACE": f"s3://{work_bucket}/ws",
                       "AIRFLOW__MLOPS__WORKSPACE_CONN_ID": "seaweed"}.items():
        monkeypatch.setenv(key, value)
    s3 = s3_server.client()
    s3.upload_file(str(project / "data" / "breast_cancer.csv"), data_bucket, "cancer.csv")

    name = unique("remote")
    dags = spec_dags(project, name, SPEC.format(name=name, bucket=data_bucket))
    for dag in dags.values():
        airflow_home.register_dag(dag)
    unpause(name)
    trained = airflow_home.dag_test(dags[name])
    assert set(states(trained).values()) == {"success"}, states(trained)
    train_uri = xcom(trained, "ingest")["train_uri"]
    assert train_uri.startswith(f"s3://{work_bucket}/ws/")

    drifted = pd.read_csv(project / "data" / "breast_cancer.csv")
    features = [c for c in drifted.columns if c != "target"]
    drifted[features] = drifted[features] * 1.5
    drifted.to_parquet(tmp_path / "drifted.parquet", index=False)
    s3.upload_file(str(tmp_path / "drifted.parquet"), data_bucket, "live/2026-06-01.parquet")

    run = airflow_home.dag_test(dags[f"{name}_monitor"], **monitor_conf("2026-06-01"))
    assert states(run) == {"detect_drift": "success", "request_retrain": "success"}
    verdict = xcom(run, "detect_drift")
    assert verdict["dataset_drift"] is True and verdict["drift_share_threshold"] == 0.5
    assert [e["source_run_id"] for e in asset_events(retrain_asset_uri(name))] == [run.run_id]

    client = MlflowClient(mlflow_server.tracking_uri)
    monitoring = client.get_run(verdict["mlflow_run_id"])
    assert monitoring.data.tags["mlops.current_data_uri"] == f"s3://{data_bucket}/live/2026-06-01.parquet"
    assert monitoring.data.tags["mlops.reference_data_uri"] == train_uri
    params = monitoring.data.params
    assert (params["drift.method"], params["drift.threshold"]) == ("psi", "0.2")
    assert monitoring.data.metrics["performance.accuracy"] < 0.8
    with tempfile.TemporaryDirectory() as tmp:  # the report went through the server into S3
        report = Path(client.download_artifacts(verdict["mlflow_run_id"], "monitor/drift_report.html", tmp))
        assert "Drift by column" in report.read_text()
    bucket, _, prefix = mlflow_server.artifacts_destination.removeprefix("s3://").partition("/")
    stored = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert any(o["Key"].endswith(f"{verdict['mlflow_run_id']}/artifacts/monitor/drift_report.html")
               for o in stored)
