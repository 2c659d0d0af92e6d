"""One registered model version: the reference to it, the alias that points at it, the model inside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import DataValidationError, NoAliasHolderError

if TYPE_CHECKING:
    from mlflow import MlflowClient


def model_uri(name: str, version: str | int) -> str:
    """``models:/<name>/<version>``: a concrete version, never an alias (aliases move)."""
    return f"models:/{name}/{version}"


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version, and the alias it was found under (if any) at the time it was resolved.

    Whatever uses a model resolves ``@alias`` once and then works on this concrete version, so a
    promotion in the middle (a person in the MLflow UI, another pipeline) cannot mix two models.
    """

    name: str
    version: str
    alias: str | None = None
    run_id: str | None = None  # the MLflow run that logged it (the pipeline run, for ours)

    @property
    def uri(self) -> str:
        return model_uri(self.name, self.version)

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")


def resolve_alias(client: MlflowClient, name: str, alias: str) -> ModelVersionRef | None:
    """The version holding ``@alias`` now, or ``None`` when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return ModelVersionRef(name, str(version.version), alias, version.run_id or None)


def require_alias(client: MlflowClient, name: str, alias: str, *, hint: str = "train and promote first") -> (
    ModelVersionRef
):
    """:func:`resolve_alias`, or :class:`NoAliasHolderError` (retrying cannot make a champion appear)."""
    ref = resolve_alias(client, name, alias)
    if ref is None:
        raise NoAliasHolderError(f"no version of registered model {name!r} holds @{alias}: {hint}")
    return ref


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score, and what MLflow knows of its inputs."""

    model: Any
    flavor: str  # "sklearn" (the native object: predict_proba, the fitted pipeline's steps) or "pyfunc"
    #: (name, MLflow type) of the signature's input columns, if it has a column-based signature
    inputs: list[tuple[str, str]] | None = None


def load_model(uri: str, *, flavor: str = "auto") -> LoadedModel:
    """The model of ``uri``: the native scikit-learn object when it has that flavor and ``flavor`` is
    ``auto``, else MLflow's pyfunc. Uses MLflow's module-level tracking/registry URI: call it inside
    ``MLflowHook.activate()``."""
    if flavor not in ("auto", "pyfunc"):
        raise ValueError(f"flavor must be auto or pyfunc, not {flavor!r}")
    from mlflow.models import get_model_info

    info = get_model_info(uri)
    inputs = _signature_inputs(info.signature)
    if flavor == "auto" and "sklearn" in info.flavors:
        import mlflow.sklearn

        return LoadedModel(mlflow.sklearn.load_model(uri), "sklearn", inputs)
    import mlflow.pyfunc

    return LoadedModel(mlflow.pyfunc.load_model(uri), "pyfunc", inputs)


def input_columns(uri: str) -> list[str] | None:
    """The raw columns the model takes (its signature's inputs), without loading it; None if unnamed.
    Uses MLflow's module-level URIs: call it inside ``MLflowHook.activate()``."""
    from mlflow.models import get_model_info

    inputs = _signature_inputs(get_model_info(uri).signature)
    return [name for name, _ in inputs] if inputs else None


def _signature_inputs(signature: Any) -> list[tuple[str, str]] | None:
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not inputs.has_input_names():
        return None
    return [(str(spec.name), str(getattr(spec.type, "name", spec.type))) for spec in inputs.inputs]


def model_inputs(loaded: LoadedModel, available: Sequence[str]) -> list[str]:
    """The columns the model scores, in its order: the signature's inputs, else scikit-learn's
    ``feature_names_in_``, else every input column. Raises naming missing columns."""
    if loaded.inputs is not None:
        names = [name for name, _ in loaded.inputs]
    elif getattr(loaded.model, "feature_names_in_", None) is not None:
        names = [str(n) for n in loaded.model.feature_names_in_]
    else:
        return list(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise DataValidationError(
            f"the input lacks column(s) {', '.join(map(repr, missing))} that the model needs; "
            f"it has: {', '.join(available)}"
        )
    return names
