"""Validate stage: Great Expectations on the ingested snapshot; a failure names each broken expectation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.links.mlflow import MLflowRunLink, ValidationReportLink
from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class ValidateDatasetOperator(MLflowStageOperator):
    """Check the snapshot written by the ingest task against expectations (GX 1.x, ephemeral context).

    The result JSON and an HTML report are logged to the pipeline's MLflow run (``validation/``).

    :param expectations: ``[{expectation_name: kwargs}, ...]``, e.g.
        ``[{"expect_column_values_to_not_be_null": {"column": "age"}}]``.
    :param suite: a GX expectation suite JSON file under the project root (added to ``expectations``).
    :param on_failure: ``fail`` — the task fails at once (no retries: the data will not improve by
        retrying) with a message naming each failed expectation, column and observed value;
        ``warn`` — record the failure and continue.
    :param ingest_task_id: task whose result names the snapshot.
    """

    template_fields: Sequence[str] = ("suite",)
    ui_color = "#fdf2d0"
    operator_extra_links = (MLflowRunLink(), ValidationReportLink())

    def __init__(
        self,
        *,
        expectations: Sequence[Mapping[str, Mapping[str, Any] | None]] = (),
        suite: str | None = None,
        on_failure: str = "fail",
        ingest_task_id: str = "ingest",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_failure not in ("fail", "warn"):
            raise ValueError(f"on_failure must be fail or warn, not {on_failure!r}")
        self.expectations = [dict(e) for e in expectations]
        self.suite = suite
        self.on_failure = on_failure
        self.ingest_task_id = ingest_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.stages.validate import REPORT_ARTIFACT, validate

        ingested = self.upstream(context, self.ingest_task_id, "snapshot_uri")
        run_id = self.pipeline_run_id(context)
        # linked before validating: a failed validation raises, and its report is the one to read
        ValidationReportLink.persist_for(self, context, run_id=run_id, path=REPORT_ARTIFACT)
        result = validate(  # a DataValidationError fails without retries: the data will not improve
            ingested["snapshot_uri"],
            expectations=self.expectations,
            suite=self.suite,
            on_failure=self.on_failure,
            client=self.hook.client,
            mlflow_run_id=run_id,
            title=f"Data validation of {self.pipeline} ({context['ti'].run_id})",
        )
        if result["success"]:
            self.log.info("Data validation passed: %s", result["summary"])
        else:
            self.log.warning("Data validation failed (on_failure=warn, continuing): %s", result["summary"])
        return result
