"""The ``<name>_serve`` DAG: serving targets follow the alias, also when a person moves it in MLflow.

A spec with ``deploy.targets`` gets a continuous DAG of three tasks::

    served_version  ->  wait_for_alias (MLflowModelVersionSensor, deferrable)  ->  sync_serving

``served_version`` asks the targets which version they serve; the sensor waits until ``@alias`` points at
another one (at once if it already does); ``sync_serving`` stages, health-checks and switches every target
to the alias's holder — the same rollout as a deploy, except that the alias is not moved (a person or a
rollback already moved it). A failed health check fails ``sync_serving`` and leaves the targets serving
the old version; the next run tries again. A quiet period ends the sensor as *skipped* (``soft_fail``) and
the next run starts waiting again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: what ``served_version`` returns when the targets serve nothing, or not all the same version
NOTHING_SERVED = "none"


class _ServingOperator(MLflowStageOperator):
    template_fields: Sequence[str] = ("alias",)
    ui_color = "#d6ecff"

    def __init__(
        self,
        *,
        targets: Sequence[Mapping[str, Any]],
        alias: str = "champion",
        target_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not targets:
            raise ValueError("targets must name at least one serving target")
        self.targets = [dict(t) for t in targets]
        self.alias = alias
        self.target_column = target_column


class ServedVersionOperator(_ServingOperator):
    """What the targets serve: ``{"version": V, "targets": {name: V or None}}``; ``version`` is ``"none"``
    when nothing is served, or not the same version everywhere."""

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.serving.base import make_target

        served = {}
        for config in self.targets:
            target = make_target(config, pipeline=self.pipeline, log=self.log)
            served[target.name] = target.live_version()
        self.log.info("Serving now: %s", ", ".join(f"{k}: v{v}" for k, v in served.items()))
        versions = set(served.values())
        same = str(versions.pop()) if len(versions) == 1 and None not in versions else NOTHING_SERVED
        return {"version": same, "targets": served}


class SyncServingOperator(_ServingOperator):
    """Make every serving target serve the version that holds ``@alias`` now (the alias is not moved).

    Stages and health-checks it on every target first (:func:`mlops_provider.serving.follow.follow`); a failed
    check fails the task with the targets still serving what they served. Returns the version and each
    target's live address.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.serving.follow import follow
        from mlops_provider.tracking.models import require_alias

        holder = require_alias(self.hook.client, self.model_name, self.alias, hint="nothing to serve")
        version = holder.version
        followed = follow(
            self.hook,
            model_name=self.model_name,
            version=version,
            pipeline=self.pipeline,
            targets=self.targets,
            move_alias=lambda names: self.log.info(
                "%s@%s is v%s: %s follow", self.model_name, self.alias, version, ", ".join(names)
            ),
            log=self.log,
            target_column=self.target_column,
        )
        self.persist_model_version_link(context, name=self.model_name, version=version)
        return {"model_name": self.model_name, "alias": self.alias, "version": version,
                "serving": followed.endpoints}  # fmt: skip
