"""Plan → Airflow DAG. The only module of the factory that knows Airflow's classes."""

from __future__ import annotations

import datetime as dt
import importlib
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset

from mlops_provider.exceptions import SpecError

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from mlops_provider.plan.model import DagPlan

# Presets Airflow accepts as a schedule but a cron timetable (needed to combine with an asset) does not.
_PRESET_CRON = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@cache
def _operator_class(path: str) -> type[BaseOperator]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _asset(uri: str) -> Asset:
    return Asset(uri=uri, name=uri)


def _schedule(plan: DagPlan) -> Any:
    if not plan.schedule_on_assets:
        return plan.schedule
    assets = [_asset(uri) for uri in plan.schedule_on_assets]
    if plan.schedule is None:
        return assets
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    cron = _PRESET_CRON.get(plan.schedule, plan.schedule)
    timetable = CronTriggerTimetable(cron, timezone="UTC")
    return AssetOrTimeSchedule(timetable=timetable, assets=assets)  # type: ignore[arg-type]


def render_dag(plan: DagPlan) -> DAG:
    start = dt.datetime.combine(plan.start_date, dt.time(), tzinfo=dt.timezone.utc)
    with DAG(
        dag_id=plan.dag_id,
        description=plan.description,
        schedule=_schedule(plan),
        start_date=start,
        catchup=plan.catchup,
        tags=set(plan.tags),
        default_args=dict(plan.default_args),
        doc_md=plan.doc_md,
        max_active_runs=plan.max_active_runs,
        dag_display_name=plan.display_name or plan.dag_id,
        # only the DAGs the loader puts into the DAG file's namespace count: one whose build failed
        # half-way (a task's __init__ raised) must not be picked up by Airflow's auto-registration
        auto_register=False,
    ) as dag:
        tasks: dict[str, Any] = {}
        for task in plan.tasks:
            outlets = [_asset(uri) for uri in plan.outlets.get(task.task_id, ())]
            extra: dict[str, Any] = {"outlets": outlets} if outlets else {}
            if plan.failure_alerts:
                from mlops_provider.notifications.smtp import failure_notifiers

                extra["on_failure_callback"] = failure_notifiers(plan.failure_alerts)
            operator = _operator_class(task.operator)
            if task.expand:
                tasks[task.task_id] = operator.partial(
                    task_id=task.task_id, doc_md=task.doc or None, **task.kwargs, **extra
                ).expand(**task.expand)
            else:
                tasks[task.task_id] = operator(task_id=task.task_id, doc_md=task.doc or None, **task.kwargs,
                                               **extra)
        for task in plan.tasks:
            for upstream in task.upstream:
                tasks[upstream] >> tasks[task.task_id]
    return dag


class InvalidSpecsDag(DAG):
    """Carries the errors of every invalid spec into Airflow's import-errors list (never stored).

    Airflow's DagBag calls ``validate()`` on each DAG of a file and records the exception as that
    file's import error, ``"SpecError: <message>"`` without a traceback. Only
    :func:`~mlops_provider.loader.report_invalid_specs` builds one, in a file with no other DAG: the dag
    processor deactivates every DAG of a file that has an import error.
    """

    mlops_error: SpecError

    def validate(self) -> None:
        raise self.mlops_error


def render_invalid(error: SpecError, *, dag_id: str) -> DAG:
    dag = InvalidSpecsDag(dag_id=dag_id, schedule=None)
    dag.mlops_error = error
    return dag
