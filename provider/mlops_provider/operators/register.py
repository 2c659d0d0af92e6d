"""Register stage: a model version in the MLflow Model Registry, with aliases and lineage tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink
from mlops_provider.operators.base import MLflowStageOperator
from mlops_provider.tracking import tags as T
from mlops_provider.tracking.models import model_uri

if TYPE_CHECKING:
    from airflow.sdk import Context


class RegisterModelOperator(MLflowStageOperator):
    """Register the trained model as a new version of ``model_name``; set ``aliases`` and ``tags``.

    The version carries the pipeline run's lineage tags (DAG id, run id, try, spec/git/data hashes) and
    the evaluation verdict with its metrics. Idempotent: a retry finds the version made from the same
    run and model instead of creating another one.

    :param aliases: aliases moved to the new version (e.g. ``challenger``); the champion alias is the
        deploy stage's business.
    :param tags: extra tags on the version.
    :param train_task_id: task whose XCom names the model.
    :param evaluate_task_id: task whose XCom holds the verdict (recorded on the version when present).
    :param ingest_task_id: task whose XCom holds the data hash.
    """

    template_fields: Sequence[str] = ("aliases", "tags")
    ui_color = "#e6e0f8"
    operator_extra_links = (MLflowRunLink(), MLflowModelVersionLink())

    def __init__(
        self,
        *,
        aliases: Sequence[str] | None = None,
        tags: dict[str, str] | None = None,
        train_task_id: str = "train",
        evaluate_task_id: str = "evaluate",
        ingest_task_id: str = "ingest",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aliases = list(aliases) if aliases is not None else ["challenger"]
        self.tags = dict(tags or {})
        self.train_task_id = train_task_id
        self.evaluate_task_id = evaluate_task_id
        self.ingest_task_id = ingest_task_id

    def _version_tags(self, context: Context) -> dict[str, str]:
        ti = context["ti"]
        ingest = ti.xcom_pull(task_ids=self.ingest_task_id)
        verdict = ti.xcom_pull(task_ids=self.evaluate_task_id)
        data_sha = ingest.get("data_sha256") if isinstance(ingest, dict) else None
        tags = {**self.tags, **self.lineage_tags(context, data_sha256=data_sha)}
        if isinstance(verdict, dict) and "passed" in verdict:
            tags[T.VERDICT] = "passed" if verdict["passed"] else "rejected"
            for metric, value in (verdict.get("metrics") or {}).items():
                tags[f"mlops.test_{metric}"] = f"{value:.6g}"
        return {k: str(v) for k, v in tags.items()}

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.stages.register import register

        train = self.upstream(context, self.train_task_id, "model_uri")
        run_id = self.pipeline_run_id(context)
        ti = context["ti"]
        tags = self._version_tags(context)
        with self.hook.activate():  # the registry resolves a models:/m-... source through the fluent URIs
            version, created = register(
                self.hook.client,
                model_name=self.model_name,
                model_uri=train["model_uri"],
                run_id=train.get("mlflow_run_id") or run_id,
                aliases=self.aliases,
                tags=tags,
                description=f"Trained by Airflow DAG {ti.dag_id}, run {ti.run_id}.",
            )
        number = str(version.version)
        self.log.info(
            "%s version %s of %s from %s%s",
            "Registered" if created else "Found (retry) already registered",
            number,
            self.model_name,
            train["model_uri"],
            f"; aliases: {', '.join('@' + a for a in self.aliases)}" if self.aliases else "",
        )
        self.persist_model_version_link(context, name=self.model_name, version=number)
        uri = model_uri(self.model_name, number)
        return {"model_name": self.model_name, "version": number, "model_uri": uri}
