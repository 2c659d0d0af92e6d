"""Helpers shared by the ingest/validate/train stage tests: a throw-away project root with real data,
and reading what a ``dag.test()`` run left behind (task states, XCom)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD", "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW__MLOPS__WORKSPACE",
    "AIRFLOW__MLOPS__WORKSPACE_CONN_ID", "AIRFLOW__MLOPS__MLFLOW_UI_URL", "AIRFLOW__MLOPS__ALLOWED_MODULES",
)


def make_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with ``data/breast_cancer.csv`` (classification) and ``data/diabetes.csv`` (regression).

    MLflow falls back to the embedded store under this root unless a test configures a server.
    """
    from sklearn.datasets import load_breast_cancer, load_diabetes

    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    load_breast_cancer(as_frame=True).frame.to_csv(root / "data" / "breast_cancer.csv", index=False)
    load_diabetes(as_frame=True).frame.to_csv(root / "data" / "diabetes.csv", index=False)
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # tests load the models they logged
    return root


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        ).first()
        return None if row is None else XComModel.deserialize_value(row[0])


def try_number(dag_run: Any, task_id: str) -> int:
    return int(dag_run.get_task_instance(task_id).try_number)


def pipeline_runs(client: Any, experiment: str) -> list[Any]:
    experiment_obj = client.get_experiment_by_name(experiment)
    return [] if experiment_obj is None else client.search_runs([experiment_obj.experiment_id])


def once_in_state(dag_id: str, task_id: str, state: str, action: Callable[[], None], *, settle: float = 0.0,
                  limit: float = 300) -> threading.Thread:  # fmt: skip
    """Run ``action`` in another thread once the task is in ``state`` (``running``, ``up_for_retry``...) and
    ``settle`` seconds have passed: waits for the condition, not for a guessed time (dag.test's start-up
    varies by seconds). Gives up after ``limit`` seconds without running ``action``."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy.exc import OperationalError

    def run() -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                with create_session() as session:
                    states = [str(getattr(ti.state, "value", ti.state)) for ti in
                              session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id)]
            except OperationalError:  # SQLite busy while the task writes
                states = []
            if state in states:
                time.sleep(settle)
                action()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def once_deferred(dag_id: str, task_id: str, action: Callable[[], None], timeout: float = 300) -> Iterator[
        threading.Event]:
    """Run ``action`` (make the awaited source appear) once the task has deferred; the event tells if it did.

    A scheduler leaves a deferred task in DEFERRED while the triggerer waits. ``dag.test()`` shows
    DEFERRED only for an instant: it sets the task back to QUEUED and runs the trigger inline, for as long
    as the trigger waits. So "deferred" is seen as DEFERRED, or as QUEUED again after the task was RUNNING.
    The watcher gives up after ``timeout`` seconds (or when the task finished without deferring) and runs
    ``action`` anyway, so a task that never defers cannot hang the test.
    """
    import airflow.dag_processing.collection  # noqa: F401 - see below
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy.exc import OperationalError

    # Import and configure the ORM in this thread first: importing Airflow's models from two threads at
    # once deadlocks (import lock vs. SQLAlchemy's mapper-configuration mutex).
    with create_session() as session:
        session.query(TaskInstance).filter_by(dag_id=dag_id).first()
    seen = threading.Event()

    def state_now() -> str | None:
        try:
            with create_session() as session:
                ti = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id).one_or_none()
                return None if ti is None else str(ti.state)
        except OperationalError:  # SQLite busy while the task writes: just look again
            return None

    def watch() -> None:
        deadline = time.monotonic() + timeout
        was_running = False
        try:
            while time.monotonic() < deadline and not seen.is_set():
                state = state_now()
                if state == "deferred" or (state == "queued" and was_running):
                    seen.set()
                elif state == "running":
                    was_running = True
                elif state in ("success", "failed", "up_for_retry", "skipped", "upstream_failed"):
                    break
                time.sleep(0.05)
        finally:
            action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        thread.join()
