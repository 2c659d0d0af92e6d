"""Spec → plan, with no Airflow imported here.

Two tables drive it: the DAG kinds (:data:`mlops_provider.spec.kinds.DAG_KINDS`: which DAGs a spec has,
each with its builder below) and the stages (:data:`STAGES`: stage name → a small builder of one
:class:`TaskPlan`, or ``None`` when the spec does not use that stage). A DAG builder lists its stages in
order; a stage without an explicit upstream runs after the one before it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from mlops_provider.plan.model import DagPlan, PipelinePlan, TaskPlan
from mlops_provider.spec.kinds import DAG_KINDS, DagKind, kind_named
from mlops_provider.spec.schema import PipelineSpec
from mlops_provider.spec.secrets import redact

OPERATORS = "mlops_provider.operators"
#: the training DAG's stages in order (``tune``: with ``train.tune``; ``approve``: with ``deploy.approval``)
TRAINING_STAGES = ("ingest", "validate", "tune", "train", "evaluate", "register", "approve", "deploy")
MONITOR_STAGES = ("monitor", "request_retrain", "notify_drift")
SERVE_STAGES = ("served_version", "wait_for_alias", "sync_serving")

StageBuilder = Callable[[PipelineSpec, dict[str, Any]], "TaskPlan | None"]
STAGES: dict[str, StageBuilder] = {}


def stage(name: str) -> Callable[[StageBuilder], StageBuilder]:
    def register(builder: StageBuilder) -> StageBuilder:
        STAGES[name] = builder
        return builder

    return register


def _sections_sha256(spec: PipelineSpec, sections: Sequence[str]) -> str:
    """A content hash of the given top-level sections (as validated, defaults included)."""
    import hashlib
    import json

    data = spec.model_dump(mode="json", include=set(sections))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def retrains(spec: PipelineSpec) -> bool:
    return spec.monitor is not None and spec.monitor.retrain


def retrain_asset_uri(name: str) -> str:
    """The asset the monitor DAG emits on drift; the training DAG is scheduled on it."""
    return f"x-mlops://{name}/drift"


def _seconds(value: Any) -> float | None:
    return None if value is None else value.total_seconds()


@stage("ingest")
def _ingest(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    ingest = spec.ingest
    wait = ingest.wait
    return TaskPlan(
        "ingest",
        f"{OPERATORS}.ingest.IngestDatasetOperator",
        {
            **common,
            "source": ingest.source,
            "source_conn_id": ingest.conn_id,
            "file_format": ingest.format,
            "target": ingest.target,
            "features": ingest.features,
            "test_size": ingest.split.test_size,
            "seed": ingest.split.seed,
            "stratify": spec.stratify,
            "wait_timeout": _seconds(wait.timeout) if wait else None,
            "wait_poke_interval": _seconds(wait.poke_interval) if wait else None,
        },
        doc=f"Read `{ingest.source}`, snapshot it and split it (test size {ingest.split.test_size}).",
    )


@stage("validate")
def _validate(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    section = spec.validate_
    return TaskPlan(
        "validate",
        f"{OPERATORS}.validate.ValidateDatasetOperator",
        {
            **common,
            "expectations": section.expectations,
            "suite": section.suite,
            "on_failure": section.on_failure,
        },
        doc=f"Great Expectations: {len(section.expectations)} expectation(s), "
        f"on failure: {section.on_failure}.",
    )


@stage("tune")
def _tune(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan | None:
    train, tune = spec.train, spec.train.tune
    if tune is None or train.estimator is None:
        return None
    return TaskPlan(
        "tune",
        f"{OPERATORS}.tune.TuneModelOperator",
        {
            **common,
            "estimator": train.estimator,
            "hyperparams": train.params,
            "tune": {**tune.model_dump(mode="json", by_alias=True, exclude_none=True),
                     "timeout": _seconds(tune.timeout)},
            "metric": spec.tune_metric,
            "transform": spec.transform.model_dump(mode="json") if spec.transform is not None else None,
            "positive_class": spec.evaluate.positive_class,
            "seed": spec.ingest.split.seed,
            "cache": train.cache,
            "cache_config_sha256": _sections_sha256(spec, ("ingest", "transform", "train")),
        },
        doc=f"Search {len(tune.space)} parameter(s) of `{train.estimator}`: {tune.trials} trials in "
        f"{tune.parallel} mapped task(s), {tune.cv}-fold CV {spec.tune_metric} on the training split.",
        expand={"shard": list(range(tune.parallel))},
    )


@stage("train")
def _train(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    train = spec.train
    return TaskPlan(
        "train",
        f"{OPERATORS}.train.TrainModelOperator",
        {
            **common,
            "estimator": train.estimator,
            "entrypoint": train.entrypoint,
            "hyperparams": train.params,
            "transform": spec.transform.model_dump(mode="json") if spec.transform is not None else None,
            "seed": spec.ingest.split.seed,
            "runner": train.runner.model_dump(exclude_none=True),
            "cache": train.cache,
            "cache_config_sha256": _sections_sha256(spec, ("ingest", "transform", "train")),
            **({"tune_task_id": "tune", "tune_metric": spec.tune_metric,
                # a cache hit skips the search; train still runs (and reuses the model)
                "trigger_rule": "none_failed"} if train.tune is not None else {}),
        },
        doc=f"Train `{train.estimator or train.entrypoint}` ({train.runner.type} runner)"
        + (", inside one scikit-learn Pipeline with the spec's transform." if spec.transform else "."),
    )


@stage("evaluate")
def _evaluate(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    champion = spec.evaluate.champion
    return TaskPlan(
        "evaluate",
        f"{OPERATORS}.evaluate.EvaluateModelOperator",
        {
            **common,
            "metrics": spec.metrics,
            "thresholds": {m: b.model_dump(exclude_none=True) for m, b in spec.evaluate.thresholds.items()},
            "champion_metric": spec.champion_metric if champion.enabled else None,
            "champion_min_delta": champion.min_delta,
            "champion_alias": spec.deploy.alias,
            "positive_class": spec.evaluate.positive_class,
        },
        doc=f"Metrics {', '.join(spec.metrics)}; thresholds and champion check on `{spec.champion_metric}`.",
    )


@stage("register")
def _register(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    return TaskPlan(
        "register",
        f"{OPERATORS}.register.RegisterModelOperator",
        {**common, "aliases": spec.register_.aliases, "tags": spec.register_.tags},
        doc=f"Register a version of `{spec.model_name}` with aliases {spec.register_.aliases}.",
    )


@stage("approve")
def _approve(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan | None:
    approval = spec.deploy.approval
    if approval is None or not approval.required:
        return None
    who = " or ".join(approval.assignees) or "a person"
    timeout = approval.model_dump(mode="json")["timeout"]  # as the spec writes it: 4h, 1d
    return TaskPlan(
        "approve",
        f"{OPERATORS}.approval.PromotionApprovalOperator",
        {
            **common,
            "alias": spec.deploy.alias,
            "response_timeout": _seconds(approval.timeout),
            "assignees": approval.assignees,
        },
        doc=f"Wait for {who} to approve moving `@{spec.deploy.alias}` (the evaluation verdict is shown); "
        f"no answer within {timeout} rejects.",
    )


def needs_approval(spec: PipelineSpec) -> bool:
    return spec.deploy.approval is not None and spec.deploy.approval.required


@stage("deploy")
def _deploy(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    kwargs: dict[str, Any] = {**common, "alias": spec.deploy.alias}
    doc = f"Move `@{spec.deploy.alias}` to the new version (only when every gate passed)."
    if needs_approval(spec):
        kwargs["approval_task_id"] = "approve"
        doc += " Only after a person approved it."
    if spec.deploy.targets:
        kwargs["targets"] = [t.model_dump(mode="json", exclude_none=True) for t in spec.deploy.targets]
        kwargs["target_column"] = spec.ingest.target
        doc += f" Every serving target ({len(spec.deploy.targets)}) is health-checked first, then follows."
    return TaskPlan("deploy", f"{OPERATORS}.deploy.PromoteModelOperator", kwargs, doc=doc)


@stage("monitor")
def _monitor(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    monitor = spec.monitor
    if monitor is None:
        raise ValueError(f"pipeline {spec.name!r} has no monitor section")
    # Without its own ``current``, the monitor watches what the model scores in production (the batch
    # input), else the training source itself (new data lands there).
    batch = spec.deploy.batch
    if monitor.current:
        current, conn_id, file_format = monitor.current, spec.ingest.conn_id, None
    elif batch is not None:
        current, conn_id, file_format = batch.input, batch.conn_id, batch.format
    else:
        current, conn_id, file_format = spec.ingest.source, spec.ingest.conn_id, spec.ingest.format
    return TaskPlan(
        "detect_drift",
        f"{OPERATORS}.monitor.DetectDriftOperator",
        {
            **common,
            "current": current,
            "current_conn_id": conn_id,
            "file_format": file_format,
            "target": spec.ingest.target,
            "reference_alias": spec.deploy.alias,
            "drift_share": monitor.drift.share,
            "stattest": monitor.drift.method,
            "stattest_threshold": monitor.drift.threshold,
            "positive_class": spec.evaluate.positive_class,
        },
        doc=f"Evidently drift of `{current}` against the `@{spec.deploy.alias}` training data.",
    )


def _alerts(spec: PipelineSpec, event: str) -> list[dict[str, Any]]:
    alerts = spec.monitor.alerts if spec.monitor is not None else []
    return [
        {"to": list(a.to), "conn_id": a.conn_id, "from_email": a.from_email} for a in alerts if event in a.on
    ]


@stage("notify_drift")
def _notify_drift(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan | None:
    alerts = _alerts(spec, "drift")
    if not alerts:
        return None
    recipients = ", ".join(to for alert in alerts for to in alert["to"])
    return TaskPlan(
        "notify_drift",
        f"{OPERATORS}.alerts.DriftAlertOperator",
        {"alerts": alerts, "pipeline": spec.name, "drift_task_id": "detect_drift"},
        upstream=("detect_drift",),
        doc=f"On dataset drift, e-mail {recipients} (drift share, drifted columns, report); "
        "skipped otherwise.",
    )


@stage("request_retrain")
def _request_retrain(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan | None:
    if not retrains(spec):
        return None
    return TaskPlan(
        "request_retrain",
        f"{OPERATORS}.monitor.RequestRetrainOperator",
        {"drift_task_id": "detect_drift"},
        upstream=("detect_drift",),
        doc=f"On dataset drift, emit `{retrain_asset_uri(spec.name)}`, which schedules the training DAG; "
        "skipped otherwise.",
    )


@stage("batch")
def _batch(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    batch = spec.deploy.batch
    if batch is None:
        raise ValueError(f"pipeline {spec.name!r} has no deploy.batch section")
    return TaskPlan(
        "score",
        f"{OPERATORS}.batch.BatchScoreOperator",
        {
            **common,
            "source": batch.input,
            "destination": batch.output,
            "conn_id": batch.conn_id,
            "file_format": batch.format,
            "chunk_rows": batch.chunk_rows,
            "alias": spec.deploy.alias,
        },
        doc=f"Score `{batch.input}` with `models:/{spec.model_name}@{spec.deploy.alias}` (resolved to one "
        f"version first) into `{batch.output}`.",
    )


def _doc(spec: PipelineSpec, source: str, text: str, kind: str) -> str:
    header = f"**{kind.capitalize()} DAG of the ML pipeline `{spec.name}`** — generated from `{source}`."
    if spec.description:
        header += f"\n\n{spec.description}"
    return f"{header}\n\n```yaml\n{redact(text).rstrip()}\n```\n"


@dataclass(frozen=True)
class PlanContext:
    """What every DAG builder of one spec shares."""

    spec: PipelineSpec
    source: str
    text: str
    common: dict[str, Any]  # the stage operators' identity kwargs
    default_args: dict[str, Any]
    tags: tuple[str, ...]

    def dag(self, kind: DagKind, tasks: Sequence[TaskPlan], **fields: Any) -> DagPlan:
        """A DagPlan of ``kind`` with the spec's owner, start date, default args, tags and docs."""
        spec = self.spec
        values: dict[str, Any] = {
            "dag_id": kind.dag_id(spec.name),
            "kind": kind.name,
            "start_date": spec.start_date,
            "catchup": False,
            "owner": spec.owner,
            "tags": (*self.tags, f"mlops:{kind.name}"),
            "default_args": self.default_args,
            "doc_md": _doc(spec, self.source, self.text, kind.title),
            "tasks": tuple(tasks),
        }
        values.update(fields)
        return DagPlan(**values)

    def chain(self, stages: Sequence[str]) -> list[TaskPlan]:
        """The plans of ``stages`` the spec uses, each after the one before unless it names its upstream."""
        tasks: list[TaskPlan] = []
        for name in stages:
            plan = STAGES[name](self.spec, self.common)
            if plan is None:
                continue
            if not plan.upstream and tasks:
                plan = dataclasses.replace(plan, upstream=(tasks[-1].task_id,))
            tasks.append(plan)
        return tasks


