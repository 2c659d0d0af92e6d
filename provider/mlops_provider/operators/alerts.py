"""The ``notify_drift`` task of a monitor DAG with a ``drift`` alert: the drift details by e-mail, through
Airflow's SMTP notifier (:mod:`mlops_provider.notifications.smtp`); skipped when there is no drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_provider.links.mlflow import DriftReportLink, MLflowRunLink
from mlops_provider.notifications.smtp import drift_message, smtp_notifier
from mlops_provider.operators.base import FailFast

if TYPE_CHECKING:
    from airflow.sdk import Context


class DriftAlertOperator(FailFast, BaseOperator):
    """E-mail the ``alerts`` when ``drift_task_id`` found dataset drift; skipped otherwise.

    :param alerts: plan data of each alert: ``to`` (list), ``conn_id`` (Airflow SMTP connection),
        ``from_email`` (default: the connection's).
    :param pipeline: the pipeline's name, in the subject.
    :param drift_task_id: the task whose XCom holds the drift verdict (and its MLflow run link).
    """

    ui_color = "#ffd6d6"
    operator_extra_links = (MLflowRunLink(),)

    def __init__(
        self,
        *,
        alerts: Sequence[Mapping[str, Any]],
        pipeline: str,
        drift_task_id: str = "detect_drift",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not alerts:
            raise ValueError("DriftAlertOperator needs at least one alert")
        self.alerts = [dict(alert) for alert in alerts]
        self.pipeline = pipeline
        self.drift_task_id = drift_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.compat import AirflowSkipException
        from mlops_provider.exceptions import StageError

        ti = context["ti"]
        verdict = ti.xcom_pull(task_ids=self.drift_task_id)
        if not isinstance(verdict, dict) or "dataset_drift" not in verdict:
            raise StageError(
                f"task {self.task_id!r} needs the drift verdict of task {self.drift_task_id!r}, "
                "which has none"
            )
        if not verdict["dataset_drift"]:
            raise AirflowSkipException("no dataset drift: no alert")
        urls = []
        for link in (MLflowRunLink(), DriftReportLink()):  # what detect_drift linked to
            value = ti.xcom_pull(task_ids=self.drift_task_id, key=link.key)
            urls.append(link.format(value) if isinstance(value, dict) else None)
        MLflowRunLink.copy_from(context, self.drift_task_id)  # this task's "MLflow run" button
        subject, body = drift_message(self.pipeline, verdict, *urls)
        recipients = []
        for alert in self.alerts:
            smtp_notifier(alert, subject=subject, html_content=body).notify(context)
            recipients.extend(alert["to"])
        self.log.info("Sent the drift alert to %s: %s", ", ".join(recipients), subject)
        return {"subject": subject, "to": recipients}
