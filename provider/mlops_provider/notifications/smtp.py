"""Alerts (``monitor.alerts``): e-mails through Airflow's SMTP notifier (``apache-airflow-providers-smtp``).

Two events, chosen per alert with ``on``:

* ``failure`` — every task of the monitor DAG gets an :class:`~airflow.providers.smtp.notifications.smtp.
  SmtpNotifier` as ``on_failure_callback`` (:func:`failure_notifiers`): when a task fails for good (no retry
  left), the recipients get the pipeline, task, DAG run, try, error and a link to the task's log.
* ``drift`` — the ``notify_drift`` task (:class:`~mlops_provider.operators.alerts.DriftAlertOperator`)
  after ``detect_drift`` sends the drift
  share, the drifted columns and links to the monitoring run and its Evidently report; it is *skipped*
  when there is no dataset drift, so the grid shows which runs alerted.

Host, port, credentials and TLS come from the Airflow SMTP connection (``conn_id``), never from the spec.
Building the notifiers imports only the SMTP provider (``smtplib``, ``email``): nothing heavy at parse time.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk.bases.notifier import BaseNotifier


#: Jinja, rendered by the notifier with the failed task's context
FAILURE_SUBJECT = "[mlops] {pipeline}: task {{{{ ti.task_id }}}} of {{{{ dag.dag_id }}}} failed"
FAILURE_HTML = (
    "<p>Pipeline <b>{pipeline}</b>: task <b>{{{{ ti.task_id }}}}</b> of DAG <b>{{{{ dag.dag_id }}}}</b> "
    "failed (run <code>{{{{ run_id }}}}</code>, try {{{{ ti.try_number }}}}).</p>"
    "<p>Error:</p><pre>{{{{ exception | string | e }}}}</pre>"
    '<p><a href="{{{{ ti.log_url }}}}">Task log</a></p>'
)


def smtp_notifier(alert: Mapping[str, Any], *, subject: str, html_content: str) -> BaseNotifier:
    """Airflow's SMTP notifier for one alert (no connection is looked up until it sends)."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=list(alert["to"]),
        from_email=alert.get("from_email"),
        smtp_conn_id=alert.get("conn_id") or "smtp_default",
        subject=subject,
        html_content=html_content,
    )


def failure_notifiers(alerts: Sequence[Mapping[str, Any]]) -> list[BaseNotifier]:
    """``on_failure_callback`` notifiers, one per alert (plan data, ``pipeline`` names the pipeline)."""
    notifiers = []
    for alert in alerts:
        pipeline = str(alert.get("pipeline") or "")
        notifiers.append(
            smtp_notifier(
                alert,
                subject=FAILURE_SUBJECT.format(pipeline=pipeline),
                html_content=FAILURE_HTML.format(pipeline=html.escape(pipeline)),
            )
        )
    return notifiers


def drift_message(
    pipeline: str, verdict: Mapping[str, Any], run_url: str | None, report_url: str | None = None
) -> tuple[str, str]:
    """Subject and HTML body of a drift alert, from ``detect_drift``'s XCom."""
    share = float(verdict.get("drift_share") or 0.0)
    threshold = float(verdict.get("drift_share_threshold") or 0.0)
    columns = [str(c) for c in verdict.get("drifted_columns") or []]
    total = verdict.get("number_of_columns")
    model = f"{verdict.get('model_name')} v{verdict.get('model_version')}"
    subject = f"[mlops] {pipeline}: data drift in {len(columns)} column(s) ({share:.0%}) against {model}"
    items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in columns)
    report = verdict.get("report_uri")
    links = []
    if run_url:
        links.append(f'<a href="{html.escape(run_url, quote=True)}">MLflow monitoring run</a>')
    if report_url:
        links.append(f'<a href="{html.escape(report_url, quote=True)}">Evidently drift report</a>')
    if report:
        links.append(f"Report artifact: <code>{html.escape(str(report))}</code>")
    body = (
        f"<p>Pipeline <b>{html.escape(pipeline)}</b>: dataset drift against the training data of "
        f"<b>{html.escape(model)}</b>.</p>"
        f"<p>Drift share: <b>{share:.1%}</b> of {total} column(s) drifted "
        f"(dataset drift at &ge; {threshold:.0%}).</p>"
        f"<p>Drifted columns ({len(columns)}):</p><ul>{items}</ul>"
        f"<p>{'<br>'.join(links)}</p>"
    )
    return subject, body
