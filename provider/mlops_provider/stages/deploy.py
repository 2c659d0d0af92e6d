"""Deploy: move an alias (``@champion``) to the new version — only when every gate passed.

The previous holder is written on the new version (tag ``mlops.previous_<alias>``) *before* the alias
moves, and an audit record (who, which DAG run, from, to, why) is logged to the pipeline run
(``deploy/promotion.json``) and on the registered model (tag ``mlops.<alias>.last_promotion``). A retry
after the alias already moved finds it there and reports the same promotion again. :func:`rollback`
moves the alias back to the recorded previous holder (or to a chosen version) and records that move too.

Every move is also kept as one tag per move on the registered model (a JSON :class:`Promotion`), keyed
by the time of the move and a random suffix (``mlops.<alias>.move.20261205T010203.123456Z.3f9a1c``), so
two writers appending at once never overwrite each other's record (registry tags are upserts: a shared
counter would lose one); :func:`history` reads them in time order (with the numbered keys
``...move.000001`` of earlier releases first).

**Compare-and-swap.** Evaluate records which version held the alias when it compared the candidate
(``alias_at_evaluation`` in the verdict). :func:`promote` moves the alias only if it still points there:
if a person moved it in the MLflow UI, ``mlops rollback`` ran, or another run promoted while an approval
waited, deploy refuses (:class:`~mlops_provider.exceptions.ChampionChangedError`, not retried) and
changes nothing; clearing ``evaluate`` and its downstream tasks re-compares against the new holder.
Refusing rather than re-evaluating inside deploy keeps one place that decides (evaluate, with its
table in the log and its verdict on the run) and never promotes on a comparison nobody saw. MLflow has
no atomic alias update: the window left is between deploy's read of the alias and its write (two
registry calls); two pipelines cannot share a registered model (lint), and one pipeline's DAG runs
do not overlap (``max_active_runs=1``).

With serving targets (``deploy.targets``), a promotion and a rollback both go through
:func:`mlops_provider.serving.follow.follow`: the version is staged and health-checked on every target
before the alias moves, and the targets switch to it after; the record names the targets that followed
(``serving``). A failed check leaves the alias, the record and the live serving as they were.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import ChampionChangedError, GateFailedError
from mlops_provider.tracking import tags as T
from mlops_provider.tracking.models import resolve_alias
from mlops_provider.tracking.tags import NO_PREVIOUS, last_promotion_tag, move_tag_prefix, previous_tag

if TYPE_CHECKING:
    import logging

    from mlflow import MlflowClient

    from mlops_provider.tracking import MLflowAccess

PROMOTION_ARTIFACT = "deploy/promotion.json"


#: a move record's reason is cut to this many characters (registry tag values are bounded)
MAX_REASON_CHARS = 2000


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Promotion:
    model_name: str
    alias: str
    version: str
    previous_version: str | None
    promoted_by: str
    dag_id: str | None
    dag_run_id: str | None
    mlflow_run_id: str | None
    reason: str
    promoted_at: str = field(default_factory=_utc_now)
    #: the serving targets that switched to this version with the alias (``docker:<name>``, ...)
    serving: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_passed(verdict: dict[str, Any] | None, *, alias: str, version: str, evaluate_task_id: str) -> str:
    """The verdict's reason if it passed; otherwise refuse with a reason a data engineer can act on."""
    if not isinstance(verdict, dict) or "passed" not in verdict:
        raise GateFailedError(
            f"refusing to move @{alias} to version {version}: no evaluation verdict from task "
            f"{evaluate_task_id!r} in this DAG run (evaluate must run and pass before deploy)"
        )
    if verdict["passed"] is not True:
        raise GateFailedError(
            f"refusing to move @{alias} to version {version}: the evaluation gate did not pass: "
            f"{verdict.get('reason') or 'no reason recorded'}"
        )
    return str(verdict.get("reason") or "every gate passed")


def promote(
    client: MlflowClient,
    *,
    model_name: str,
    version: str,
    alias: str,
    verdict: dict[str, Any] | None,
    promoted_by: str,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    mlflow_run_id: str | None = None,
    evaluate_task_id: str = "evaluate",
    serving: Sequence[str] = (),
) -> Promotion:
    """Move ``@alias`` to ``version`` after checking the verdict; record the previous holder.

    ``serving`` names the targets checked for this move (:func:`mlops_provider.serving.follow.follow`).
    """
    version = str(version)
    why = require_passed(verdict, alias=alias, version=version, evaluate_task_id=evaluate_task_id)
    target = client.get_model_version(model_name, version)
    holder = resolve_alias(client, model_name, alias)
    if holder is not None and holder.version == version:
        recorded = target.tags.get(previous_tag(alias))
        previous = None if recorded in (None, NO_PREVIOUS) else recorded
    else:
        previous = holder.version if holder is not None else None
        _require_unchanged(
            client, verdict, model_name=model_name, alias=alias, version=version, current=previous
        )
        client.set_model_version_tag(model_name, version, previous_tag(alias), previous or NO_PREVIOUS)
        client.set_registered_model_alias(model_name, alias, version)
    promotion = Promotion(
        model_name=model_name,
        alias=alias,
        version=version,
        previous_version=previous,
        promoted_by=promoted_by,
        dag_id=dag_id,
        dag_run_id=dag_run_id,
        mlflow_run_id=mlflow_run_id,
        reason=why,
        serving=list(serving),
    )
    record(client, promotion)
    return promotion


