"""Approval stage: a person approves (or rejects) the promotion in the Airflow UI, seeing the verdict.

:class:`PromotionApprovalOperator` is Airflow's human-in-the-loop ``ApprovalOperator`` (standard provider)
with the pipeline's context: the request's subject names the model version and the alias, its body (markdown)
is the evaluation verdict — every check with the candidate's value, the rule and the champion's value —
with links to the model version and the MLflow run. On Airflow 3.3 the task waits in the
``awaiting_input`` state (no worker slot, no triggerer) until someone answers on the task's "Required
actions" tab or through the REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/
{task_id}/-1/hitlDetails``); no answer within ``response_timeout`` counts as *Reject*.

- **Approve**: the task succeeds and returns who answered, when, and why (the optional ``reason`` field of
  the form); the deploy task (``PromoteModelOperator(approval_task_id=...)``) names that person in the
  promotion's audit record.
- **Reject** (or timeout): the deploy task is skipped, the alias does not move. The pipeline's MLflow run
  is tagged ``mlops.approval=rejected`` (with who and why) and ended ``FINISHED``; the model version is
  tagged ``mlops.approval=rejected`` too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from mlops_provider.exceptions import GateFailedError
from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink
from mlops_provider.operators.base import MLflowStageOperator
from mlops_provider.tracking import tags as T

if TYPE_CHECKING:
    from airflow.sdk import Context

#: who "answered" when nobody did before the timeout
TIMEOUT_RESPONDER = "timeout"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def verdict_markdown(verdict: dict[str, Any] | None) -> str:
    """The evaluation verdict (evaluate's XCom) as a markdown table for the approver."""
    if not isinstance(verdict, dict) or "passed" not in verdict:
        return "_No evaluation verdict was recorded in this DAG run._"
    status = "PASSED" if verdict["passed"] else "REJECTED"
    champion_version = verdict.get("champion_version")
    champion_metrics = verdict.get("champion_metrics") or {}
    lines = [
        f"**Evaluation {status}** on {verdict.get('test_rows', '?')} held-out rows: "
        f"{_cell(str(verdict.get('reason') or ''))}",
        "",
        "| check | metric | candidate | rule | champion | result |",
        "|---|---|---|---|---|---|",
    ]
    checks = verdict.get("checks") or []
    for check in checks:
        bound = check.get("bound")
        rule = f"{check.get('op')} {_fmt(bound)}" if bound is not None else "(none)"
        champion = ""
        if check.get("name") == "champion" and champion_version is not None:
            champion = f"v{champion_version}: {_fmt(champion_metrics.get(check.get('metric')))}"
        result = "PASS" if check.get("passed") else "FAIL"
        row = (check.get("name"), check.get("metric"), _fmt(check.get("value")), rule, champion, result)
        lines.append("| " + " | ".join(_cell(str(c or "")) for c in row) + " |")
    checked = {c.get("metric") for c in checks}
    for metric, value in (verdict.get("metrics") or {}).items():
        if metric not in checked:
            champion = _fmt(champion_metrics.get(metric)) if metric in champion_metrics else ""
            lines.append(f"| (metric) | {_cell(metric)} | {_fmt(value)} |  | {champion} |  |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Decision:
    """What the approval task's XCom says: approved or not, by whom, and why."""

    approved: bool
    by: str
    reason: str

    def describe(self) -> str:
        verb = "approved" if self.approved else "rejected"
        text = f"{verb} by {self.by}"
        return f"{text}: {self.reason}" if self.reason else text


def decision_from_xcom(value: Any) -> Decision | None:
    """Read a HITL approval task's XCom; ``None`` when it is not one (missing, or another kind of task)."""
    if not isinstance(value, dict) or not isinstance(value.get("chosen_options"), list):
        return None
    approved = value["chosen_options"] == [ApprovalOperator.APPROVE]
    user = value.get("responded_by_user")
    by = str(user.get("name") or user.get("id")) if isinstance(user, dict) else TIMEOUT_RESPONDER
    params = value.get("params_input") or {}
    reason = str(params.get("reason") or "").strip() if isinstance(params, dict) else ""
    if not approved and by == TIMEOUT_RESPONDER and not reason:
        reason = "no decision before the approval timeout"
    return Decision(approved=approved, by=by, reason=reason)


def require_approval(value: Any, *, approval_task_id: str, alias: str, version: str) -> Decision:
    """The approval of this DAG run, or refuse (:class:`GateFailedError`, no retries) with why."""

    decision = decision_from_xcom(value)
    if decision is None:
        raise GateFailedError(
            f"refusing to move @{alias} to version {version}: no approval from task {approval_task_id!r} "
            "in this DAG run (a person must approve the promotion first)"
        )
    if not decision.approved:
        raise GateFailedError(f"refusing to move @{alias} to version {version}: {decision.describe()}")
    return decision


class PromotionApprovalOperator(ApprovalOperator, MLflowStageOperator):
    """Wait for a person to approve moving ``@alias`` to the version the register task created.

    The request shows the evaluation verdict of the same DAG run (see the module docstring). *Reject*,
    or no answer within ``response_timeout``, skips the downstream deploy task and records the rejection
    on the pipeline's MLflow run, which it ends; *Approve* lets deploy run.

    Returns (XCom) Airflow's HITL response — ``chosen_options``, ``params_input`` (``reason``),
    ``responded_by_user``, ``responded_at`` — plus ``approved``, ``approver``, ``model_name``, ``version``.

    :param alias: the alias the deploy task moves (named in the request).
    :param response_timeout: how long to wait; then the promotion is rejected. ``None``: wait forever.
    :param assignees: Airflow user ids allowed to answer (the user name with the simple auth manager);
        default: anyone who may edit the DAG's HITL details.
    :param register_task_id: task whose XCom names the version.
    :param evaluate_task_id: task whose XCom holds the verdict.
    """

    template_fields: Sequence[str] = ("alias", "subject", "body")
    ui_color = "#ffe9b3"
    operator_extra_links = (MLflowRunLink(), MLflowModelVersionLink())

    def __init__(
        self,
        *,
        alias: str = "champion",
        response_timeout: dt.timedelta | float | None = None,
        assignees: Sequence[str] | None = None,
        register_task_id: str = "register",
        evaluate_task_id: str = "evaluate",
        subject: str | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow.sdk import Param

        if isinstance(response_timeout, (int, float)):
            response_timeout = dt.timedelta(seconds=response_timeout)
        users = [{"id": user, "name": user} for user in assignees or ()]
        kwargs.setdefault(
            "params",
            {
                "reason": Param(
                    "",
                    type="string",
                    title="Reason",
                    description="Why you approve or reject (recorded in the promotion's audit trail)",
                )
            },
        )
        super().__init__(
            subject=subject or f"Promote to @{alias}?",
            defaults=ApprovalOperator.REJECT,  # what a timeout answers
            response_timeout=response_timeout,
            assigned_users=users or None,  # type: ignore[arg-type]
            **kwargs,
        )
        self.alias = alias
        self.assignees = [user["id"] for user in users]
        self.register_task_id = register_task_id
        self.evaluate_task_id = evaluate_task_id

    def _request(self, context: Context, name: str, version: str, run_id: str) -> None:
        """Subject and body of the request: the model version, the verdict, links, what each answer does."""
        from mlops_provider.links.mlflow import model_version_url, run_url, ui_base_url

        verdict = context["ti"].xcom_pull(task_ids=self.evaluate_task_id)
        ui = ui_base_url(self.hook.tracking_uri)
        experiment_id = self.hook.get_or_create_experiment(self.experiment)
        champion = verdict.get("champion_version") if isinstance(verdict, dict) else None
        holder = f"v{champion}" if champion else "no version yet"
        deadline = ""
        if self.response_timeout:
            when = dt.datetime.now(dt.timezone.utc) + self.response_timeout
            deadline = f" No answer by {when:%Y-%m-%d %H:%M} UTC counts as **Reject**."
        self.subject = f"Promote {name} v{version} to @{self.alias}?"
        self.body = "\n".join(
            [
                f"Pipeline `{self.pipeline}` trained **{name} v{version}**. **Approve** moves "
                f"`@{self.alias}` from {holder} to v{version}; **Reject** leaves it where it is.{deadline}",
                "",
                verdict_markdown(verdict),
                "",
                f"[Model version {name} v{version}]({model_version_url(ui, name, version)}) · "
                f"[MLflow run]({run_url(ui, experiment_id, run_id)})",
            ]
        )

    def execute(self, context: Context) -> Any:
        registered = self.upstream(context, self.register_task_id, "model_name", "version")
        name, version = registered["model_name"], str(registered["version"])
        run_id = self.pipeline_run_id(context)
        self.persist_model_version_link(context, name=name, version=version)
        self._request(context, name, version, run_id)
        self.hook.client.set_tag(run_id, T.APPROVAL, "pending")
        self.log.info("Asking for approval: %s", self.subject)
        for line in (self.body or "").splitlines():
            self.log.info("%s", line)
        return super().execute(context)  # writes the request and waits (awaiting_input)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        registered = self.upstream(context, self.register_task_id, "model_name", "version")
        name, version = registered["model_name"], str(registered["version"])
        decision = decision_from_xcom(event)
        if decision is not None and set(event["chosen_options"]) <= set(self.options):
            # recorded first: on Reject, the base class skips deploy by raising Airflow's skip signal
            self._record(context, decision, name, version)
        response = super().execute_complete(context=context, event=event)
        assert decision is not None  # an approval (a rejection never gets here)
        return {
            **response,
            "approved": decision.approved,
            "approver": decision.by,
            "reason": decision.reason,
            "model_name": name,
            "version": version,
        }

    def _record(self, context: Context, decision: Decision, name: str, version: str) -> None:
        from mlflow.entities import RunTag

        client = self.hook.client
        run_id = self.pipeline_run_id(context)
        status = "approved" if decision.approved else "rejected"
        client.log_batch(
            run_id,
            tags=[
                RunTag(T.APPROVAL, status),
                RunTag(T.APPROVAL_BY, decision.by),
                RunTag(T.APPROVAL_REASON, decision.reason[:4000]),
            ],
        )
        client.set_model_version_tag(name, version, T.APPROVAL, status)
        client.set_model_version_tag(name, version, T.APPROVAL_BY, decision.by)
        if decision.approved:
            self.log.info("%s v%s to @%s: %s", name, version, self.alias, decision.describe())
        else:
            self.log.info(
                "%s v%s stays off @%s: %s. Ending the pipeline run.",
                name,
                version,
                self.alias,
                decision.describe(),
            )
            self.end_pipeline_run(run_id)
