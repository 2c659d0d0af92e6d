"""Validate stage: real Great Expectations 1.x, real MLflow (embedded store), through Airflow's dag.test()."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.integration._stage_helpers import make_project, pipeline_runs, states, try_number, unique, xcom

pytestmark = pytest.mark.integration

FAILING = [
    {"expect_table_row_count_to_be_between": {"min_value": 100}},
    {"expect_column_values_to_be_between": {"column": "mean radius", "min_value": 0, "max_value": 50}},
    {"expect_column_values_to_not_be_null": {"column": "mean texture"}},
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import pandas as pd

    root = make_project(tmp_path, monkeypatch)
    frame = pd.read_csv(root / "data" / "breast_cancer.csv")
    frame.loc[3, "mean radius"] = 80.5  # out of range
    frame.loc[5, "mean texture"] = None  # a missing value
    frame.to_csv(root / "data" / "dirty.csv", index=False)
    return root


def test_failed_expectations_are_named_with_column_and_observed_value(project: Path) -> None:
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.exceptions import DataValidationError
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.stages.validate import validate

    frame = pd.read_csv(project / "data" / "dirty.csv")
    frame["seen"] = pd.Timestamp("2024-03-01") + pd.to_timedelta(frame.index, unit="h")
    frame["kind"] = "tumour"
    snapshot = project / "snapshot.parquet"
    frame.to_parquet(snapshot, index=False)
    (project / "suite.json").write_text(json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "target", "value_set": [0, 1]}},
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": "mean area", "max_value": 100}},
    ]}))
    hook = MLflowHook()
    run_id = hook.client.create_run(hook.get_or_create_experiment(unique("exp"))).info.run_id
    expectations = [
        *FAILING,
        # a plain date against a datetime column: GX needs a full timestamp; the stage supplies it
        {"expect_column_values_to_be_between": {"column": "seen", "min_value": "2024-03-01"}},
        {"expect_column_values_to_be_in_set": {"column": "kind", "value_set": ["tumour"]}},
    ]

    with pytest.raises(DataValidationError) as caught:
        validate(str(snapshot), expectations=expectations, suite="suite.json", client=hook.client,
                 mlflow_run_id=run_id)

    message = str(caught.value)
    assert "3 of 7 expectation(s) not met on 569 rows" in message
    radius = ("expect_column_values_to_be_between on column 'mean radius': "
              "1 of 569 values unexpected, e.g. [80.5]")
    assert radius in message
    assert "expect_column_values_to_not_be_null on column 'mean texture': 1 of 569 values" in message
    assert "expect_column_max_to_be_between on column 'mean area': observed 2501.0" in message
    assert "seen" not in message and "kind" not in message and "row_count" not in message

    client = MlflowClient(hook.tracking_uri)
    assert {a.path for a in client.list_artifacts(run_id, "validation")} == {
        "validation/result.json", "validation/report.html"}
    local = Path(client.download_artifacts(run_id, "validation", str(project / "dl")))
    result = json.loads((local / "result.json").read_text())
    assert result["success"] is False and len(result["results"]) == 7
    report = (local / "report.html").read_text()
    assert report.count("<td class='fail'>FAIL</td>") == 3 and report.count("<td class='pass'>pass</td>") == 4
    assert "mean radius" in report and "80.5" in report
    assert client.get_run(run_id).data.metrics["validation_failed_expectations"] == 3


def test_on_failure_fail_stops_the_pipeline_without_retries(airflow_home, project: Path) -> None:
    from airflow.sdk import DAG
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri
    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.operators.train import TrainModelOperator
    from mlops_provider.operators.validate import ValidateDatasetOperator

    experiment = unique("exp")
    common = {"experiment": experiment, "retries": 3, "retry_delay": dt.timedelta(seconds=0)}
    with DAG(unique("validate_fail"), schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        (
            IngestDatasetOperator(task_id="ingest", source="data/dirty.csv", **common)
            >> ValidateDatasetOperator(task_id="validate", expectations=FAILING, on_failure="fail", **common)
            >> TrainModelOperator(task_id="train", estimator="sklearn.dummy.DummyClassifier", **common)
        )
    run = airflow_home.dag_test(dag)

    assert states(run) == {"ingest": "success", "validate": "failed", "train": "upstream_failed"}
    assert try_number(run, "validate") == 1  # bad data does not improve by retrying
    client = MlflowClient(embedded_tracking_uri(project))
    (mlflow_run,) = pipeline_runs(client, experiment)
    assert mlflow_run.info.status == "FAILED"
    assert mlflow_run.data.tags["mlops.validation"] == "failed (fail)"
    assert {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "validation")} == {
        "validation/result.json", "validation/report.html"}


def test_on_failure_warn_records_and_continues(airflow_home, project: Path) -> None:
    from airflow.sdk import DAG

    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.operators.validate import ValidateDatasetOperator

    with DAG(unique("validate_warn"), schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        experiment = unique("exp")
        IngestDatasetOperator(task_id="load", source="data/dirty.csv", experiment=experiment) >> (
            ValidateDatasetOperator(task_id="check", expectations=FAILING, on_failure="warn",
                                    ingest_task_id="load", experiment=experiment)
        )
    run = airflow_home.dag_test(dag)

    assert states(run) == {"load": "success", "check": "success"}
    out = xcom(run, "check")
    assert out["success"] is False and out["evaluated"] == 3
    assert [(f["expectation"], f["column"]) for f in out["failed"]] == [
        ("expect_column_values_to_be_between", "mean radius"),
        ("expect_column_values_to_not_be_null", "mean texture"),
    ]
    assert out["failed"][0]["observed"] == "1 of 569 values unexpected, e.g. [80.5]"
    assert out["report_uri"] == f"runs:/{xcom(run, 'load')['mlflow_run_id']}/validation/report.html"