def compared_holder(verdict: dict[str, Any] | None, alias: str) -> tuple[bool, str | None]:
    """(True, version) when evaluate recorded which version held ``@alias`` (None: none did)."""
    seen = verdict.get("alias_at_evaluation") if isinstance(verdict, dict) else None
    if not isinstance(seen, dict) or seen.get("alias") != alias:
        return False, None
    version = seen.get("version")
    return True, None if version is None else str(version)


def require_unchanged(
    client: MlflowClient, verdict: dict[str, Any] | None, *, model_name: str, alias: str, version: str
) -> None:
    """Refuse when ``@alias`` moved since evaluate compared ``version`` against its holder."""
    holder = resolve_alias(client, model_name, alias)
    current = holder.version if holder is not None else None
    if current != str(version):
        _require_unchanged(client, verdict, model_name=model_name, alias=alias, version=str(version),
                           current=current)  # fmt: skip


def _require_unchanged(
    client: MlflowClient,
    verdict: dict[str, Any] | None,
    *,
    model_name: str,
    alias: str,
    version: str,
    current: str | None,
) -> None:
    known, expected = compared_holder(verdict, alias)
    if not known or current == expected:
        return
    compared = f"v{expected}" if expected is not None else "no champion (no version held it)"
    now = f"holds v{current}" if current is not None else "is held by no version"
    how = "moved outside this provider (the MLflow UI or API)"
    moves = _moves(client, model_name, alias)
    if moves and moves[-1][1].get("version") == current:
        last = moves[-1][1]
        how = f"moved by {last.get('promoted_by')} at {last.get('promoted_at')}"
        if last.get("dag_run_id"):
            how += f" (DAG {last.get('dag_id')}, run {last.get('dag_run_id')})"
        if last.get("reason"):
            how += f": {str(last['reason'])[:200]}"
    raise ChampionChangedError(
        f"refusing to move {model_name}@{alias} to v{version}: evaluate compared it with {compared}, but "
        f"@{alias} now {now} ({how}). Nothing was changed. To compare against the current holder, clear "
        "`evaluate` and its downstream tasks in this DAG run, or trigger a new run."
    )


def record(client: MlflowClient, promotion: Promotion) -> None:
    """The audit trail: on the version, on the registered model, and on the pipeline run."""
    name, version, alias = promotion.model_name, promotion.version, promotion.alias
    client.set_model_version_tag(name, version, T.promoted_at_tag(alias), promotion.promoted_at)
    client.set_model_version_tag(name, version, T.promoted_by_tag(alias), promotion.promoted_by)
    summary = {k: v for k, v in promotion.as_dict().items() if k != "reason"}
    _upsert(client.set_registered_model_tag, name, last_promotion_tag(alias), json.dumps(summary))
    _append_move(client, promotion)
    if promotion.mlflow_run_id:
        from mlflow.entities import RunTag

        client.log_batch(
            promotion.mlflow_run_id,
            tags=[
                RunTag(T.alias_version_run_tag(alias), version),
                RunTag(T.previous_version_run_tag(alias), promotion.previous_version or NO_PREVIOUS),
            ],
        )
        record_json = json.dumps(promotion.as_dict(), indent=2)
        client.log_text(promotion.mlflow_run_id, record_json, PROMOTION_ARTIFACT)


def _upsert(set_tag: Any, *args: str) -> None:
    """Set a tag that a concurrent writer may be setting too: MLflow's stores insert a missing tag row, so
    two first writers of one key collide (an integrity error from the server); a second try updates."""
    from mlflow.exceptions import MlflowException

    for attempt in range(3):
        try:
            set_tag(*args)
            return
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.05 * (attempt + 1))


def _moves(client: MlflowClient, model_name: str, alias: str) -> list[tuple[str, dict[str, Any]]]:
    """(key suffix, record) of every move of ``@alias``, oldest first."""
    tags = client.get_registered_model(model_name).tags
    prefix = move_tag_prefix(alias)
    moves = []
    for key, value in tags.items():
        suffix = key[len(prefix) :]
        if key.startswith(prefix) and (suffix.isdigit() or _MOVE_KEY.match(suffix)):
            moves.append((suffix, json.loads(value)))
    # numbered keys (earlier releases) first, by number; then time-keyed ones, which sort as strings
    return sorted(moves, key=lambda item: (0, int(item[0]), "") if item[0].isdigit() else (1, 0, item[0]))


