"""Airflow names whose home moved between the supported Airflow versions (3.1 to 3.3), imported once, here.

Airflow's ``common.compat`` provider resolves each to wherever the running Airflow keeps it (e.g.
``AirflowFailException``: ``airflow.exceptions`` on 3.1, ``airflow.sdk.exceptions`` on 3.2+); the rest of
the package imports them from this module only.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    DownstreamTasksSkipped,
    TaskInstanceKey,
    conf,
    get_listener_manager,
)

__all__ = [
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "DownstreamTasksSkipped",
    "TaskInstanceKey",
    "conf",
    "get_listener_manager",
]
