"""monitor stage (interface only; implementation lands with the stages work)."""

from __future__ import annotations

from typing import Any

from mlops_provider.operators.base import MLflowStageOperator


class DetectDriftOperator(MLflowStageOperator):
    def __init__(self, **kwargs: Any) -> None:
        own = {k: kwargs.pop(k) for k in list(kwargs) if k not in _BASE_KEYS}
        super().__init__(**kwargs)
        self.stage_kwargs = own

    def execute(self, context: Any) -> Any:
        raise NotImplementedError("DetectDriftOperator is not implemented yet")


_BASE_KEYS = {"experiment", "model_name", "pipeline", "ml_task", "mlflow_conn_id", "spec_sha256", "task_id",
              "doc_md", "outlets", "retries", "owner"}
