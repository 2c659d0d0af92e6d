"""The estimator a spec names: imported only from allowed modules (checked at run time too), and built
with the spec's parameters (``random_state`` from the pipeline's seed when it takes one)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from mlops_provider import config
from mlops_provider.exceptions import NotAllowedError, StageError


def estimator_class(dotted_path: str, allowed: tuple[str, ...] | None = None) -> type:
    """Import an estimator class; its module must be in the allow-list (checked again here, at run time)."""
    allowed = config.allowed_modules() if allowed is None else allowed
    if not config.module_allowed(dotted_path, allowed):
        raise NotAllowedError(
            f"estimator {dotted_path!r} is not allowed: its module is not in [mlops] allowed_modules "
            f"({', '.join(allowed)})"
        )
    module_name, _, class_name = dotted_path.rpartition(".")
    if not module_name:
        raise StageError(f"{dotted_path!r} is not a dotted path like sklearn.linear_model.Ridge")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(f"cannot import {module_name!r} for estimator {dotted_path!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise StageError(f"{module_name!r} has no class {class_name!r}")
    return cls


def build_estimator(
    estimator: str, params: Mapping[str, Any], seed: int | None
) -> tuple[Any, dict[str, Any]]:
    """The estimator ``estimator(**params)`` (``random_state`` from ``seed`` when it takes one)."""
    params = dict(params)
    cls = estimator_class(estimator)
    accepted = inspect.signature(cls).parameters
    if seed is not None and "random_state" in accepted and "random_state" not in params:
        params["random_state"] = seed
    try:
        return cls(**params), params
    except TypeError as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise StageError(f"{estimator}({args}): {exc}") from exc


def accepted_parameters(estimator: str) -> set[str]:
    """The keyword arguments the estimator class takes (what a search space may name)."""
    return {name for name in inspect.signature(estimator_class(estimator)).parameters if name != "self"}
