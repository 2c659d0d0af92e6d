"""Wait, in the triggerer, for a registered model version: an alias that moves, or a version's state/tags.

:class:`ModelVersionWatch` is the condition, shared by the sensor's ``poke`` and the trigger's ``run``, so
both fire on exactly the same thing. The trigger runs the blocking MLflow client calls in a worker thread;
this module imports no MLflow at module level (the triggerer and the DAG parser import it).

Transient errors: a tracking server that cannot be reached is waited out (logged each poll) until the
deadline, or until ``unreachable_timeout`` seconds without a successful check if that is set; the error
event then names the server. Any other error (wrong credentials, a bad request) ends the wait at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops_provider.exceptions import ServiceUnavailableError, WatchFailedError

if TYPE_CHECKING:
    from mlops_provider.hooks.mlflow import MLflowHook

__all__ = ["MLflowModelVersionTrigger", "ModelVersionWatch"]


@dataclass
class ModelVersionWatch:
    """The condition a model-version sensor waits for.

    With ``alias``: the alias must point at a version that meets ``status`` and ``tags``; that version must
    be ``version`` if given, else any version other than ``not_version``. With ``capture_not_version`` the
    first successful check records the alias's current holder as ``not_version`` (so only a *move* fires).
    Without ``alias``: version ``version`` must exist and meet ``status`` and ``tags``.
    """

    model_name: str
    alias: str | None = None
    version: str | None = None
    status: str | None = "READY"
    tags: dict[str, str] = field(default_factory=dict)
    not_version: str | None = None
    capture_not_version: bool = False

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name is required")
        if not self.alias and not self.version:
            raise ValueError("give alias (wait for it to move) or version (wait for its state/tags), or both")
        self.alias = self.alias or None
        self.version = None if self.version in (None, "") else str(self.version)
        self.not_version = None if self.not_version in (None, "") else str(self.not_version)
        self.tags = {str(k): str(v) for k, v in (self.tags or {}).items()}
        if self.capture_not_version and (not self.alias or self.version or self.not_version):
            self.capture_not_version = False

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """What is awaited, for log lines and error messages."""
        wanted = []
        if self.status:
            wanted.append(f"status {self.status}")
        if self.tags:
            wanted.append("tags " + ", ".join(f"{k}={v}" for k, v in sorted(self.tags.items())))
        extra = f" with {' and '.join(wanted)}" if wanted else ""
        if self.alias and self.version:
            return (
                f"alias @{self.alias} of model {self.model_name!r} to point at version {self.version}" + extra
            )
        if self.alias:
            away = f" other than {self.not_version}" if self.not_version else ""
            return f"alias @{self.alias} of model {self.model_name!r} to point at a version{away}{extra}"
        return f"version {self.version} of model {self.model_name!r}{extra}"

    def check(self, hook: MLflowHook) -> dict[str, Any] | None:
        """One look at the registry: the version's info when the condition holds, else ``None``.

        Raises :class:`ServiceUnavailableError` when the server cannot be reached (worth waiting out) and
        :class:`WatchFailedError` when the awaited version can never get there.
        """
        from mlflow.exceptions import MlflowException

        hook.check_available()
        client = hook.client
        try:
            if self.alias:
                holder = client.get_registered_model(self.model_name).aliases.get(self.alias)
                if self.capture_not_version:
                    self.not_version = None if holder is None else str(holder)
                    self.capture_not_version = False
                    return None
                if holder is None or str(holder) == self.not_version:
                    return None
                if self.version is not None and str(holder) != self.version:
                    return None
                model_version = client.get_model_version(self.model_name, str(holder))
            else:
                model_version = client.get_model_version(self.model_name, str(self.version))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # the model or version is not registered yet
                return None
            raise
        if self.status and model_version.status != self.status:
            if model_version.status == "FAILED_REGISTRATION" and not self.alias:
                raise WatchFailedError(
                    f"version {model_version.version} of model {self.model_name!r} failed to register "
                    f"({model_version.status_message or 'no message'}); it will never be {self.status}"
                )
            return None
        version_tags = dict(model_version.tags or {})
        if any(version_tags.get(key) != value for key, value in self.tags.items()):
            return None
        return {
            "name": model_version.name,
            "version": str(model_version.version),
            "alias": self.alias,
            "aliases": sorted(model_version.aliases or []),
            "status": model_version.status,
            "run_id": model_version.run_id,
            "source": model_version.source,
            "tags": version_tags,
            "previous_version": self.not_version if self.alias else None,
        }


class MLflowModelVersionTrigger(BaseTrigger):
    """Fire once the registry meets a :class:`ModelVersionWatch` condition (see its docstring).

    Events: ``{"status": "success", "model_version": {...}}``; or ``{"status": "timeout" | "unreachable" |
    "error", "message": ...}``.

    :param model_name: registered model name.
    :param alias: alias to watch.
    :param version: version to wait for (alone: its status/tags; with ``alias``: the alias to reach it).
    :param status: required version status (``READY``); ``None`` accepts any.
    :param tags: tags the version must all carry, with these values.
    :param not_version: the alias must point at a version other than this one.
    :param capture_not_version: take ``not_version`` from the alias at the first successful check.
    :param mlflow_conn_id: Airflow connection of type ``mlflow`` (only its id is serialized, never a secret).
    :param poke_interval: seconds between checks.
    :param end_time: UNIX time at which to give up with a ``timeout`` event; ``None`` waits forever.
    :param unreachable_timeout: give up with an ``unreachable`` event after this many seconds without reaching
        the tracking server; ``None`` waits it out until ``end_time``.
    """

    def __init__(
        self,
        *,
        model_name: str,
        alias: str | None = None,
        version: str | None = None,
        status: str | None = "READY",
        tags: Mapping[str, str] | None = None,
        not_version: str | None = None,
        capture_not_version: bool = False,
        mlflow_conn_id: str | None = None,
        poke_interval: float = 60.0,
        end_time: float | None = None,
        unreachable_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.watch = ModelVersionWatch(
            model_name=model_name,
            alias=alias,
            version=version,
            status=status,
            tags=dict(tags or {}),
            not_version=not_version,
            capture_not_version=capture_not_version,
        )
        self.mlflow_conn_id = mlflow_conn_id
        self.poke_interval = float(poke_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.unreachable_timeout = None if unreachable_timeout is None else float(unreachable_timeout)
        self._hook: MLflowHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self.watch.as_kwargs(),
                "mlflow_conn_id": self.mlflow_conn_id,
                "poke_interval": self.poke_interval,
                "end_time": self.end_time,
                "unreachable_timeout": self.unreachable_timeout,
            },
        )

    def _check(self) -> dict[str, Any] | None:
        if self._hook is None:
            from mlops_provider.hooks.mlflow import MLflowHook

            self._hook = MLflowHook(mlflow_conn_id=self.mlflow_conn_id)
        return self.watch.check(self._hook)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("Waiting for %s", self.watch.describe())
        unreachable_since: float | None = None
        last_outage: str | None = None
        while True:
            try:
                info = await asyncio.to_thread(self._check)
            except ServiceUnavailableError as exc:
                unreachable_since = unreachable_since or time.time()
                last_outage = str(exc)
                self.log.warning("%s; still waiting", exc)
                down_for = time.time() - unreachable_since
                if self.unreachable_timeout is not None and down_for > self.unreachable_timeout:
                    message = (
                        f"{exc} (for {down_for:.0f} s, more than unreachable_timeout="
                        f"{self.unreachable_timeout:.0f} s) while waiting for {self.watch.describe()}"
                    )
                    yield TriggerEvent({"status": "unreachable", "message": message})
                    return
                info = None
            except Exception as exc:  # not transient: wrong credentials, a failed registration, a bad name
                message = (
                    f"{type(exc).__name__}: {exc} (while waiting for {self.watch.describe()}{self._server()})"
                )
                yield TriggerEvent({"status": "error", "message": message})
                return
            else:
                if unreachable_since is not None:
                    self.log.info("The tracking server answers again")
                unreachable_since, last_outage = None, None
            if info is not None:
                self.log.info("Fired: version %s of model %r", info["version"], info["name"])
                yield TriggerEvent({"status": "success", "model_version": info})
                return
            if self.end_time is not None and time.time() >= self.end_time:
                yield TriggerEvent({"status": "timeout", "message": self.timeout_message(last_outage)})
                return
            pause = self.poke_interval
            if self.end_time is not None:
                pause = max(0.0, min(pause, self.end_time - time.time()))
            await asyncio.sleep(pause)

    def _server(self) -> str:
        try:
            return "" if self._hook is None else f" at {self._hook.tracking_uri}"
        except Exception:
            return ""

    def timeout_message(self, last_outage: str | None = None) -> str:
        message = f"Timed out waiting for {self.watch.describe()}{self._server()}"
        if last_outage:
            return f"{message}; the last checks failed: {last_outage}"
        return message
