"""The Airflow side of running a DAG in this process: the metadata DB, the DAG written to it, the
listener that collects each task's error, the XCom read back, the process's output, and the task logs.

Task logs: ``dag.test()`` runs every task in this process and logs to the console; Airflow's log reader
(the UI's task log, ``GET .../logs/{try}``) finds nothing, because on a worker it is the supervisor that
writes ``<[logging] base_log_folder>/<[logging] log_filename_template>``. :func:`task_logs_in_airflow`
fills that file for each try: an Airflow listener tees this process's stdout/stderr file descriptors
(structlog's console output, the libraries' own prints) into the try's log file from the moment the task
starts running until it succeeds or fails; the console still shows everything. Airflow's reader shows
such plain lines as they are, with the timestamp each line starts with.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from airflow.sdk import DAG


def ensure_metadata_db() -> bool:
    """Create or migrate the metadata DB if needed (what ``airflow db migrate`` does). True if it had to."""
    from airflow.utils import db

    try:
        db.check_migrations(timeout=1)  # raises when the DB lacks a migration (a new DB: all of them)
    except TimeoutError:
        db.initdb()
        return True
    return False


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

    from mlops_provider.compat import get_listener_manager

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

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            release_memory()

    listener = FailureListener()
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        yield errors
    finally:
        manager.pm.unregister(listener)


def release_memory() -> None:
    """Give the heap a finished task left behind back to the OS. Every task of an in-process run shares
    this process; under an executor each has its own, so without this the in-process peak would add up
    what the tasks before it freed but glibc kept (~0.3 GB after ingesting a 1M-row table)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None  # glibc only
    if trim is not None:
        trim(0)


def read_xcom(dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    values: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        rows: Any = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id))
        for row in rows:
            values.setdefault(row.task_id, {})[row.key] = XComModel.deserialize_value(row)
    return values


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


def log_path(ti: Any) -> Path:
    """Where Airflow's file task handler reads the log of this try (``ti``: any task instance)."""
    import jinja2
    from airflow.configuration import conf

    template = conf.get("logging", "log_filename_template")
    rendered = jinja2.Template(template).render(ti=ti, try_number=ti.try_number)
    return Path(conf.get("logging", "base_log_folder")).expanduser() / rendered


def _tee(read_end: int, console: int, log: BinaryIO) -> None:
    while chunk := os.read(read_end, 65536):
        os.write(console, chunk)
        log.write(chunk)
        log.flush()


@contextlib.contextmanager
def task_logs_in_airflow() -> Iterator[None]:
    """While the block runs ``dag.test()``, each task's output also goes to its Airflow log file."""
    from airflow.listeners import hookimpl

    from mlops_provider.compat import get_listener_manager

    saved: list[tuple[int, int]] = []
    pumps: list[tuple[threading.Thread, int, BinaryIO]] = []

    def begin(ti: Any) -> None:
        end()
        path = log_path(ti)
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("ab")
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(write_end, fd)
        os.close(write_end)
        console = saved[0][1]
        pump = threading.Thread(target=_tee, args=(read_end, console, log), name="task-log-tee", daemon=True)
        pump.start()
        pumps.append((pump, read_end, log))

    def end() -> None:
        if not pumps:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        while saved:  # closes the pipe's last write ends: the tee reads to the end and stops
            fd, copy = saved.pop()
            os.dup2(copy, fd)
            os.close(copy)
        pump, read_end, log = pumps.pop()
        pump.join(timeout=30)
        os.close(read_end)
        log.close()

    class TaskLogFiles:
        @hookimpl
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            begin(task_instance)

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            end()

        @hookimpl
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            end()

    listener = TaskLogFiles()
    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        yield
    finally:
        end()
        manager.pm.unregister(listener)
