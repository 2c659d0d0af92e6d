"""Deploy stage: promote the registered version by moving an alias, only when every gate passed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import GateFailedError
from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink
from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def _triggered_by(context: Context) -> str:
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    run_type = getattr(dag_run, "run_type", None)
    who = user or (f"{run_type}" if run_type else "airflow")
    return str(getattr(who, "value", who))


class PromoteModelOperator(MLflowStageOperator):
    """Move ``@alias`` (default ``champion``) to the version the register task created.

    Refuses (fails without retries) unless the evaluate task of the same DAG run recorded a passed
    verdict — whatever the trigger rules of a hand-written DAG — and unless ``@alias`` still points at the
    version evaluate compared the candidate with (compare-and-swap: a person, a rollback or another run
    that moved it in between makes deploy refuse, changing nothing). The previous holder is recorded on the
    new version (tag ``mlops.previous_<alias>``) before the alias moves, with an audit record (who,
    which DAG run, from, to, why) on the registered model and the pipeline run, so
    :func:`mlops_provider.stages.deploy.rollback` can undo it. Ends the pipeline's MLflow run FINISHED.

    :param alias: the alias to move.
    :param register_task_id: task whose XCom names the version.
    :param evaluate_task_id: task whose XCom holds the verdict.
    :param targets: ``deploy.targets`` of the spec as JSON-able mappings (``model_dump(mode="json")``):
        the version is staged and health-checked on every one before the alias moves, and they switch to
        it after (:func:`mlops_provider.serving.follow.follow`). A failed check fails the task with the
        alias and the live serving untouched (a retry starts over); the XCom's ``serving`` holds each
        target's live address.
    :param target_column: the label column, left out of the health-check rows of a model without a
        signature.
    :param approval_task_id: a :class:`~mlops_provider.operators.approval.PromotionApprovalOperator`
        (human-in-the-loop) task; when set, refuses unless its XCom shows an approval, and the audit
        record names the approver (and their reason) instead of the DAG run's trigger.
    """

    template_fields: Sequence[str] = ("alias",)
    ui_color = "#d6ecff"
    operator_extra_links = (MLflowRunLink(), MLflowModelVersionLink())

    def __init__(
        self,
        *,
        alias: str = "champion",
        register_task_id: str = "register",
        evaluate_task_id: str = "evaluate",
        approval_task_id: str | None = None,
        targets: Sequence[Mapping[str, Any]] | None = None,
        target_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.targets = [dict(t) for t in targets or ()]
        self.target_column = target_column
        self.approval_task_id = approval_task_id
        self.alias = alias
        self.register_task_id = register_task_id
        self.evaluate_task_id = evaluate_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.serving.follow import follow
        from mlops_provider.stages.deploy import promote, require_passed, require_unchanged

        registered = self.upstream(context, self.register_task_id, "model_name", "version")
        verdict = context["ti"].xcom_pull(task_ids=self.evaluate_task_id)
        run_id = self.pipeline_run_id(context)
        ti = context["ti"]
        name, version = registered["model_name"], str(registered["version"])
        promoted_by = _triggered_by(context)
        if self.approval_task_id:
            from mlops_provider.operators.approval import require_approval

            approval = require_approval(
                ti.xcom_pull(task_ids=self.approval_task_id),
                approval_task_id=self.approval_task_id,
                alias=self.alias,
                version=version,
            )
            promoted_by = approval.by
            if isinstance(verdict, dict) and verdict.get("passed") is True:
                why = verdict.get("reason") or "every gate passed"
                verdict = {**verdict, "reason": f"{why}; {approval.describe()}"}

        def move_alias(serving: list[str]) -> Any:
            return promote(
                self.hook.client,
                model_name=name,
                version=version,
                alias=self.alias,
                verdict=verdict,
                promoted_by=promoted_by,
                dag_id=ti.dag_id,
                dag_run_id=ti.run_id,
                mlflow_run_id=run_id,
                evaluate_task_id=self.evaluate_task_id,
                serving=serving,
            )

        try:
            # refuse before any serving target is touched
            require_passed(verdict, alias=self.alias, version=version, evaluate_task_id=self.evaluate_task_id)
            require_unchanged(self.hook.client, verdict, model_name=name, alias=self.alias, version=version)
            followed = follow(
                self.hook,
                model_name=name,
                version=version,
                pipeline=self.pipeline,
                targets=self.targets,
                move_alias=move_alias,
                log=self.log,
                target_column=self.target_column,
            )
        except GateFailedError as exc:
            from mlflow.entities import RunTag

            from mlops_provider.tracking import tags as T

            self.hook.client.log_batch(
                run_id, tags=[RunTag(T.VERDICT, "rejected"), RunTag(T.VERDICT_REASON, str(exc)[:4000])]
            )
            raise
        promotion = followed.result
        self.persist_model_version_link(context, name=name, version=version)
        previous = f"v{promotion.previous_version}" if promotion.previous_version else "none (first champion)"
        self.log.info("%s@%s: %s -> v%s. Why: %s", name, self.alias, previous, version, promotion.reason)
        for target, endpoint in followed.endpoints.items():
            self.log.info("%s serves v%s at %s", target, version, endpoint)
        self.end_pipeline_run(run_id)
        result: dict[str, Any] = {
            "alias": self.alias,
            "version": version,
            "previous_version": promotion.previous_version,
            "model_name": name,
        }
        if followed.endpoints:
            result["serving"] = followed.endpoints
        return result