def training_dag(ctx: PlanContext) -> DagPlan:
    spec = ctx.spec
    retrain = retrains(spec)
    return ctx.dag(
        kind_named("training"),
        ctx.chain(TRAINING_STAGES),
        description=spec.description or f"Train, evaluate and promote {spec.model_name}",
        schedule=spec.schedule,
        catchup=spec.catchup,
        schedule_on_assets=(retrain_asset_uri(spec.name),) if retrain else (),
        display_name=f"{spec.name} ({spec.schedule} or on drift)" if retrain and spec.schedule else None,
    )


def monitor_dag(ctx: PlanContext) -> DagPlan:
    spec = ctx.spec
    assert spec.monitor is not None
    return ctx.dag(
        kind_named("monitor"),
        ctx.chain(MONITOR_STAGES),
        description=f"Watch {spec.model_name}@{spec.deploy.alias} for data drift",
        schedule=spec.monitor.schedule,
        outlets={"request_retrain": (retrain_asset_uri(spec.name),)} if retrains(spec) else {},
        failure_alerts=tuple({**a, "pipeline": spec.name} for a in _alerts(spec, "failure")),
    )


def batch_dag(ctx: PlanContext) -> DagPlan:
    spec = ctx.spec
    assert spec.deploy.batch is not None
    return ctx.dag(
        kind_named("batch"),
        ctx.chain(("batch",)),
        description=f"Score new data with {spec.model_name}@{spec.deploy.alias}",
        schedule=spec.deploy.batch.schedule,
    )


