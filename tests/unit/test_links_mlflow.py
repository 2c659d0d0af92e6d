"""Extra links to the MLflow UI: which address, what URL, and what a finished task stores for the UI."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_provider.links.mlflow import artifact_url, model_version_url, run_url, ui_base_url


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


def test_report_links_open_the_artifact_page_of_the_run() -> None:
    # MLflow 3's UI route for one artifact: /experiments/:experimentId/runs/:runUuid/artifactPath/*
    assert (artifact_url("http://h:5000/", "3", "abc", "validation/report.html")
            == "http://h:5000/#/experiments/3/runs/abc/artifactPath/validation/report.html")
    assert (artifact_url("http://h:5000", "3", "abc", "/monitor/drift report#1.html")
            == "http://h:5000/#/experiments/3/runs/abc/artifactPath/monitor/drift%20report%231.html")


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


def test_report_links_and_the_retrain_task_link_after_a_run(airflow_home: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Validate and detect_drift link their HTML reports; request_retrain (no MLflow of its own) links the
    monitoring run that decided, even when it skips."""
    from airflow.sdk import DAG

    from mlops_provider.links.mlflow import DriftReportLink, MLflowRunLink, ValidationReportLink
    from mlops_provider.operators.base import MLflowStageOperator
    from mlops_provider.operators.monitor import RequestRetrainOperator
    from tests.integration._stage_helpers import make_project, xcom

    make_project(tmp_path, monkeypatch)
    monkeypatch.setenv("AIRFLOW__MLOPS__MLFLOW_UI_URL", "https://ml.example")

    class ReportOperator(MLflowStageOperator):
        operator_extra_links = (MLflowRunLink(), ValidationReportLink(), DriftReportLink())

        def execute(self, context: Any) -> dict[str, Any]:
            run_id = self.pipeline_run_id(context)
            ValidationReportLink.persist_for(self, context, run_id=run_id, path="validation/report.html")
            DriftReportLink.persist_for(self, context, run_id=run_id, path="monitor/drift_report.html")
            return {"dataset_drift": False, "drift_share": 0.1, "drift_share_threshold": 0.5}

    with DAG(f"reports_{uuid.uuid4().hex[:8]}", schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        ReportOperator(task_id="detect_drift", experiment="reports") >> RequestRetrainOperator(
            task_id="request_retrain"
        )

    run = airflow_home.dag_test(dag)
    run_link = xcom(run, "detect_drift", "_link_MLflowRunLink")
    assert run_link.startswith("https://ml.example/#/experiments/")
    assert xcom(run, "detect_drift", "_link_ValidationReportLink") == (
        f"{run_link}/artifactPath/validation/report.html"
    )
    assert xcom(run, "detect_drift", "_link_DriftReportLink") == (
        f"{run_link}/artifactPath/monitor/drift_report.html"
    )
    assert run.get_task_instance("request_retrain").state == "skipped"
    assert xcom(run, "request_retrain", "_link_MLflowRunLink") == run_link


def test_every_stage_task_links_its_mlflow_run() -> None:
    """Each task of the example pipeline's DAGs (training and monitor) has the MLflow run link, and every
    link class is registered with the provider (the UI shows only registered links of a serialized DAG)."""
    import importlib

    from mlops_provider.get_provider_info import get_provider_info
    from mlops_provider.links.mlflow import MLflowRunLink
    from mlops_provider.plan.build import build_plan
    from mlops_provider.spec.load import load_spec

    root = Path(__file__).resolve().parents[2]
    loaded = load_spec(root / "dags/pipelines/breast_cancer.yaml", project_root=root, allowed_modules=None)
    assert loaded.spec is not None, loaded.issues
    plan = build_plan(loaded.spec, source="breast_cancer.yaml", text=loaded.text, spec_sha256=loaded.sha256)
    registered = set(get_provider_info()["extra-links"])
    tasks = [task for dag in plan.dags for task in dag.tasks]
    assert {"validate", "detect_drift", "request_retrain"} <= {task.task_id for task in tasks}
    for task in tasks:
        module, _, name = task.operator.rpartition(".")
        links = getattr(importlib.import_module(module), name).operator_extra_links
        assert any(isinstance(link, MLflowRunLink) for link in links), f"{task.task_id}: no MLflow run link"
        for link in links:
            assert f"{type(link).__module__}.{type(link).__qualname__}" in registered
