"""What every stage operator shares: the pipeline's identity, the MLflow hook, the pipeline run, and
the one place where an error decides whether Airflow retries.

Every stage logs to one MLflow run per DAG run (:meth:`MLflowStageOperator.pipeline_run_id`). When a
stage fails for good (no retry left), :func:`mark_pipeline_run_failed` ends that run as ``FAILED`` with
the task and the first line of its error, so no run is left ``RUNNING``; deploy ends it ``FINISHED``.

:class:`FailFast`: an error of this package whose :attr:`~mlops_provider.exceptions.MlopsError.retryable`
is false (bad data, a failed gate, a spec a deployment does not allow, no champion yet) is raised to
Airflow as its no-retry failure, so the user sees it at once instead of after every retry delay; so is a
server's refusal of the connection's credentials (MLflow's 401/403, S3's AccessDenied).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_provider import config
from mlops_provider.exceptions import MlopsError, StageError, describe, refused_credentials
from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperatorLink, Context

    from mlops_provider.hooks.mlflow import MLflowHook

#: the methods through which Airflow runs an operator's work
_WORK_METHODS = ("execute", "execute_complete", "poke")


def _fail_fast(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MlopsError as exc:
            if exc.retryable:
                raise
            from mlops_provider.compat import AirflowFailException

            raise AirflowFailException(describe(exc)) from exc
        except Exception as exc:
            if not refused_credentials(exc):
                raise
            from mlops_provider.compat import AirflowFailException

            raise AirflowFailException(
                f"{describe(exc)} (the server refused the credentials of the connection; a retry with "
                "the same connection cannot succeed)"
            ) from exc

    run._mlops_fail_fast = True  # type: ignore[attr-defined]
    return run


class FailFast:
    """Mixin for operators and sensors: non-retryable errors of this package fail without retries."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _WORK_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_mlops_fail_fast", False):
                setattr(cls, name, _fail_fast(method))


def mark_pipeline_run_failed(context: Context) -> None:
    """``on_failure_callback`` of every stage: end the DAG run's MLflow run as FAILED (if it exists)."""
    from airflow.sdk.log import redact

    from mlops_provider.tracking import runs

    task = context["task"]
    if not isinstance(task, MLflowStageOperator) or not task.hook.store_exists:
        return  # nothing was ever logged (e.g. the deployment check refused the defaults): create nothing
    ti = context["ti"]
    experiment = task.hook.client.get_experiment_by_name(task.experiment)
    if experiment is None:
        return
    run_id = runs.find_pipeline_run(task.hook.client, str(experiment.experiment_id), dag_id=ti.dag_id,
                                    run_id=ti.run_id)
    if run_id is not None:
        error = context.get("exception")
        failure = str(redact(runs.failure_line(error))) if error is not None else None
        runs.record_failure(task.hook.client, run_id, task_id=task.task_id, failure=failure)
        runs.end_pipeline_run(task.hook.client, run_id, "FAILED")
        task.log.info("Marked MLflow run %s as FAILED", run_id)


class MLflowStageOperator(FailFast, BaseOperator):
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

    def lineage_tags(self, context: Context, *, data_sha256: str | None = None) -> dict[str, str]:
        """The tags that tie a run or model version to this task's DAG run, spec, commit and data."""
        from mlops_provider.tracking.runs import lineage_tags

        ti = context["ti"]
        return lineage_tags(
            dag_id=str(ti.dag_id), run_id=str(ti.run_id), try_number=ti.try_number,
            project_root=config.project_root(), pipeline=self.pipeline, spec_sha256=self.spec_sha256,
            data_sha256=data_sha256,
        )

    def pipeline_run_id(self, context: Context) -> str:
        """Get or create the MLflow run of this DAG run, and link the task to it.

        First, before anything is written: under an executor that may run tasks on other machines, the
        local defaults are refused (:mod:`mlops_provider.deployment`)."""
        from mlops_provider import deployment
        from mlops_provider.tracking.runs import start_pipeline_run

        deployment.check(tracking_uri=self.hook.tracking_uri, tracking_from=self.hook.tracking_uri_source)
        experiment_id = self.hook.get_or_create_experiment(self.experiment)
        run_id = start_pipeline_run(self.hook.client, experiment_id, lineage=self.lineage_tags(context))
        MLflowRunLink.persist(
            context, tracking_uri=self.hook.tracking_uri, experiment_id=experiment_id, run_id=run_id
        )
        return run_id

    def end_pipeline_run(self, run_id: str) -> None:
        """The pipeline is done (promoted, rejected, or a batch/monitoring run finished): ``FINISHED``."""
        from mlops_provider.tracking.runs import end_pipeline_run

        end_pipeline_run(self.hook.client, run_id, "FINISHED")

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
