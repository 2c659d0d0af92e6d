"""What ``deploy.approval`` and ``monitor.alerts`` add to the plan and to the rendered DAGs (no run: the
integration tests ``test_approval.py`` / ``test_alerts.py`` run them against Airflow, MLflow and SMTP)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mlops_provider.plan.build import build_plan
from mlops_provider.render.dag import render_dag
from mlops_provider.spec.load import load_spec

SPEC = """\
version: 1
name: churn
task: classification
mlflow: {experiment: churn, model: churn_model}
ingest: {source: data/train.csv, target: churned}
train: {estimator: sklearn.ensemble.RandomForestClassifier}
deploy:
  alias: production
"""
MONITOR = """\
monitor:
  alerts:
    - {type: smtp, to: [ops@example.com], on: [failure], conn_id: smtp_ops}
    - {type: smtp, to: [ml@example.com, lead@example.com]}
"""


def _plan(root: Path, text: str):  # type: ignore[no-untyped-def]
    path = root / "dags" / "pipelines" / "churn.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    loaded = load_spec(
        path, project_root=root, allowed_modules=None, display_path="dags/pipelines/churn.yaml"
    )
    assert loaded.ok and loaded.spec is not None, loaded.issues
    return build_plan(loaded.spec, source=loaded.display_path, text=loaded.text, spec_sha256=loaded.sha256)


def _tasks(dag_plan) -> dict[str, tuple[str, ...]]:  # type: ignore[no-untyped-def]
    return {t.task_id: t.upstream for t in dag_plan.tasks}


def test_no_approval_no_approve_task(tmp_path: Path) -> None:
    for text in (SPEC, SPEC + "  approval: none\n", SPEC + "  approval: {required: false}\n"):
        training = _plan(tmp_path, text).dags[0]
        assert _tasks(training)["deploy"] == ("register",) and "approve" not in _tasks(training)
        assert "approval_task_id" not in training.tasks[-1].kwargs


def test_approval_sits_between_register_and_deploy(tmp_path: Path) -> None:
    text = SPEC + "  approval: {timeout: 4h, assignees: [alice, bob]}\n"
    training = _plan(tmp_path, text).dags[0]
    assert _tasks(training)["approve"] == ("register",) and _tasks(training)["deploy"] == ("approve",)
    approve = next(t for t in training.tasks if t.task_id == "approve")
    assert approve.kwargs["response_timeout"] == 4 * 3600 and approve.kwargs["assignees"] == ["alice", "bob"]
    assert approve.kwargs["alias"] == "production"
    assert "alice or bob" in approve.doc and "4h" in approve.doc
    deploy = next(t for t in training.tasks if t.task_id == "deploy")
    assert deploy.kwargs["approval_task_id"] == "approve"

    dag = render_dag(training)
    task = dag.task_dict["approve"]
    assert type(task).__name__ == "PromotionApprovalOperator"
    assert task.response_timeout == dt.timedelta(hours=4) and task.defaults == ["Reject"]
    assert task.assigned_users == [{"id": "alice", "name": "alice"}, {"id": "bob", "name": "bob"}]
    assert dag.task_dict["deploy"].approval_task_id == "approve"


def test_short_form_required_waits_a_day_for_anyone(tmp_path: Path) -> None:
    training = _plan(tmp_path, SPEC + "  approval: required\n").dags[0]
    approve = render_dag(training).task_dict["approve"]
    assert approve.response_timeout == dt.timedelta(days=1) and approve.assigned_users is None


def test_alerts_add_notify_drift_and_failure_notifiers(tmp_path: Path) -> None:
    monitor = _plan(tmp_path, SPEC + MONITOR).dags[1]
    assert _tasks(monitor) == {"detect_drift": (), "notify_drift": ("detect_drift",)}
    notify = next(t for t in monitor.tasks if t.task_id == "notify_drift")
    # `on` defaults to both events: only the second alert is about drift
    assert notify.kwargs["alerts"] == [
        {"to": ["ml@example.com", "lead@example.com"], "conn_id": "smtp_default", "from_email": None}
    ]
    assert [a["to"] for a in monitor.failure_alerts] == [
        ["ops@example.com"],
        ["ml@example.com", "lead@example.com"],
    ]
    assert [a["conn_id"] for a in monitor.failure_alerts] == ["smtp_ops", "smtp_default"]

    dag = render_dag(monitor)
    for task in dag.tasks:
        notifiers = [c for c in task.on_failure_callback if type(c).__name__ == "SmtpNotifier"]
        assert [(n.to, n.smtp_conn_id) for n in notifiers] == [
            (["ops@example.com"], "smtp_ops"),
            (["ml@example.com", "lead@example.com"], "smtp_default"),
        ]
        assert "churn: task {{ ti.task_id }}" in notifiers[0].subject


def test_failure_only_alerts_add_no_drift_task(tmp_path: Path) -> None:
    text = SPEC + "monitor:\n  alerts: [{type: smtp, to: [ops@example.com], on: [failure]}]\n"
    monitor = _plan(tmp_path, text).dags[1]
    assert list(_tasks(monitor)) == ["detect_drift"] and len(monitor.failure_alerts) == 1
    assert not _plan(tmp_path, SPEC + "monitor: {}\n").dags[1].failure_alerts
