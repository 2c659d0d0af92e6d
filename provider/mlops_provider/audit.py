"""``mlops history`` and ``mlops rollback``: the alias moves of a spec's registered model, and undoing one.

The spec names the model (``mlflow.model``, else the pipeline name), the alias (``deploy.alias``) and the
MLflow connection (``mlflow.conn_id``, then ``mlflow_default``, ``MLFLOW_TRACKING_URI``, the embedded store
under the project root), exactly as the pipeline's own tasks resolve them. The moves themselves are read
and written by :mod:`mlops_provider.stages.deploy`.

A rollback takes the spec's serving targets (``deploy.targets``) along: the version is staged and
health-checked on each of them before the alias moves back, and they switch to it after; a failed check
leaves the alias and the serving as they were (exit code 1).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.exceptions import (
    DeploymentCheckError,
    GateFailedError,
    ServiceUnavailableError,
    SpecError,
)

if TYPE_CHECKING:
    from mlops_provider.hooks.mlflow import MLflowHook

ROLLBACK_BY = "mlops rollback"


@dataclass(frozen=True)
class Target:
    """The registered model and alias a spec deploys to, and the hook to reach its registry."""

    model_name: str
    alias: str
    hook: MLflowHook
    pipeline: str = ""
    #: ``deploy.targets`` as JSON-able mappings: a rollback makes them follow the alias
    serving: Sequence[Mapping[str, Any]] = field(default_factory=list)
    target_column: str | None = None


def target_of(spec: Path, project_root: Path | None = None) -> Target:
    """Load the spec (raises :class:`SpecError`) and resolve its model, alias and MLflow hook."""
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.run import load

    loaded = load(spec, project_root)
    if config.get("project_root") is None or project_root is not None:
        # the embedded store lives under the project root: the same one `mlops run` would use
        os.environ["AIRFLOW__MLOPS__PROJECT_ROOT"] = str(
            (project_root or config.project_root(spec)).resolve()
        )
    assert loaded.spec is not None
    return Target(
        model_name=loaded.spec.model_name,
        alias=loaded.spec.deploy.alias,
        hook=MLflowHook(mlflow_conn_id=loaded.spec.mlflow.conn_id),
        pipeline=loaded.spec.name,
        serving=[t.model_dump(mode="json", exclude_none=True) for t in loaded.spec.deploy.targets],
        target_column=loaded.spec.ingest.target,
    )


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid {os.getuid()}"


def who(move: dict[str, Any]) -> str:
    if move.get("dag_run_id"):
        return f"{move.get('dag_id')} / {move['dag_run_id']}"
    return str(move.get("promoted_by") or "?")


def moves_of(target: Target) -> list[dict[str, Any]]:
    """The alias moves, oldest first, with ``time``/``from``/``to``/``who``/``why`` added for people."""
    from mlflow.exceptions import MlflowException

    from mlops_provider.stages.deploy import history

    try:
        moves = history(target.hook.client, model_name=target.model_name, alias=target.alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return []
        raise
    return [
        {
            "time": move.get("promoted_at"),
            "from": move.get("previous_version"),
            "to": move.get("version"),
            "who": who(move),
            "why": move.get("reason"),
            **move,
        }
        for move in moves
    ]


def history_command(spec: Path, *, as_json: bool = False, project_root: Path | None = None) -> int:
    """``mlops history``: print the moves; 0, or 2 for an invalid spec."""
    try:
        target = target_of(spec, project_root)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    moves = moves_of(target)
    if as_json:
        print(
            json.dumps(
                {"model_name": target.model_name, "alias": target.alias, "moves": moves},
                indent=2,
                default=str,
            )
        )
        return 0
    if not moves:
        print(f"{target.model_name}@{target.alias}: no recorded moves", file=sys.stderr)
        return 0
    print(f"{target.model_name}@{target.alias}: {len(moves)} move(s), oldest first")
    for move in moves:
        source = f"v{move['from']}" if move["from"] else "(none)"
        serving = f"  serving followed: {', '.join(move['serving'])}" if move.get("serving") else ""
        print(
            f"{move['time']}  {source} -> v{move['to']}  by {move['who']}  why: {move['why'] or '-'}{serving}"
        )
    return 0


def rollback_command(
    spec: Path,
    *,
    to: str | None = None,
    reason: str | None = None,
    force: bool = False,
    project_root: Path | None = None,
) -> int:
    """``mlops rollback``: move the alias back, print ``from -> to``; 0, 1 if refused, 2 for a bad spec."""
    from mlflow.exceptions import MlflowException

    from mlops_provider.stages.deploy import rollback

    try:
        target = target_of(spec, project_root)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        source, destination = rollback(
            target.hook.client,
            model_name=target.model_name,
            alias=target.alias,
            to=to,
            reason=reason,
            performed_by=f"{ROLLBACK_BY} ({os_user()})",
            force=force,
            hook=target.hook,
            targets=target.serving,
            pipeline=target.pipeline,
            target_column=target.target_column,
            log=_stderr_log(),
        )
    except (GateFailedError, DeploymentCheckError, ServiceUnavailableError) as exc:
        print(f"mlops rollback: {exc}", file=sys.stderr)
        if target.serving and not isinstance(exc, GateFailedError):
            print(f"mlops rollback: {target.model_name}@{target.alias} did not move", file=sys.stderr)
        return 1
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            print(
                f"mlops rollback: {target.model_name} is not registered: nothing to roll back",
                file=sys.stderr,
            )
            return 1
        raise
    shown = f"v{source}" if source != "none" else "(none)"
    print(f"{target.model_name}@{target.alias}: {shown} -> v{destination}")
    if target.serving:
        from mlops_provider.tracking.tags import serving_url_tag

        tags = target.hook.client.get_registered_model(target.model_name).tags
        for name in _serving_names(target):
            print(f"{name}: serving v{destination} at {tags.get(serving_url_tag(name), '?')}")
    return 0


def _serving_names(target: Target) -> list[str]:
    """The names the last recorded move gives its serving targets."""
    moves = moves_of(target)
    return list(moves[-1].get("serving") or []) if moves else []


class _StderrLog:
    """Progress of the serving rollout on stderr (stdout keeps the one-line result)."""

    def info(self, msg: str, *args: Any) -> None:
        print(msg % args if args else msg, file=sys.stderr)

    warning = error = exception = info


def _stderr_log() -> Any:
    return _StderrLog()
