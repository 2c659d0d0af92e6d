"""Task logs of in-process runs (``dag.test()``: ``mlops run``, ``make demo``) where Airflow's UI reads them.

``dag.test()`` runs every task in this process and logs to the console; Airflow's log reader (the UI's
task log, ``GET .../logs/{try}``) finds nothing, because on a worker it is the supervisor that writes
``<[logging] base_log_folder>/<[logging] log_filename_template>``. :func:`task_logs_in_airflow` fills that
file for each try: an Airflow listener tees this process's stdout/stderr file descriptors (structlog's
console output, the libraries' own prints) into the try's log file from the moment the task starts
running until it succeeds or fails; the console still shows everything. Airflow's reader shows such
plain lines as they are, with the timestamp each line starts with.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


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
    from airflow.sdk.listener import get_listener_manager

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
