"""What every stage operator shares: the pipeline's identity, the MLflow hook, and the pipeline run.

Every stage logs to one MLflow run per DAG run (:meth:`MLflowStageOperator.pipeline_run_id`). When a
stage fails for good (no retry left), :func:`mark_pipeline_run_failed` ends that run as ``FAILED`` so no
run is left ``RUNNING``; the deploy stage ends it ``FINISHED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_provider.exceptions import StageError
from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperatorLink, Context

    from mlops_provider.hooks.mlflow import MLflowHook


def mark_pipeline_run_failed(context: Context) -> None:
    """``on_failure_callback`` of every stage: end the DAG run's MLflow run as FAILED (if it exists)."""
    task = context["task"]
    if not isinstance(task, MLflowStageOperator):
        return
    run_id = task.hook.find_pipeline_run(context, experiment=task.experiment)
    if run_id is not None:
        task.hook.record_failure(run_id, task_id=task.task_id, error=context.get("exception"))
        task.hook.end_pipeline_run(run_id, "FAILED")
        task.log.info("Marked MLflow run %s as FAILED", run_id)


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
    operator_extra_links: tuple[BaseOperatorLink, ...] = (MLflowRunLink(),)

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
        if mark_pipeline_run_failed not in self.on_failure_callback:
            self.on_failure_callback = [*self.on_failure_callback, mark_pipeline_run_failed]

    @cached_property
    def hook(self) -> MLflowHook:
        from mlops_provider.hooks.mlflow import MLflowHook

        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def pipeline_run_id(self, context: Context) -> str:
        """Get or create the MLflow run of this DAG run, and link the task to it."""
        run_id = self.hook.pipeline_run(
            context, experiment=self.experiment, spec_sha256=self.spec_sha256, pipeline=self.pipeline
        )
        MLflowRunLink.persist(
            context,
            tracking_uri=self.hook.tracking_uri,
            experiment_id=self.hook.get_or_create_experiment(self.experiment),
            run_id=run_id,
        )
        return run_id

    def persist_model_version_link(self, context: Context, *, name: str, version: str | int) -> None:
        """Link the task to a registered model version (register and deploy use it)."""
        MLflowModelVersionLink.persist(
            context, tracking_uri=self.hook.tracking_uri, name=name, version=version
        )

    def upstream(self, context: Context, task_id: str, *keys: str) -> dict[str, Any]:
        """The XCom dict an upstream stage returned; names the task and the missing key when absent."""
        value = context["ti"].xcom_pull(task_ids=task_id)
        if not isinstance(value, dict):
            raise StageError(
                f"task {self.task_id!r} needs the result of task {task_id!r}, which has none; "
                f"is {task_id!r} upstream of {self.task_id!r}?"
            )
        missing = [key for key in keys if key not in value]
        if missing:
            raise StageError(f"the result of task {task_id!r} lacks {', '.join(missing)}")
        return value
