"""Run one DAG of a pipeline spec once, in this process: what ``mlops run`` and ``make demo`` use.

The DAG is built from the spec exactly as the loader builds it, written to the metadata DB (so it needs
no DAG processor and the spec may live anywhere under the project root) and run with Airflow's
``dag.test()``: the real task runner, XCom, retries, trigger rules and callbacks, with the current
Airflow configuration (SQLite is fine) and MLflow connection. An uninitialised ``AIRFLOW_HOME`` gets its
metadata DB created first.

The outcome (:class:`~mlops_provider.inprocess.result.RunResult`) is read back from the metadata DB
(task states, XCom) and MLflow (the verdict of a rejected candidate), which is what a user would look at
in the two UIs. The Airflow plumbing is in :mod:`mlops_provider.inprocess.airflow`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.exceptions import SpecError
from mlops_provider.inprocess.airflow import ensure_metadata_db, redirect_output
from mlops_provider.inprocess.result import RunResult, TaskOutcome

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from mlops_provider.plan.model import DagPlan
    from mlops_provider.spec.load import LoadedSpec

__all__ = ["RunResult", "dag_plan", "load", "run_command", "run_dag", "run_spec"]


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
    """The plan of the DAG named by kind (:data:`~mlops_provider.spec.kinds.KIND_NAMES`) or by id."""
    from mlops_provider.plan.build import build_plan

    assert loaded.spec is not None
    plan = build_plan(loaded.spec, source=loaded.display_path, text=loaded.text, spec_sha256=loaded.sha256)
    for candidate in plan.dags:
        if dag in (candidate.kind, candidate.dag_id):
            return candidate
    known = ", ".join(f"{d.dag_id} ({d.kind})" for d in plan.dags)
    raise ValueError(f"spec {loaded.display_path} has no {dag!r} DAG; it defines: {known}")


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


def run_dag(dag: DAG, *, mlflow_conn_id: str | None = None, logical_date: Any = None,
            conf: dict[str, Any] | None = None) -> RunResult:
    """``dag.test()`` with the outcome collected. The metadata DB must exist (:func:`ensure_metadata_db`)."""
    from mlops_provider.inprocess.airflow import (
        read_xcom,
        recording_failures,
        store_dag,
        task_logs_in_airflow,
    )
    from mlops_provider.links.mlflow import MLflowRunLink

    started = time.perf_counter()
    store_dag(dag)
    from mlops_provider.deployment import IN_PROCESS_ENV

    os.environ[IN_PROCESS_ENV] = "1"  # every task runs here: the local defaults cannot split
    try:
        with recording_failures() as errors, task_logs_in_airflow():
            kwargs: dict[str, Any] = {"run_conf": conf} if conf else {}
            if logical_date is not None:
                kwargs["logical_date"] = logical_date
            dag_run = dag.test(**kwargs)
    finally:
        os.environ.pop(IN_PROCESS_ENV, None)
    seconds = time.perf_counter() - started
    tasks = [
        TaskOutcome(
            ti.task_id,
            str(getattr(ti.state, "value", ti.state)),
            int(ti.try_number or 0),
            errors.get(ti.task_id),
            round(ti.duration, 3) if ti.duration is not None else None,
        )
        for ti in sorted(dag_run.get_task_instances(), key=lambda t: list(dag.task_ids).index(t.task_id))
    ]
    xcom = read_xcom(dag.dag_id, dag_run.run_id)
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
    cache: bool = True,
) -> RunResult:
    """Build the DAG ``dag`` (kind or id) of the spec and run it once. Raises :class:`SpecError` if invalid.

    ``cache=False`` trains even when an earlier run made the same model (DAG run conf
    ``{"mlops": {"cache": false}}``, what ``mlops run --no-cache`` sends).

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
    return run_dag(render_dag(plan), mlflow_conn_id=loaded.spec.mlflow.conn_id, logical_date=logical_date,
                   conf=None if cache else {"mlops": {"cache": False}})


def run_command(
    spec: Path, *, dag: str = "training", as_json: bool = False, project_root: Path | None = None,
    cache: bool = True,
) -> int:
    """``mlops run``: run, print the outcome, return the exit status.

    0 the run succeeded (and promoted, for a training DAG), 1 it failed, 2 the spec is invalid, 3 the run
    succeeded but the evaluation gate rejected the candidate (nothing registered, the alias stays).
    """
    import json
    import sys

    try:
        with redirect_output(sys.stderr.fileno()) if as_json else contextlib.nullcontext():
            result = run_spec(spec, dag=dag, project_root=project_root, cache=cache)
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
