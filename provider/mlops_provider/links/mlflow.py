"""Extra links from a stage's task to the MLflow UI: the pipeline's run, the model version it made, and the
reports it logged (validation report, drift report).

An operator persists a small dict to XCom while it runs (:meth:`MLflowRunLink.persist`); ``get_link``
formats the URL. The UI address is ``[mlops] mlflow_ui_url`` when set, else the tracking server itself
(http/https), else ``http://localhost:5000`` — what ``mlflow ui`` serves for the embedded store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from mlops_provider import config

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

    from mlops_provider.compat import TaskInstanceKey
    from mlops_provider.operators.base import MLflowStageOperator

DEFAULT_UI_URL = "http://localhost:5000"


def ui_base_url(tracking_uri: str) -> str:
    """The MLflow UI to link to for a tracking URI."""
    configured = config.get("mlflow_ui_url")
    if configured:
        return configured.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI_URL


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_url(ui_url: str, name: str, version: str | int) -> str:
    return f"{ui_url.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


def artifact_url(ui_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """The MLflow UI's page of one artifact of a run (MLflow 3's route ``.../runs/<run>/artifactPath/*``)."""
    return f"{run_url(ui_url, experiment_id, run_id)}/artifactPath/{quote(path.strip('/'), safe='/')}"


class _MLflowLink(BaseOperatorLink):
    key: ClassVar[str]

    def format(self, value: dict[str, Any]) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        try:
            value = XCom.get_value(key=self.key, ti_key=ti_key)
        except Exception:  # the link is a convenience; never fail the task over it
            return ""
        if not isinstance(value, dict):
            return ""
        try:
            return self.format(value)
        except (KeyError, TypeError):
            return ""

    @classmethod
    def _push(cls, context: Context, value: dict[str, Any]) -> None:
        context["ti"].xcom_push(key=cls.key, value=value)


class MLflowRunLink(_MLflowLink):
    """The MLflow run that every stage of this DAG run logs to."""

    name = "MLflow run"
    key = "mlflow_run"

    def format(self, value: dict[str, Any]) -> str:
        return run_url(value["ui_url"], value["experiment_id"], value["run_id"])

    @classmethod
    def persist(cls, context: Context, *, tracking_uri: str, experiment_id: str, run_id: str) -> None:
        cls._push(context, {"ui_url": ui_base_url(tracking_uri), "experiment_id": str(experiment_id),
                            "run_id": run_id})

    @classmethod
    def copy_from(cls, context: Context, task_id: str) -> None:
        """Link this task to the run an upstream task linked to (a task that does not talk to MLflow)."""
        value = context["ti"].xcom_pull(task_ids=task_id, key=cls.key)
        if isinstance(value, dict):
            cls._push(context, value)


class MLflowModelVersionLink(_MLflowLink):
    """The registered model version this task created or promoted."""

    name = "MLflow model version"
    key = "mlflow_model_version"

    def format(self, value: dict[str, Any]) -> str:
        return model_version_url(value["ui_url"], value["name"], value["version"])

    @classmethod
    def persist(cls, context: Context, *, tracking_uri: str, name: str, version: str | int) -> None:
        cls._push(context, {"ui_url": ui_base_url(tracking_uri), "name": name, "version": str(version)})


class _MLflowArtifactLink(_MLflowLink):
    """One artifact of the pipeline's MLflow run, shown on the artifact page of the MLflow UI."""

    def format(self, value: dict[str, Any]) -> str:
        return artifact_url(value["ui_url"], value["experiment_id"], value["run_id"], value["path"])

    @classmethod
    def persist(
        cls, context: Context, *, tracking_uri: str, experiment_id: str, run_id: str, path: str
    ) -> None:
        cls._push(context, {"ui_url": ui_base_url(tracking_uri), "experiment_id": str(experiment_id),
                            "run_id": run_id, "path": path})

    @classmethod
    def persist_for(cls, task: MLflowStageOperator, context: Context, *, run_id: str, path: str) -> None:
        """:meth:`persist` for a stage operator: its MLflow server and experiment."""
        experiment_id = task.hook.get_or_create_experiment(task.experiment)
        cls.persist(context, tracking_uri=task.hook.tracking_uri, experiment_id=experiment_id, run_id=run_id,
                    path=path)


class ValidationReportLink(_MLflowArtifactLink):
    """The HTML data-validation report (Great Expectations) the validate task logged."""

    name = "Validation report"
    key = "mlflow_validation_report"


class DriftReportLink(_MLflowArtifactLink):
    """The HTML drift report (Evidently) the detect_drift task logged to its monitoring run."""

    name = "Drift report"
    key = "mlflow_drift_report"
