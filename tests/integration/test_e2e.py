"""Specs end to end through Airflow: a classification and a regression spec, unchanged code, against the
embedded MLflow store and against a real ``mlflow server`` (artifacts in S3) with the data read from S3.

What is asserted is what a user would look at: task states, the registry (versions, aliases, tags) and
the pipeline's MLflow run (status, verdict).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlops_provider.run import run_spec
from tests.integration._e2e_helpers import (
    alias_holder,
    edit_spec,
    embedded_client,
    make_project,
    server_client,
    unique,
    verdict_artifact,
    versions,
)

pytestmark = pytest.mark.integration

STAGES = ["ingest", "validate", "train", "evaluate", "register", "deploy"]


def _states(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {t.task_id: t.state for t in result.tasks}


def test_classification_spec_on_the_embedded_store(airflow_home, tmp_path: Path, monkeypatch) -> None:
    root = make_project(tmp_path, monkeypatch, "wine_classifier.yaml")
    spec = root / "dags" / "pipelines" / "wine_classifier.yaml"

    first = run_spec(spec)
    assert first.ok, first.failure
    assert _states(first) == dict.fromkeys(STAGES, "success")
    assert set(first.verdict["metrics"]) == {"f1", "accuracy", "precision", "recall", "roc_auc", "log_loss"}
    assert first.verdict["metrics"]["f1"] >= 0.8 and first.verdict["metrics"]["log_loss"] <= 1.0

    client = embedded_client(root)
    (v1,) = versions(client, "wine_cultivar")
    assert sorted(v1.aliases) == ["challenger", "champion"]
    assert v1.tags["team"] == "e2e" and v1.tags["dataset"] == "wine"
    assert v1.tags["airflow.dag_id"] == "wine_classifier" and v1.tags["airflow.run_id"] == first.run_id
    assert v1.tags["mlops.spec_sha256"] == hashlib.sha256(spec.read_bytes()).hexdigest()
    assert v1.tags["mlops.data_sha256"] == first.xcom["ingest"]["data_sha256"]
    run = client.get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlops.verdict"] == "passed"
    assert v1.run_id == first.mlflow_run_id

    # the task pages' extra links, as the real operators stored them when they finished, and what they open
    from mlops_provider.links.mlflow import model_version_url, ui_base_url
    from tests.integration._stage_helpers import xcom

    ui = ui_base_url(client.tracking_uri)
    run_page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{first.mlflow_run_id}"
    for task in STAGES:
        assert xcom(first, task, "_link_MLflowRunLink") == run_page, task
    report = "validation/report.html"
    assert xcom(first, "validate", "_link_ValidationReportLink") == f"{run_page}/artifactPath/{report}"
    assert report in [a.path for a in client.list_artifacts(first.mlflow_run_id, "validation")]
    for task in ("register", "deploy"):
        assert xcom(first, task, "_link_MLflowModelVersionLink") == model_version_url(ui, "wine_cultivar", 1)

    # unchanged spec, same data: the retrained twin ties with the champion, and a tie keeps the champion
    second = run_spec(spec)
    assert second.ok and second.rejected, second.summary()
    champion = next(c for c in second.verdict["checks"] if c["name"] == "champion")
    assert not champion["passed"] and second.verdict["champion_version"] == "1"
    assert "a tie (required > 0): @champion stays on v1" in champion["reason"]
    assert second.promotion is None and second.model_version is None
    assert [str(v.version) for v in versions(client, "wine_cultivar")] == ["1"]  # nothing registered
    assert alias_holder(client, "wine_cultivar", "champion") == "1"
    assert client.get_run(second.mlflow_run_id).info.status == "FINISHED"


def test_regression_spec_champion_must_be_beaten(airflow_home, tmp_path: Path, monkeypatch) -> None:
    """rmse, lower is better, by at least 1.0: a baseline, a better model, then a worse one."""
    root = make_project(tmp_path, monkeypatch, "diabetes_regression.yaml")
    spec = root / "dags" / "pipelines" / "diabetes_regression.yaml"
    client = embedded_client(root)

    baseline = run_spec(spec)  # DummyRegressor: predicts the mean
    assert baseline.ok, baseline.failure
    assert alias_holder(client, "diabetes_progression", "production") == "1"

    edit_spec(spec, train={"estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 0.1}})
    better = run_spec(spec)
    assert better.ok, better.failure
    assert better.verdict["metrics"]["rmse"] < baseline.verdict["metrics"]["rmse"] - 1.0
    assert better.promotion["previous_version"] == "1"
    assert alias_holder(client, "diabetes_progression", "production") == "2"
    assert sorted(versions(client, "diabetes_progression")[1].aliases) == [
        "challenger",
        "latest_candidate",
        "production",
    ]

    edit_spec(spec, train={"estimator": "sklearn.dummy.DummyRegressor", "params": {"strategy": "median"}})
    worse = run_spec(spec)
    assert worse.ok and worse.rejected  # an expected outcome: the run succeeds, nothing is promoted
    assert _states(worse) == {
        "ingest": "success",
        "validate": "success",
        "train": "success",
        "evaluate": "success",
        "register": "skipped",
        "deploy": "skipped",
    }
    assert worse.task("evaluate").tries == 1
    assert "vs @production v2" in worse.verdict["reason"] and "@production stays on v2" in worse.summary()
    assert worse.verdict["status"] == "rejected"
    assert len(versions(client, "diabetes_progression")) == 2  # nothing registered
    assert alias_holder(client, "diabetes_progression", "production") == "2"  # champion untouched
    run = client.get_run(worse.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlops.verdict"] == "rejected"
    champion = next(
        c for c in verdict_artifact(client, worse.mlflow_run_id)["checks"] if c["name"] == "champion"
    )
    assert champion["passed"] is False and champion["op"] == "<="
    assert champion["bound"] == pytest.approx(better.verdict["metrics"]["rmse"] - 1.0)


@pytest.mark.parametrize("spec_name", ["wine_classifier.yaml", "diabetes_regression.yaml"])
def test_spec_against_mlflow_server_with_s3_artifacts_and_s3_data(
    airflow_home, s3_server, mlflow_server, tmp_path: Path, monkeypatch, spec_name: str
) -> None:
    root = make_project(tmp_path, monkeypatch, spec_name)
    spec = root / "dags" / "pipelines" / spec_name
    dataset = "wine" if spec_name.startswith("wine") else "diabetes"
    bucket = s3_server.create_bucket()
    s3 = s3_server.client()
    s3.upload_file(str(root / "include" / "data" / f"{dataset}.csv"), bucket, f"raw/{dataset}.csv")
    (root / "include" / "data" / f"{dataset}.csv").unlink()  # S3 is the only copy
    model = unique(dataset)
    edit_spec(
        spec,
        mlflow={"model": model},
        ingest={
            "source": f"s3://{{{{ var.value.mlops_e2e_bucket }}}}/raw/{dataset}.csv",
            "conn_id": "aws_e2e",
            "format": "csv",
        },
    )
    for key, value in {
        **mlflow_server.airflow_conn_env("mlflow_default"),
        **s3_server.airflow_conn_env("aws_e2e"),
        "AIRFLOW_VAR_MLOPS_E2E_BUCKET": bucket,
        "AIRFLOW__MLOPS__WORKSPACE": f"s3://{bucket}/work",
        "AIRFLOW__MLOPS__WORKSPACE_CONN_ID": "aws_e2e",
    }.items():
        monkeypatch.setenv(key, value)

    result = run_spec(spec)
    assert result.ok, result.failure
    assert _states(result) == dict.fromkeys(STAGES, "success")
    assert result.xcom["ingest"]["test_uri"].startswith(f"s3://{bucket}/work/")
    assert result.mlflow_run_url.startswith(mlflow_server.tracking_uri)

    client = server_client(mlflow_server)
    (version,) = versions(client, model)
    alias = "champion" if dataset == "wine" else "production"
    assert alias_holder(client, model, alias) == "1"
    assert version.tags["airflow.run_id"] == result.run_id and version.tags["mlops.verdict"] == "passed"
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    assert not (root / ".mlops" / "mlflow.db").exists()  # nothing went to the embedded store
    # the model's files are in the server's S3 bucket, and the registry serves them back
    artifacts_bucket = mlflow_server.artifacts_destination.removeprefix("s3://").split("/")[0]
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=artifacts_bucket)
        for o in page.get("Contents", [])
    ]
    model_id = result.xcom["train"]["model_id"]
    assert any(model_id in key and key.endswith("MLmodel") for key in keys)
    assert any(key.endswith("evaluation/verdict.json") for key in keys)
    verdict = verdict_artifact(client, result.mlflow_run_id)
    assert verdict["status"] == "passed" and verdict["metrics"] == result.verdict["metrics"]
