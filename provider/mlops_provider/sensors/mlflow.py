"""Wait for the MLflow model registry: an alias that moves to a new version, or a version's state/tags.

A deploy DAG can follow promotions made by a person in the MLflow UI::

    MLflowModelVersionSensor(task_id="wait_for_champion", model_name="churn", alias="champion",
                             deferrable=True, poke_interval=60, timeout=7 * 24 * 3600)

fires once ``@champion`` points at a version other than the one it held when the task started, and
returns that version's ``name``, ``version``, ``alias``, ``run_id``, ``source``, ``tags`` (and
``previous_version``) as XCom, with an extra link to the version in the MLflow UI.

Where the starting version is kept: resolved at the first check and carried by the trigger's kwargs
(deferrable mode, survives a triggerer restart once resolved) or by the running task (poke mode).
Reschedule mode would lose it between reschedules, so it is refused unless ``not_version`` or ``version``
pins the condition. A retry starts a new wait from the alias's then-current version; to pin the baseline
across retries, template ``not_version`` (e.g. from the XCom of the task that last deployed).

Errors: an unreachable tracking server is waited out (a warning per check) until ``timeout``, or until
``unreachable_timeout`` seconds without an answer if set. A ``timeout`` fails the task without retries
(``AirflowSensorTimeout``, or skipped with ``soft_fail``) with a message that says what was awaited and
names the server when the last checks could not reach it. Passing ``unreachable_timeout`` fails it with
``ServiceUnavailableError`` naming the server, in both modes: a server that is down is transient, so the
task's retries apply (each retry starts a new wait). Other errors (wrong credentials, a version whose
registration failed) fail at once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from mlops_provider.compat import AirflowSensorTimeout, conf
from mlops_provider.exceptions import ServiceUnavailableError, StageError
from mlops_provider.links.mlflow import MLflowModelVersionLink
from mlops_provider.operators.base import FailFast
from mlops_provider.triggers.mlflow import MLflowModelVersionTrigger, ModelVersionWatch

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_provider.hooks.mlflow import MLflowHook

__all__ = ["MLflowModelVersionSensor"]

_STATUSES = ("READY", "PENDING_REGISTRATION", "FAILED_REGISTRATION")


class MLflowModelVersionSensor(FailFast, BaseSensorOperator):
    """Wait until ``alias`` points at a new version, or until ``version`` reaches ``status`` and ``tags``.

    :param model_name: registered model name. Templated.
    :param alias: alias to follow (e.g. ``champion``). Templated.
    :param version: without ``alias``: the version whose state/tags to wait for; with ``alias``: wait
        until the alias points at this version. Templated.
    :param status: the version's required status (``READY``, the default); ``None`` accepts any.
    :param tags: tags the version must all carry with these values. Templated.
    :param not_version: the alias must point at a version other than this one. Default (``alias``
        without ``version``): the version the alias held when the sensor started; an alias that is not set
        yet fires on its first assignment. Templated.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``; see :class:`MLflowHook` for fallbacks.
    :param deferrable: wait in the triggerer (no worker slot held). Default: ``[operators]
        default_deferrable``.
    :param unreachable_timeout: fail after this many seconds without reaching the tracking server;
        default: wait it out until ``timeout``.
    :param poke_interval: seconds between checks (also the trigger's).
    :param timeout: seconds to wait in all before failing.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "version", "not_version", "tags")
    ui_color = "#e8f4fd"
    operator_extra_links = (MLflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        alias: str | None = None,
        version: str | None = None,
        status: str | None = "READY",
        tags: Mapping[str, str] | None = None,
        not_version: str | None = None,
        mlflow_conn_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        unreachable_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not model_name:
            raise ValueError("model_name is required")
        if not alias and version in (None, ""):
            raise ValueError("give alias (wait for it to move) or version (wait for its state/tags), or both")
        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)} or None, not {status!r}")
        if self.mode == "reschedule" and not deferrable and alias and version is None and not_version is None:
            raise ValueError(
                "reschedule mode cannot remember which version the alias held when the sensor started; "
                "use deferrable=True or mode='poke', or pass not_version"
            )
        self.model_name = model_name
        self.alias = alias
        self.version = None if version is None else str(version)
        self.status = status
        self.tags = dict(tags or {})
        self.not_version = None if not_version is None else str(not_version)
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        self.unreachable_timeout = unreachable_timeout
        self._watch: ModelVersionWatch | None = None
        self._unreachable_since: float | None = None
        self._last_outage: str | None = None

    @cached_property
    def hook(self) -> MLflowHook:
        from mlops_provider.hooks.mlflow import MLflowHook

        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def _new_watch(self) -> ModelVersionWatch:
        return ModelVersionWatch(
            model_name=self.model_name,
            alias=self.alias,
            version=self.version,
            status=self.status,
            tags=self.tags,
            not_version=self.not_version,
            capture_not_version=bool(self.alias) and not self.version and not self.not_version,
        )

    @property
    def watch(self) -> ModelVersionWatch:
        if self._watch is None:
            self._watch = self._new_watch()
        return self._watch

    def execute(self, context: Context) -> Any:
        self._watch = self._new_watch()
        self.log.info("Waiting for %s", self.watch.describe())
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as exc:
                raise AirflowSensorTimeout(self._timeout_message(str(exc))) from exc
        first = self.poke(context)
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        self.defer(
            trigger=MLflowModelVersionTrigger(
                **self.watch.as_kwargs(),
                mlflow_conn_id=self.mlflow_conn_id,
                poke_interval=self.poke_interval,
                end_time=time.time() + self.timeout,
                unreachable_timeout=self.unreachable_timeout,
            ),
            method_name="execute_complete",
            # the trigger times itself out with a clearer message; this is Airflow's backstop
            timeout=dt.timedelta(seconds=self.timeout + self.poke_interval + 60),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        capturing = self.watch.capture_not_version
        try:
            info = self.watch.check(self.hook)
        except ServiceUnavailableError as exc:
            self._note_outage(exc)
            return False
        if self._unreachable_since is not None:
            self.log.info("The tracking server answers again")
        self._unreachable_since, self._last_outage = None, None
        if capturing and not self.watch.capture_not_version:
            self.log.info(
                "@%s of %r is at version %s; waiting for it to move",
                self.alias,
                self.model_name,
                self.watch.not_version or "(unset)",
            )
        if info is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._fired(context, info))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event:
            raise StageError("the MLflow model version trigger ended without an event")
        if event.get("status") == "success":
            return self._fired(context, event["model_version"])
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(event.get("message") or "timed out")
        if event.get("status") == "unreachable":  # as in poke mode: a server down is what retries are for
            raise ServiceUnavailableError(event.get("message") or "the tracking server is unreachable")
        raise StageError(event.get("message") or f"the MLflow model version trigger failed: {event}")

    def _fired(self, context: Context, info: dict[str, Any]) -> dict[str, Any]:
        MLflowModelVersionLink.persist(
            context, tracking_uri=self.hook.tracking_uri, name=info["name"], version=info["version"]
        )
        previous = f" (was {info['previous_version']})" if info.get("previous_version") else ""
        where = f"@{info['alias']} -> " if info.get("alias") else ""
        self.log.info(
            "%sversion %s of %r%s, run %s", where, info["version"], info["name"], previous, info.get("run_id")
        )
        return info

    def _note_outage(self, exc: ServiceUnavailableError) -> None:
        now = time.monotonic()
        self._unreachable_since = self._unreachable_since or now
        self._last_outage = str(exc)
        down_for = now - self._unreachable_since
        if self.unreachable_timeout is not None and down_for > self.unreachable_timeout:
            raise ServiceUnavailableError(
                f"{exc} (for {down_for:.0f} s, more than unreachable_timeout="
                f"{self.unreachable_timeout:.0f} s) while waiting for {self.watch.describe()}"
            ) from exc
        self.log.warning("%s; still waiting", exc)

    def _timeout_message(self, airflow_message: str) -> str:
        message = f"{airflow_message} Waited for {self.watch.describe()} at {self.hook.tracking_uri}"
        if self._last_outage:
            message += f"; the last checks failed: {self._last_outage}"
        return message
