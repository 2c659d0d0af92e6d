"""Plain plan objects: what DAGs and tasks a spec produces, with no Airflow in them.

The factory goes one way: spec → plan → DAG. ``mlops show`` prints plans; the renderer is the only
place that turns them into Airflow objects.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskPlan:
    task_id: str
    operator: str  # import path of the operator class
    kwargs: dict[str, Any] = field(default_factory=dict)  # plain data only
    upstream: tuple[str, ...] = ()
    doc: str = ""
    #: a mapped task: ``operator.partial(**kwargs).expand(**expand)`` (plain data)
    expand: dict[str, Any] | None = None


@dataclass(frozen=True)
class DagPlan:
    dag_id: str
    kind: str  # one of mlops_provider.spec.kinds.KIND_NAMES
    description: str
    schedule: str | None
    start_date: dt.date
    catchup: bool
    owner: str
    tags: tuple[str, ...]
    default_args: dict[str, Any]
    doc_md: str
    tasks: tuple[TaskPlan, ...]
    #: asset URIs that also trigger this DAG (the monitor's retrain signal)
    schedule_on_assets: tuple[str, ...] = ()
    #: asset URIs this DAG's tasks may emit, by task id
    outlets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_active_runs: int = 1
    #: the name the Airflow UI shows, when it must say more than the id: Airflow 3's UI shows only the
    #: assets of a schedule that is "cron or assets", so a retrained DAG names its cron here
    display_name: str | None = None
    #: e-mail alerts on a failed task (``monitor.alerts`` with ``failure``): plain dicts with ``to``,
    #: ``conn_id``, ``from_email``, ``pipeline``; the renderer makes them Airflow notifiers
    #: (``on_failure_callback`` of every task)
    failure_alerts: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PipelinePlan:
    name: str
    source: str  # spec file, as shown to users
    spec_sha256: str
    dags: tuple[DagPlan, ...]

    def dag(self, dag_id: str) -> DagPlan | None:
        return next((d for d in self.dags if d.dag_id == dag_id), None)