_MOVE_KEY = re.compile(r"^\d{8}T\d{6}\.\d{6}Z\.[0-9a-f]{6,}$")


def _move_key(alias: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{move_tag_prefix(alias)}{now}.{secrets.token_hex(3)}"


def _append_move(client: MlflowClient, promotion: Promotion) -> None:
    """One more move record under a key of its own; a retry that reports the same move again adds nothing."""
    name, alias = promotion.model_name, promotion.alias
    moves = _moves(client, name, alias)
    entry = promotion.as_dict()
    entry["reason"] = str(entry["reason"])[:MAX_REASON_CHARS]
    if moves:
        last = moves[-1][1]
        same = ("version", "previous_version", "dag_id", "dag_run_id", "promoted_by")
        if all(last.get(key) == entry.get(key) for key in same):
            return
    client.set_registered_model_tag(name, _move_key(alias), json.dumps(entry))


def history(client: MlflowClient, *, model_name: str, alias: str = "champion") -> list[dict[str, Any]]:
    """Every recorded move of ``@alias``, oldest first (:class:`Promotion` as dicts).

    A model promoted before moves were kept has only its last promotion (without its reason).
    """
    moves = [move for _, move in _moves(client, model_name, alias)]
    if not moves:
        last = client.get_registered_model(model_name).tags.get(last_promotion_tag(alias))
        if last:
            moves = [{**json.loads(last), "reason": None}]
    return moves


def _check_target(client: MlflowClient, model_name: str, version: str, *, alias: str, force: bool) -> None:
    from mlflow.exceptions import MlflowException

    try:
        target = client.get_model_version(model_name, version)
    except MlflowException as exc:
        raise GateFailedError(f"{model_name} has no version {version!r} to move @{alias} to") from exc
    verdict = target.tags.get(T.VERDICT)
    if verdict == "rejected" and not force:
        why = target.tags.get(T.VERDICT_REASON) or "no reason recorded"
        raise GateFailedError(
            f"refusing to move @{alias} to {model_name} v{version}: its evaluation rejected it ({why}); "
            "use --force to override"
        )


def rollback(
    client: MlflowClient,
    *,
    model_name: str,
    alias: str = "champion",
    to: str | None = None,
    reason: str | None = None,
    performed_by: str = "rollback",
    force: bool = False,
    hook: MLflowAccess | None = None,
    targets: Sequence[Mapping[str, Any]] = (),
    pipeline: str | None = None,
    target_column: str | None = None,
    log: logging.Logger | Any = None,
) -> tuple[str, str]:
    """Move ``@alias`` back to the version it held before the current one, or to version ``to``.

    Refuses a version whose evaluation rejected it unless ``force``. The move is recorded in the audit
    trail like a promotion (who = ``performed_by``, why = ``reason``). Returns ``(from, to)``; ``from`` is
    ``"none"`` when no version held the alias.

    With serving ``targets`` (and the ``hook`` of ``client``), the version is re-staged and health-checked
    on every target first; the alias moves only if all pass, and then the targets switch back too.
    """
    holder = resolve_alias(client, model_name, alias)
    if to is None:
        if holder is None:
            raise GateFailedError(f"{model_name} has no @{alias} to roll back")
        previous = client.get_model_version(model_name, holder.version).tags.get(previous_tag(alias))
        if previous in (None, NO_PREVIOUS):
            raise GateFailedError(
                f"{model_name}@{alias} (v{holder.version}) has no recorded previous holder to roll back to"
            )
        target = str(previous)
    else:
        target = str(to)
        if holder is not None and holder.version == target:
            raise GateFailedError(f"{model_name}@{alias} is already v{target}: nothing to roll back")
    _check_target(client, model_name, target, alias=alias, force=force)
    source = holder.version if holder is not None else None

    def move(serving: list[str]) -> None:
        client.set_registered_model_alias(model_name, alias, target)
        record(
            client,
            Promotion(
                model_name=model_name,
                alias=alias,
                version=target,
                previous_version=source,
                promoted_by=performed_by,
                dag_id=None,
                dag_run_id=None,
                mlflow_run_id=None,
                reason=reason or (f"rolled back from v{source}" if source else "rolled back"),
                serving=serving,
            ),
        )

    if targets:
        import logging

        from mlops_provider.serving.follow import follow

        if hook is None or pipeline is None:
            raise ValueError("rolling back serving targets needs the MLflow hook and the pipeline name")
        follow(hook, model_name=model_name, version=target, pipeline=pipeline, targets=targets,
               move_alias=move, log=log or logging.getLogger(__name__),
               target_column=target_column)  # fmt: skip
    else:
        move([])
    return source or NO_PREVIOUS, target
