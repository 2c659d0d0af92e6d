"""Extra links from a stage's task to the MLflow UI: the pipeline's run, and the model version it made.

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
    from airflow.sdk.types import TaskInstanceKey

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


class MLflowModelVersionLink(_MLflowLink):
    """The registered model version this task created or promoted."""

    name = "MLflow model version"
    key = "mlflow_model_version"

    def format(self, value: dict[str, Any]) -> str:
        return model_version_url(value["ui_url"], value["name"], value["version"])

    @classmethod
    def persist(cls, context: Context, *, tracking_uri: str, name: str, version: str | int) -> None:
        cls._push(context, {"ui_url": ui_base_url(tracking_uri), "name": name, "version": str(version)})
