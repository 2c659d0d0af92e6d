"""Monitor stage: data drift of the live data against the champion's training data, and the retrain signal.

The monitor DAG of a spec is ``detect_drift >> request_retrain``: :class:`DetectDriftOperator` measures and
records; :class:`RequestRetrainOperator` carries the retrain asset as its outlet and is *skipped* when
there is no dataset drift, so the asset event (which schedules the training DAG) exists only on drift,
and the grid shows at a glance which monitor runs asked for a retrain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_provider.links.mlflow import DriftReportLink, MLflowModelVersionLink, MLflowRunLink
from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class DetectDriftOperator(MLflowStageOperator):
    """Compare ``current`` with the training data of the model version holding ``@reference_alias``.

    Evidently tests each column once (``ValueDrift``; method and threshold configurable) and summarises
    data quality; when ``current`` also holds the target, the ``@reference_alias`` model is scored on it.
    Everything is recorded as a monitoring run in the pipeline's MLflow experiment (tag
    ``mlops.run_type=monitor``, linked to the model version by tags; HTML report and Evidently JSON as
    artifacts). Fails without retrying when no version holds the alias yet.

    Returns (XCom) ``{"dataset_drift", "drift_share", "drift_share_threshold", "number_of_columns",
    "drifted_columns", "report_uri", "mlflow_run_id", "model_name", "model_version"}``.

    :param current: the data to check: a path under the project root or ``s3://bucket/key``, CSV or
        parquet. Templated (e.g. ``data/live/{{ ds }}.parquet``).
    :param current_conn_id: Airflow connection (type aws) for an ``s3://`` current.
    :param file_format: ``csv`` or ``parquet``; default: from the suffix.
    :param target: the label column; when ``current`` has it, model performance is reported too.
    :param reference_alias: the alias whose model version (and training data) is the reference.
    :param drift_share: dataset drift when at least this share of the columns drifted.
    :param stattest: Evidently drift method for every column (``ks``, ``psi``, ``wasserstein``, ...);
        default: Evidently's choice per column type and size.
    :param stattest_threshold: threshold of that method; default: the method's own.
    """

    template_fields: Sequence[str] = ("current", "current_conn_id")
    ui_color = "#fff4d6"
    operator_extra_links = (MLflowRunLink(), MLflowModelVersionLink(), DriftReportLink())

    def __init__(
        self,
        *,
        current: str,
        current_conn_id: str | None = None,
        file_format: str | None = None,
        target: str | None = None,
        reference_alias: str = "champion",
        drift_share: float = 0.5,
        stattest: str | None = None,
        stattest_threshold: float | None = None,
        positive_class: str | int | bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < drift_share <= 1:
            raise ValueError(f"drift_share must be in (0, 1], not {drift_share}")
        if file_format not in (None, "csv", "parquet"):
            raise ValueError(f"file_format must be csv or parquet, not {file_format!r}")
        self.current = current
        self.current_conn_id = current_conn_id
        self.file_format = file_format
        self.target = target
        self.reference_alias = reference_alias
        self.drift_share = drift_share
        self.stattest = stattest
        self.stattest_threshold = stattest_threshold
        self.positive_class = positive_class

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.stages import monitor
        from mlops_provider.storage import workspace
        from mlops_provider.storage.tables import TableColumns
        from mlops_provider.tracking.models import input_columns, load_model

        client = self.hook.client
        # The monitoring run; the base operator marks it FAILED if this task fails for good.
        run_id = self.pipeline_run_id(context)
        reference = monitor.find_reference(client, self.model_name, self.reference_alias)
        model = reference.model
        self.persist_model_version_link(context, name=model.name, version=model.version)
        current_uri = monitor.current_uri(self.current)
        self.log.info("Reference: %s, trained on %s", model, reference.data_uri)

        with self.hook.activate():
            features = input_columns(model.uri)  # drift of what the model reads, not of ids or free text
        columns = [c for c in features if c != self.target] if features else None

        def load_reference_model() -> Any:
            with self.hook.activate():
                return load_model(model.uri).model

        result = monitor.detect_drift(
            TableColumns(current_uri, self.current_conn_id, self.file_format),
            TableColumns(reference.data_uri, workspace.workspace_conn_id()),
            columns=columns,
            target=self.target,
            drift_share=self.drift_share,
            stattest=self.stattest,
            stattest_threshold=self.stattest_threshold,
            ml_task=self.ml_task,
            load_model=load_reference_model,
            positive_class=self.positive_class,
            title=f"{model}: drift of {current_uri}",
        )
        self.log.info("%s", result.summary())
        for column in result.columns:
            self.log.info("  %-30s %-4s %-32s score %.4g (threshold %.3g)%s", column.column,
                          column.column_type, column.method, column.score, column.threshold,
                          "  DRIFT" if column.drifted else "")
        if result.performance:
            self.log.info("Model performance on the current data: %s",
                          ", ".join(f"{k}={v:.4g}" for k, v in result.performance.items()))

        report_uri = monitor.log_monitoring_run(
            client, run_id, result, reference,
            current=current_uri, stattest=self.stattest, stattest_threshold=self.stattest_threshold,
        )
        DriftReportLink.persist_for(self, context, run_id=run_id, path=monitor.REPORT_ARTIFACT)
        self.end_pipeline_run(run_id)
        self.log.info("Report: %s", report_uri)
        return {
            **result.verdict(),
            "report_uri": report_uri,
            "mlflow_run_id": run_id,
            "model_name": model.name,
            "model_version": model.version,
        }


class RequestRetrainOperator(BaseOperator):
    """Emit the retrain asset (this task's outlets) when ``drift_task_id`` found dataset drift; else skip.

    A skipped task emits no asset event, so the training DAG, scheduled on that asset, runs only after
    drift. The event's ``extra`` says why (drift share, drifted columns, the monitoring run), which the
    triggered training run can read from ``triggering_asset_events``.

    :param drift_task_id: the task whose XCom holds the drift verdict.
    """

    ui_color = "#ffe0cc"
    operator_extra_links = (MLflowRunLink(),)

    def __init__(self, *, drift_task_id: str = "detect_drift", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drift_task_id = drift_task_id

    def execute(self, context: Context) -> None:
        from mlops_provider.compat import AirflowSkipException
        from mlops_provider.exceptions import StageError

        MLflowRunLink.copy_from(context, self.drift_task_id)  # the monitoring run that decided
        verdict = context["ti"].xcom_pull(task_ids=self.drift_task_id)
        if not isinstance(verdict, dict) or "dataset_drift" not in verdict:
            raise StageError(f"task {self.task_id!r} needs the drift verdict of task {self.drift_task_id!r}, "
                             "which has none")
        share = float(verdict.get("drift_share") or 0.0)
        threshold = float(verdict.get("drift_share_threshold") or 0.0)
        if not verdict["dataset_drift"]:
            raise AirflowSkipException(
                f"no dataset drift ({share:.0%} of columns drifted, retrain at >= {threshold:.0%}); "
                "not requesting a retrain"
            )
        extra = {key: verdict.get(key) for key in (
            "drift_share", "drift_share_threshold", "drifted_columns", "model_name", "model_version",
            "mlflow_run_id", "report_uri",
        )}
        if not self.outlets:
            self.log.warning("Dataset drift, but task %r has no outlets: no asset to emit", self.task_id)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra
        assets = ", ".join(getattr(o, "uri", str(o)) for o in self.outlets)
        self.log.info("Dataset drift (%.0f%% of columns, threshold %.0f%%): requesting a retrain via %s",
                      100 * share, 100 * threshold, assets)
