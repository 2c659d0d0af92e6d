"""Extra links to the MLflow UI: which address, what URL, and what a finished task stores for the UI."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_provider.links.mlflow import model_version_url, run_url, ui_base_url


def test_ui_address_follows_the_tracking_uri_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", raising=False)
    assert ui_base_url("https://mlflow.example.com/") == "https://mlflow.example.com"
    assert ui_base_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert ui_base_url("sqlite:////srv/project/.mlops/mlflow.db") == "http://localhost:5000"  # `mlflow ui`
    monkeypatch.setenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", "https://ml.corp/mlflow/")
    assert ui_base_url("http://mlflow:5000") == "https://ml.corp/mlflow"  # browsers cannot reach mlflow:5000


def test_url_formats() -> None:
    assert run_url("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    url = model_version_url("http://h:5000/", "churn model/v2", 7)
    assert url == "http://h:5000/#/models/churn%20model%2Fv2/versions/7"


def test_a_finished_task_stores_both_links_for_the_ui(airflow_home: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink
    from mlops_provider.operators.base import MLflowStageOperator
    from tests.integration._stage_helpers import make_project, xcom

    make_project(tmp_path, monkeypatch)
    monkeypatch.setenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", "https://ml.example")

    class PublishOperator(MLflowStageOperator):
        operator_extra_links = (MLflowRunLink(), MLflowModelVersionLink())

        def execute(self, context: Any) -> None:
            self.pipeline_run_id(context)
            self.persist_model_version_link(context, name="churn", version=4)

    with DAG(f"links_{uuid.uuid4().hex[:8]}", schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        PublishOperator(task_id="publish", experiment="links")
    serialized = DagSerialization.serialize_dag(dag)["tasks"][0]["__var"]["_operator_extra_links"]
    assert set(serialized) == {"MLflow run", "MLflow model version"}

    run = airflow_home.dag_test(dag)
    assert xcom(run, "publish", "_link_MLflowModelVersionLink") == "https://ml.example/#/models/churn/versions/4"
    assert xcom(run, "publish", "_link_MLflowRunLink").startswith("https://ml.example/#/experiments/")
