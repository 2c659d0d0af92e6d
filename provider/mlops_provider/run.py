"""Run one DAG of a pipeline spec once, in this process: what ``mlops run`` and ``make demo`` use.

The DAG is built from the spec exactly as the loader builds it, written to the metadata DB (so it needs
no DAG processor and the spec may live anywhere under the project root) and run with Airflow's
``dag.test()``: the real task runner, XCom, retries, trigger rules and callbacks, with the current
Airflow configuration (SQLite is fine) and MLflow connection. An uninitialised ``AIRFLOW_HOME`` gets its
metadata DB created first.

The outcome (:class:`RunResult`) is read back from the metadata DB (task states, XCom) and MLflow (the
verdict of a rejected candidate), which is what a user would look at in the two UIs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.exceptions import SpecError

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from mlops_provider.plan.model import DagPlan
    from mlops_provider.spec.load import LoadedSpec

DAG_KINDS = ("training", "monitor", "batch")


@dataclass
class TaskOutcome:
    task_id: str
    state: str
    tries: int
    error: str | None = None


@dataclass
class RunResult:
    """What one DAG run did, as a user would read it off the Airflow and MLflow UIs."""

    dag_id: str
    run_id: str
    state: str
    seconds: float
    tasks: list[TaskOutcome] = field(default_factory=list)
    xcom: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    tracking_uri: str | None = None
    verdict: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def task(self, task_id: str) -> TaskOutcome | None:
        return next((t for t in self.tasks if t.task_id == task_id), None)

    @property
    def failure(self) -> str | None:
        """The first failed task and its error, in one line."""
        for outcome in self.tasks:
            if outcome.state == "failed":
                return f"task {outcome.task_id!r} failed: {outcome.error or 'see its log'}"
        return None if self.ok else f"DAG run ended {self.state}"

    @property
    def rejected(self) -> bool:
        """The run did its work and the evaluation gate said no: nothing registered, the alias stays."""
        return bool(self.verdict) and self.verdict.get("status") == "rejected"  # type: ignore[union-attr]

    @property
    def model_version(self) -> str | None:
        registered = self.xcom.get("register") or {}
        return registered.get("version")

    @property
    def model_name(self) -> str | None:
        registered = self.xcom.get("register") or self.xcom.get("deploy") or {}
        return registered.get("model_name")

    @property
    def promotion(self) -> dict[str, Any] | None:
        return self.xcom.get("deploy")

    @property
    def scored(self) -> dict[str, Any] | None:
        """What a batch DAG's ``score`` task did (rows, output, model version)."""
        return self.xcom.get("score")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "state": self.state,
            "seconds": round(self.seconds, 2),
            "tasks": [t.__dict__ for t in self.tasks],
            "mlflow_run_id": self.mlflow_run_id,
            "mlflow_run_url": self.mlflow_run_url,
            "tracking_uri": self.tracking_uri,
            "verdict": self.verdict,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "promotion": self.promotion,
            "scored": self.scored,
            "failure": self.failure,
            "rejected": self.rejected,
        }

    def summary(self) -> str:
        lines = [f"DAG run {self.dag_id} / {self.run_id}: {self.state.upper()} in {self.seconds:.1f} s"]
        lines.append(
            "  tasks:   "
            + ", ".join(
                f"{t.task_id}={t.state}" + (f" (tries: {t.tries})" if t.tries > 1 else "") for t in self.tasks
            )
        )
        if self.mlflow_run_id:
            lines.append(
                f"  MLflow run: {self.mlflow_run_id}"
                + (f"  {self.mlflow_run_url}" if self.mlflow_run_url else "")
            )
        if self.verdict:
            lines.append(
                f"  verdict: {str(self.verdict.get('status', '?')).upper()} - {self.verdict.get('reason')}"
            )
            metrics = self.verdict.get("metrics") or {}
            if metrics:
                lines.append("  metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if self.model_version:
            lines.append(f"  model version: {self.model_name} v{self.model_version}")
        if self.promotion:
            previous = self.promotion.get("previous_version")
            lines.append(
                f"  alias: @{self.promotion['alias']} -> v{self.promotion['version']}"
                + (f" (was v{previous})" if previous else " (first champion)")
            )
        if self.rejected and self.verdict:
            alias = self.verdict.get("champion_alias") or "champion"
            holder = self.verdict.get("champion_version")
            stays = f"@{alias} stays on v{holder}" if holder else f"no version holds @{alias} yet"
            lines.append(f"  promotion: none, the candidate was rejected; {stays}")
        if self.scored:
            s = self.scored
            lines.append(f"  scored: {s['rows']} rows with {s['model_name']} v{s['model_version']} "
                         f"(@{s['model_alias']}), {s['rows_per_second']:,.0f} rows/s -> {s['output_uri']}")
        if self.failure:
            lines.append(f"  failure: {self.failure}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# spec → DAG
# --------------------------------------------------------------------------------------------------
def load(spec_path: Path, project_root: Path | None = None) -> LoadedSpec:
    from mlops_provider.spec.load import load_spec

    root = (project_root or config.project_root(spec_path)).resolve()
    try:
        shown = str(spec_path.resolve().relative_to(root))
    except ValueError:
        shown = str(spec_path)
    loaded = load_spec(
        spec_path, project_root=root, allowed_modules=config.allowed_modules(), display_path=shown
    )
    if not loaded.ok:
        raise SpecError(loaded.issues)
    return loaded


def dag_plan(loaded: LoadedSpec, dag: str = "training") -> DagPlan:
    """The plan of the DAG named by kind (``training``/``monitor``) or by id."""
    from mlops_provider.plan.build import build_plan

    assert loaded.spec is not None
    plan = build_plan(loaded.spec, source=loaded.display_path, text=loaded.text, spec_sha256=loaded.sha256)
    for candidate in plan.dags:
        if dag in (candidate.kind, candidate.dag_id):
            return candidate
    known = ", ".join(f"{d.dag_id} ({d.kind})" for d in plan.dags)
    raise ValueError(f"spec {loaded.display_path} has no {dag!r} DAG; it defines: {known}")


# --------------------------------------------------------------------------------------------------
# Airflow plumbing
# --------------------------------------------------------------------------------------------------
def ensure_metadata_db() -> bool:
    """Create or migrate the metadata DB if needed (``airflow db migrate``). True if it had to."""
    from airflow.utils import db
    from airflow.utils.session import create_session

    with create_session() as session:
        current = db._get_current_revision(session)
    if current is not None:
        head = db._get_script_object().get_current_head()
        if current == head:
            return False
    db.initdb()
    return True


def store_dag(dag: DAG) -> None:
    """Write the DAG to the metadata DB, as the DAG processor would, so ``dag.test()`` can create a run."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    bundles = list(manager.get_all_dag_bundles())
    bundle = next((b for b in bundles if b.name == "dags-folder"), bundles[0])
    with create_session() as session:
        update_dag_parsing_results_in_db(
            bundle.name, None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


@contextlib.contextmanager
def recording_failures() -> Iterator[dict[str, str]]:
    """Task id → error of its last failed try, collected by an Airflow listener while the block runs."""
    from airflow.listeners import hookimpl
    from airflow.sdk.listener import get_listener_manager

    errors: dict[str, str] = {}

    class FailureListener:
        @hookimpl
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            if error is None:
                return
            text = str(error).strip() or type(error).__name__
            errors[task_instance.task_id] = (
                text if isinstance(error, str) else f"{type(error).__name__}: {text}"
            )

    listener = FailureListener()
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        yield errors
    finally:
        manager.pm.unregister(listener)


def _xcom(dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    values: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        rows: Any = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id))
        for row in rows:
            values.setdefault(row.task_id, {})[row.key] = XComModel.deserialize_value(row)
    return values


def _verdict_from_mlflow(tracking: dict[str, Any], conn_id: str | None) -> dict[str, Any] | None:
    """The verdict of a rejected candidate (evaluate fails before pushing XCom): from the run's tags."""
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.tracking import tags as T

    run = MLflowHook(mlflow_conn_id=conn_id).client.get_run(tracking["run_id"])
    status = run.data.tags.get(T.VERDICT)
    if status is None:
        return None
    metrics = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
    return {
        "status": status,
        "passed": status == "passed",
        "reason": run.data.tags.get(T.VERDICT_REASON),
        "metrics": metrics,
    }


def run_dag(dag: DAG, *, mlflow_conn_id: str | None = None, logical_date: Any = None) -> RunResult:
    """``dag.test()`` with the outcome collected. The metadata DB must exist (:func:`ensure_metadata_db`)."""
    from mlops_provider.links.mlflow import MLflowRunLink
    from mlops_provider.task_logs import task_logs_in_airflow

    started = time.perf_counter()
    store_dag(dag)
    with recording_failures() as errors, task_logs_in_airflow():
        dag_run = dag.test(logical_date=logical_date) if logical_date is not None else dag.test()
    seconds = time.perf_counter() - started
    tasks = [
        TaskOutcome(
            ti.task_id,
            str(getattr(ti.state, "value", ti.state)),
            int(ti.try_number or 0),
            errors.get(ti.task_id),
        )
        for ti in sorted(dag_run.get_task_instances(), key=lambda t: list(dag.task_ids).index(t.task_id))
    ]
    xcom = _xcom(dag.dag_id, dag_run.run_id)
    result = RunResult(
        dag_id=dag.dag_id,
        run_id=dag_run.run_id,
        state=str(getattr(dag_run.state, "value", dag_run.state)),
        seconds=seconds,
        tasks=tasks,
        xcom={task: keys.get("return_value") for task, keys in xcom.items()},
    )
    tracking = next((keys[MLflowRunLink.key] for keys in xcom.values() if MLflowRunLink.key in keys), None)
    if tracking:
        result.mlflow_run_id = tracking["run_id"]
        result.mlflow_run_url = MLflowRunLink().format(tracking)
    evaluated = result.xcom.get("evaluate")
    if isinstance(evaluated, dict) and "passed" in evaluated:
        result.verdict = evaluated
    elif tracking:
        try:
            result.verdict = _verdict_from_mlflow(tracking, mlflow_conn_id)
        except Exception:  # a summary nicety; the run's state is what counts
            result.verdict = None
    return result


def run_spec(
    spec_path: str | Path,
    *,
    dag: str = "training",
    project_root: Path | None = None,
    logical_date: Any = None,
) -> RunResult:
    """Build the DAG ``dag`` (kind or id) of the spec and run it once. Raises :class:`SpecError` if invalid.

    Relative paths of the spec resolve against ``project_root`` (default: ``[mlops] project_root``, else
    the parent of the ``dags`` folder above the spec, else the current directory); the tasks, which run in
    this process, see the same root.
    """
    spec_path = Path(spec_path)
    loaded = load(spec_path, project_root)
    if config.get("project_root") is None or project_root is not None:
        os.environ["AIRFLOW__MLOPS__PROJECT_ROOT"] = str(
            (project_root or config.project_root(spec_path)).resolve()
        )
    plan = dag_plan(loaded, dag)
    ensure_metadata_db()
    from mlops_provider.render.dag import render_dag

    assert loaded.spec is not None
    return run_dag(render_dag(plan), mlflow_conn_id=loaded.spec.mlflow.conn_id, logical_date=logical_date)


@contextlib.contextmanager
def redirect_output(target_fd: int, *, stderr_too: bool = False) -> Iterator[None]:
    """Point this process's stdout (and stderr) file descriptors at ``target_fd``: task logs included."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    streams = (1, 2) if stderr_too else (1,)
    saved = {fd: os.dup(fd) for fd in streams}
    for fd in streams:
        os.dup2(target_fd, fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def run_command(
    spec: Path, *, dag: str = "training", as_json: bool = False, project_root: Path | None = None
) -> int:
    """``mlops run``: run, print the outcome, return the exit status.

    0 the run succeeded (and promoted, for a training DAG), 1 it failed, 2 the spec is invalid, 3 the run
    succeeded but the evaluation gate rejected the candidate (nothing registered, the alias stays).
    """
    import json
    import sys

    try:
        with redirect_output(sys.stderr.fileno()) if as_json else contextlib.nullcontext():
            result = run_spec(spec, dag=dag, project_root=project_root)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mlops run: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print("\n" + result.summary())
    if not result.ok:
        return 1
    return 3 if result.rejected else 0
