"""The serving-target contract and the rollout that every deploy and rollback goes through.

A target implements four steps; :func:`rollout` calls them in this order for every target of a spec::

    prepare(candidate)  -> Staged    # start/stage the new version next to the live one; nothing switched
    check(staged)                    # send sample rows, compare with the model's own predictions
    --- the alias moves here (only if every target passed) ---
    commit(staged)                   # switch traffic to the new version, then retire the old one
    abort(staged)                    # on any failure before the switch: remove what prepare made

A failed ``prepare``/``check`` on any target aborts the staged ones and raises
:class:`~mlops_provider.exceptions.DeploymentCheckError`: the live serving and the alias are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import logging

    import pandas as pd

    from mlops_provider.tracking.models import ModelVersionRef


@dataclass(frozen=True)
class Candidate:
    """What is being deployed: one registered model version and how to check it."""

    model: ModelVersionRef
    pipeline: str
    #: feature rows for the health check (a pandas DataFrame; loaded lazily by the caller)
    sample: pd.DataFrame
    #: the model's own predictions on ``sample`` (what the target must answer, within tolerance)
    expected: Sequence[Any]
    #: a local directory holding the downloaded MLflow model (targets may mount or pack it)
    local_model_dir: str


@dataclass
class Staged:
    """A candidate staged on one target (from ``prepare``; targets keep their own state in ``info``)."""

    target: str  # the target's display name, e.g. "docker:breast_cancer-serving"
    version: str
    endpoint: str | None = None  # URL or endpoint name the candidate answers on
    info: dict[str, Any] = field(default_factory=dict)


class ServingTarget(Protocol):
    #: display name used in logs, errors and the audit trail, e.g. "docker:breast_cancer-serving"
    name: str

    def live_version(self) -> str | None:
        """The model version this target serves now (None: nothing deployed yet)."""

    def prepare(self, candidate: Candidate) -> Staged: ...

    def check(self, staged: Staged, candidate: Candidate) -> None:
        """Raise DeploymentCheckError naming the target and what differed."""

    def commit(self, staged: Staged) -> None: ...

    def abort(self, staged: Staged) -> None: ...


def make_target(config: Mapping[str, Any], *, pipeline: str, log: logging.Logger | Any) -> ServingTarget:
    """A target from one ``deploy.targets`` entry (``spec.deploy.targets[i].model_dump()``)."""
    kind = config.get("type")
    if kind == "docker":
        from mlops_provider.serving.docker import DockerServingTarget

        return DockerServingTarget(config, pipeline=pipeline, log=log)
    if kind == "sagemaker":
        from mlops_provider.serving.sagemaker import SageMakerServingTarget

        return SageMakerServingTarget(config, pipeline=pipeline, log=log)
    raise ValueError(f"unknown serving target type {kind!r}")


def rollout(
    targets: Sequence[ServingTarget],
    candidate: Candidate,
    *,
    move_alias: Callable[[], Any],
    log: logging.Logger | Any,
    committed: list[Staged] | None = None,
) -> Any:
    """Prepare and check every target, then ``move_alias()``, then commit every target.

    Returns what ``move_alias`` returned; ``committed``, if given, receives each committed
    :class:`Staged` (its ``endpoint`` is the live address). Any failure before the alias moves aborts
    every staged candidate and re-raises: the alias and the live serving stay as they were.
    """
    staged: list[tuple[ServingTarget, Staged]] = []
    try:
        for target in targets:
            log.info("%s: staging %s v%s", target.name, candidate.model.name, candidate.model.version)
            item = target.prepare(candidate)
            staged.append((target, item))
            target.check(item, candidate)
            log.info("%s: v%s passed its health check", target.name, candidate.model.version)
        result = move_alias()
    except BaseException:
        for target, item in reversed(staged):
            try:
                target.abort(item)
            except Exception:  # keep the original error; the abort failure is logged
                log.exception("%s: could not remove the staged v%s", target.name, item.version)
        raise
    for target, item in staged:
        target.commit(item)
        if committed is not None:
            committed.append(item)
        log.info("%s: now serving v%s at %s", target.name, item.version, item.endpoint)
    return result


# --------------------------------------------------------------------------------------------------
# the health check's verdict, shared by every target
# --------------------------------------------------------------------------------------------------
#: how many differing rows an error message lists
SHOWN_DIFFERENCES = 5


def require_same_answers(what: str, answered: Any, expected: Sequence[Any], *, tolerance: float) -> None:
    """Raise DeploymentCheckError unless a model server's answer (MLflow's ``{"predictions": ...}``
    or a bare list) equals the model's own predictions within ``tolerance``."""
    from mlops_provider.exceptions import DeploymentCheckError

    predictions = answered.get("predictions", answered) if isinstance(answered, dict) else answered
    differences = compare(expected, predictions, tolerance=tolerance)
    if differences:
        raise DeploymentCheckError(
            f"{what} answered {len(differences)} of {len(expected)} sample rows differently from the "
            f"model's own predictions (tolerance {tolerance:g}): "
            + "; ".join(differences[:SHOWN_DIFFERENCES])
        )


def _flat(values: Any) -> list[Any]:
    import numpy as np

    if isinstance(values, Mapping):  # a dict of columns (some pyfunc models)
        values = list(zip(*values.values(), strict=False))
    array = np.asarray(values, dtype=object)
    return [v.tolist() if hasattr(v, "tolist") else v for v in array.reshape(len(array), -1).tolist()]


def compare(expected: Sequence[Any], answered: Any, *, tolerance: float) -> list[str]:
    """What differs between the model's own predictions and a server's answers (row by row)."""
    want, got = _flat(expected), _flat(answered)
    if len(want) != len(got):
        return [f"{len(got)} predictions for {len(want)} rows"]
    differences = []
    for row, (a, b) in enumerate(zip(want, got, strict=True)):
        if len(a) != len(b) or not all(_close(x, y, tolerance) for x, y in zip(a, b, strict=False)):
            show_a, show_b = (a[0], b[0]) if len(a) == len(b) == 1 else (a, b)
            differences.append(f"row {row}: expected {show_a!r}, got {show_b!r}")
    return differences


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return bool(a == b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= tolerance
