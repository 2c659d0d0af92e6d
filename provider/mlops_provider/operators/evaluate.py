"""Evaluate stage: metrics on the held-out test set, thresholds, and the champion comparison."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mlops_provider.exceptions import GateFailedError
from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class EvaluateModelOperator(MLflowStageOperator):
    """Score the trained model on the held-out test set and decide whether it may be promoted.

    The checks: every ``thresholds`` bound, and — unless ``champion_metric`` is ``None`` — the candidate
    against the version currently holding ``@<champion_alias>``, scored on the *same* test set; it must
    be better by at least ``champion_min_delta`` (in the metric's direction, see
    ``mlops_provider.spec.schema.METRICS``). A registered model without a champion passes that check.

    The verdict goes to the pipeline's MLflow run (metrics ``test_<metric>`` and ``champion_<metric>``,
    artifact ``evaluation/verdict.json``, tag ``mlops.verdict``), to the task log as a table, and to XCom.

    A rejected candidate is an expected outcome, not a failure. ``on_rejection``:

    * ``"skip"`` (default): the task succeeds, says in one line why the candidate lost and where the
      alias stays, ends the pipeline's MLflow run ``FINISHED`` and skips every downstream task (register
      and deploy), as a ShortCircuitOperator does;
    * ``"fail"``: the task fails without retries (:class:`~mlops_provider.exceptions.GateFailedError`);
    * ``"continue"``: the task succeeds and downstream tasks run; deploy refuses a rejected verdict.

    :param metrics: metrics to compute (classification: accuracy precision recall f1 roc_auc log_loss,
        macro-averaged for more than two classes; regression: rmse mae r2 mape).
    :param thresholds: ``{metric: {"min": x, "max": y}}``.
    :param champion_metric: the metric of the champion comparison; ``None`` disables it.
    :param champion_min_delta: how much better than the champion the candidate must be.
    :param champion_alias: the alias whose holder is the champion (the deploy stage's alias).
    :param positive_class: binary classification: the label precision, recall, f1 and roc_auc are about
        (default: the second of the two labels, sorted; the verdict says which).
    :param on_rejection: ``"skip"`` (default), ``"fail"`` or ``"continue"``, see above.
    :param ingest_task_id: task whose XCom names the test set.
    :param train_task_id: task whose XCom names the model.
    """

    template_fields: Sequence[str] = ("champion_alias",)
    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        metrics: Sequence[str] | None = None,
        thresholds: dict[str, dict[str, float]] | None = None,
        champion_metric: str | None = None,
        champion_min_delta: float = 0.0,
        champion_alias: str = "champion",
        positive_class: str | int | bool | None = None,
        on_rejection: Literal["skip", "fail", "continue"] = "skip",
        ingest_task_id: str = "ingest",
        train_task_id: str = "train",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from mlops_provider.spec.schema import DEFAULT_METRICS, METRICS

        self.metrics = list(metrics) if metrics else list(DEFAULT_METRICS[self.ml_task])
        self.thresholds = {m: dict(b) for m, b in (thresholds or {}).items()}
        self.champion_metric = champion_metric
        self.champion_min_delta = float(champion_min_delta)
        self.champion_alias = champion_alias
        self.positive_class = positive_class
        if on_rejection not in ("skip", "fail", "continue"):
            raise ValueError(f"on_rejection must be skip, fail or continue, not {on_rejection!r}")
        self.on_rejection = on_rejection
        self.ingest_task_id = ingest_task_id
        self.train_task_id = train_task_id
        known = METRICS[self.ml_task]
        named = [*self.metrics, *self.thresholds, *([champion_metric] if champion_metric else [])]
        unknown = [m for m in named if m not in known]
        if unknown:
            raise ValueError(
                f"unknown {self.ml_task} metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        if self.champion_min_delta < 0:
            raise ValueError("champion_min_delta cannot be negative")

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.stages import evaluate as stage
        from mlops_provider.storage import workspace

        ingest = self.upstream(context, self.ingest_task_id, "test_uri", "target")
        train = self.upstream(context, self.train_task_id, "model_uri")
        run_id = self.pipeline_run_id(context)
        test = workspace.read_table(ingest["test_uri"], workspace.workspace_conn_id(), "parquet")
        self.log.info("Scoring %s on %d test rows (%s)", train["model_uri"], len(test), ingest["test_uri"])
        with self.hook.activate():
            verdict = stage.evaluate(
                self.hook.client,
                model_uri=train["model_uri"],
                test=test,
                target=ingest["target"],
                features=train.get("features") or ingest.get("features"),
                task=self.ml_task,
                metrics=self.metrics,
                model_name=self.model_name,
                thresholds=self.thresholds,
                champion_metric=self.champion_metric,
                champion_alias=self.champion_alias,
                champion_min_delta=self.champion_min_delta,
                run_id=train.get("mlflow_run_id") or run_id,
                positive_class=self.positive_class,
            )
        verdict.cached_from = train.get("cache_source_run_id")
        stage.record(self.hook.client, run_id, verdict)
        for line in verdict.table().splitlines():
            self.log.info("%s", line)
        result = verdict.as_dict()
        if verdict.passed or self.on_rejection == "continue":
            return result
        stays = (f"@{self.champion_alias} stays on v{verdict.champion_version}" if verdict.champion_version
                 else f"no version holds @{self.champion_alias} yet")
        message = (f"{self.model_name} rejected by the evaluation gate: {verdict.reason}. "
                   f"Not registered; {stays}.")
        if self.on_rejection == "fail":
            raise GateFailedError(message)
        from mlops_provider.compat import DownstreamTasksSkipped

        self.log.warning("%s", message)
        self.end_pipeline_run(run_id)  # nothing downstream will: the pipeline is done
        context["ti"].xcom_push(key="return_value", value=result)
        downstream = sorted(self.downstream_task_ids)
        if downstream:
            self.log.info("Skipping %s: the candidate was rejected.", ", ".join(downstream))
            raise DownstreamTasksSkipped(tasks=downstream)
        return result
