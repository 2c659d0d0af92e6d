"""Whether this deployment's settings can keep one DAG run's state in one place.

A DAG run's tasks may run on different machines under any executor but the local one (Celery,
Kubernetes, Edge, ...): each task then has its own disk. The embedded defaults are local: the MLflow store
(``<project_root>/.mlops/mlflow.db`` or any non-server tracking URI) and the workspace
(``<project_root>/.mlops/workspace``). On several machines they silently split a pipeline's lineage (one
worker's store holds the ingest run, another's the model) and a task reads a snapshot another machine
wrote. So under a non-local executor (read from Airflow's configuration, never by trying) the first
task refuses them before anything is written, naming the executor and the settings to change, without
retries; ``mlops doctor`` reports the same. Runs in this process (``mlops run``, ``make demo``:
``dag.test()`` runs every task here) and the local executor keep the simple defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlops_provider import config

#: executors whose tasks all run on this machine (Airflow 3's names; a module path ending in them too)
LOCAL_EXECUTORS = ("LocalExecutor", "SequentialExecutor", "DebugExecutor")
#: set by :func:`mlops_provider.run.run_dag` while ``dag.test()`` runs every task in this process
IN_PROCESS_ENV = "MLOPS_IN_PROCESS_RUN"


@dataclass(frozen=True)
class Finding:
    setting: str
    problem: str
    fix: str


def executors() -> list[str]:
    """``[core] executor``: Airflow 3 takes a comma-separated list (the first is the default)."""
    raw = os.environ.get("AIRFLOW__CORE__EXECUTOR")
    if raw is None:
        from airflow.configuration import conf

        raw = conf.get("core", "executor", fallback="LocalExecutor")
    return [part.strip() for part in (raw or "LocalExecutor").split(",") if part.strip()]


def distributed(names: list[str] | None = None) -> list[str]:
    """The configured executors that may run a task on another machine."""
    names = executors() if names is None else names

    def local(name: str) -> bool:  # "LocalExecutor", "alias:airflow.executors.local_executor.LocalExecutor"
        return any(name.split(":")[-1].endswith(kind) for kind in LOCAL_EXECUTORS)

    return [name for name in names if not local(name)]


def findings(*, tracking_uri: str, tracking_from: str) -> list[Finding]:
    """What cannot work on several machines with the current settings (empty: fine)."""
    out = []
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        out.append(Finding(
            "MLflow", f"the tracking store {tracking_uri} ({tracking_from}) is a local file each machine "
            "has its own copy of",
            "set the Airflow connection mlflow_default (or the spec's mlflow.conn_id) to an MLflow tracking "
            "server, e.g. host http://mlflow:5000",
        ))
    workspace = config.get("workspace")
    if not workspace:
        out.append(Finding(
            "[mlops] workspace", f"unset: snapshots and splits go to "
            f"{config.project_root() / '.mlops' / 'workspace'} on the machine of the task that writes them",
            "set [mlops] workspace (AIRFLOW__MLOPS__WORKSPACE) to an s3:// prefix, with [mlops] "
            "workspace_conn_id, or to a folder every worker mounts at the same path",
        ))
    return out


def check(*, tracking_uri: str, tracking_from: str) -> None:
    """Refuse the local defaults under a non-local executor (not in an in-process run)."""
    from mlops_provider.exceptions import NotAllowedError

    if os.environ.get(IN_PROCESS_ENV):
        return
    remote = distributed()
    if not remote:
        return
    problems = findings(tracking_uri=tracking_uri, tracking_from=tracking_from)
    if problems:
        details = "; ".join(f"{p.setting}: {p.problem} — {p.fix}" for p in problems)
        raise NotAllowedError(
            f"this Airflow runs tasks with {', '.join(remote)}, so one DAG run's tasks may run on different "
            f"machines, and the embedded defaults would split the pipeline's state between them: {details}"
        )