#: how long one run of the ``<name>_serve`` DAG waits for the alias to move before it starts over
SERVE_WAIT_SECONDS = 24 * 3600


def serve_dag(ctx: PlanContext) -> DagPlan:
    """``served_version`` → ``wait_for_alias`` → ``sync_serving``, continuously (see operators/serve.py)."""
    spec = ctx.spec
    return ctx.dag(
        kind_named("serve"),
        ctx.chain(SERVE_STAGES),
        description=f"Serving targets follow {spec.model_name}@{spec.deploy.alias}, also when moved by hand",
        schedule="@continuous",
    )


def _serving_kwargs(spec: PipelineSpec, common: dict[str, Any]) -> dict[str, Any]:
    return {
        **common,
        "alias": spec.deploy.alias,
        "targets": [t.model_dump(mode="json", exclude_none=True) for t in spec.deploy.targets],
        "target_column": spec.ingest.target,
    }


@stage("served_version")
def _served_version(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    return TaskPlan("served_version", f"{OPERATORS}.serve.ServedVersionOperator",
                    _serving_kwargs(spec, common), doc="The version the serving targets serve now.")


@stage("wait_for_alias")
def _wait_for_alias(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    alias = spec.deploy.alias
    sensor = {
        "model_name": spec.model_name,
        "alias": alias,
        "not_version": "{{ ti.xcom_pull(task_ids='served_version')['version'] }}",
        "mlflow_conn_id": spec.mlflow.conn_id,
        "deferrable": True,
        "poke_interval": 60,
        "timeout": SERVE_WAIT_SECONDS,
        "soft_fail": True,
        "retries": 0,
    }
    return TaskPlan("wait_for_alias", "mlops_provider.sensors.mlflow.MLflowModelVersionSensor", sensor,
                    doc=f"Wait until `@{alias}` points at a version not served yet.")


@stage("sync_serving")
def _sync_serving(spec: PipelineSpec, common: dict[str, Any]) -> TaskPlan:
    return TaskPlan("sync_serving", f"{OPERATORS}.serve.SyncServingOperator", _serving_kwargs(spec, common),
                    doc=f"Stage, health-check and switch every target to `@{spec.deploy.alias}` "
                        "(alias not moved).")  # fmt: skip


@cache
def _builder(path: str) -> Callable[[PlanContext], DagPlan]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def build_plan(spec: PipelineSpec, *, source: str, text: str, spec_sha256: str) -> PipelinePlan:
    common = {
        "pipeline": spec.name,
        "ml_task": spec.task,
        "experiment": spec.experiment,
        "model_name": spec.model_name,
        "mlflow_conn_id": spec.mlflow.conn_id,
        "spec_sha256": spec_sha256,
    }
    default_args = {
        "owner": spec.owner,
        "retries": spec.defaults.retries,
        "retry_delay": spec.defaults.retry_delay,
        "retry_exponential_backoff": spec.defaults.retry_exponential_backoff,
        "execution_timeout": spec.defaults.execution_timeout,
    }
    ctx = PlanContext(spec, source, text, common, default_args, tuple(dict.fromkeys(("mlops", *spec.tags))))
    dags = tuple(_builder(kind.builder)(ctx) for kind in DAG_KINDS if kind.present(spec))
    return PipelinePlan(spec.name, source, spec_sha256, dags)
