"""What every stage operator shares: the pipeline's identity and the MLflow hook, built lazily."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from mlops_provider.hooks.mlflow import MLflowHook


class MLflowStageOperator(BaseOperator):
    """Base of the stage operators. Keyword-only, no I/O in ``__init__``; all work happens in ``execute``.

    :param experiment: MLflow experiment of the pipeline run.
    :param model_name: registered model name.
    :param pipeline: pipeline name (the training DAG id when built from a spec).
    :param ml_task: ``classification`` or ``regression``.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``; see :class:`MLflowHook` for fallbacks.
    :param spec_sha256: hash of the spec that produced the task, recorded as lineage.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        experiment: str,
        model_name: str | None = None,
        pipeline: str | None = None,
        ml_task: str = "classification",
        mlflow_conn_id: str | None = None,
        spec_sha256: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if ml_task not in ("classification", "regression"):
            raise ValueError(f"ml_task must be classification or regression, not {ml_task!r}")
        self.experiment = experiment
        self.model_name = model_name or experiment
        self.pipeline = pipeline or experiment
        self.ml_task = ml_task
        self.mlflow_conn_id = mlflow_conn_id
        self.spec_sha256 = spec_sha256

    @cached_property
    def hook(self) -> MLflowHook:
        from mlops_provider.hooks.mlflow import MLflowHook

        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)
