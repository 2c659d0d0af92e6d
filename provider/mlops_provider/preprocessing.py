"""The spec's ``transform`` section as scikit-learn's own objects, fitted and logged with the estimator.

:func:`feature_columns` decides which columns are numeric and which categorical (what the spec names,
else by dtype: numbers are numeric; strings, categories and booleans are categorical) and which are
dropped; :func:`model_pipeline` composes a ``ColumnTransformer`` of ``SimpleImputer`` →
scaler (numeric) and ``SimpleImputer`` → ``OneHotEncoder(handle_unknown="ignore")`` /
``OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)`` (categorical) with the estimator
into one ``Pipeline``. That one object is evaluated, logged and registered, so batch scoring, the serving
targets and the champion comparison apply exactly the transforms training fitted, from the raw columns
(the model's signature), and a category never seen in training scores instead of failing.

Without ``transform``, :func:`require_numeric` refuses non-numeric feature columns before fitting, naming
them: the estimator would fail on them anyway, and no retry can change the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import DataValidationError

if TYPE_CHECKING:
    import pandas as pd

#: the model step's name inside the logged Pipeline (``pipeline.named_steps["model"]``)
MODEL_STEP = "model"
TRANSFORM_STEP = "transform"
_SCALERS = {"standard": "StandardScaler", "minmax": "MinMaxScaler", "robust": "RobustScaler"}


@dataclass(frozen=True)
class FeatureColumns:
    numeric: list[str]
    categorical: list[str]
    dropped: list[str]

    @property
    def features(self) -> list[str]:
        """What the model takes, in the table's order of the two lists (numeric first)."""
        return [*self.numeric, *self.categorical]


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _is_categorical(series: pd.Series) -> bool:
    import pandas as pd

    types = pd.api.types
    return bool(types.is_bool_dtype(series) or types.is_object_dtype(series) or types.is_string_dtype(series)
                or isinstance(series.dtype, pd.CategoricalDtype))


def feature_columns(frame: pd.DataFrame, transform: Mapping[str, Any]) -> FeatureColumns:
    """The numeric, categorical and dropped columns of ``frame`` (features only, no target)."""
    columns = dict(transform.get("columns") or {})
    dropped = [str(c) for c in columns.get("drop") or []]
    numeric = [str(c) for c in columns["numeric"]] if columns.get("numeric") is not None else None
    categorical = [str(c) for c in columns["categorical"]] if columns.get("categorical") is not None else None
    named = [*(numeric or []), *(categorical or []), *dropped]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"transform.columns names column(s) {', '.join(map(repr, missing))} that the data does not "
            f"have; its feature columns are: {', '.join(map(str, frame.columns))}"
        )
    rest = [str(c) for c in frame.columns if c not in named]
    if numeric is None:
        numeric = [c for c in rest if _is_numeric(frame[c])]
    if categorical is None:
        categorical = [c for c in rest if c not in numeric and _is_categorical(frame[c])]
    unusable = [c for c in rest if c not in numeric and c not in categorical]
    if unusable:
        kinds = ", ".join(f"{c!r} ({frame[c].dtype})" for c in unusable)
        raise DataValidationError(
            f"feature column(s) {kinds} are neither numbers nor categories: name them in "
            "transform.columns.numeric or .categorical, or in transform.columns.drop"
        )
    not_numbers = [c for c in numeric if not _is_numeric(frame[c])]
    if not_numbers:
        kinds = ", ".join(f"{c!r} ({frame[c].dtype})" for c in not_numbers)
        raise DataValidationError(
            f"transform.columns.numeric names column(s) that do not hold numbers: {kinds}; "
            "list them under transform.columns.categorical"
        )
    return FeatureColumns(numeric, categorical, dropped)


def require_numeric(frame: pd.DataFrame) -> None:
    """Without ``transform``, every feature must be a number: name the ones that are not."""
    bad = [c for c in frame.columns if not _is_numeric(frame[c])]
    if bad:
        kinds = ", ".join(f"{c!r} ({frame[c].dtype})" for c in bad)
        raise DataValidationError(
            f"feature column(s) {kinds} are not numeric, and the spec has no transform section to encode "
            "them: add `transform:` (categorical columns are one-hot encoded, missing values imputed; see "
            "the README) or leave them out with ingest.features"
        )


def _numeric_steps(steps: Mapping[str, Any]) -> Any:
    import sklearn.preprocessing as skp
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    parts: list[tuple[str, Any]] = []
    if steps.get("impute"):
        fill = steps.get("fill_value")
        parts.append(("impute", SimpleImputer(strategy=steps["impute"],
                                              fill_value=0 if fill is None else fill)))
    if steps.get("scale"):
        parts.append(("scale", getattr(skp, _SCALERS[steps["scale"]])()))
    return Pipeline(parts) if parts else "passthrough"


def _categorical_steps(steps: Mapping[str, Any]) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    # only scikit-learn's own steps: the model must load wherever MLflow loads it (a serving image has
    # scikit-learn, not this package). Strings, booleans and categories arrive as objects with NaN for
    # missing (pandas' CSV/parquet readers, MLflow's input conversion), which these accept.
    parts: list[tuple[str, Any]] = []
    if steps.get("impute"):
        fill = steps.get("fill_value")
        parts.append(("impute", SimpleImputer(strategy=steps["impute"],
                                              fill_value="missing" if fill is None else fill)))
    if steps.get("encode", "onehot") == "onehot":
        parts.append(("encode", OneHotEncoder(handle_unknown="ignore")))
    else:
        parts.append(("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)))
    return Pipeline(parts)


def preprocessor(columns: FeatureColumns, transform: Mapping[str, Any]) -> Any:
    """The ``ColumnTransformer`` of the spec's ``transform`` over ``columns`` (other columns: dropped)."""
    from sklearn.compose import ColumnTransformer

    parts = []
    if columns.numeric:
        parts.append(("numeric", _numeric_steps(transform.get("numeric") or {}), columns.numeric))
    if columns.categorical:
        parts.append(("categorical", _categorical_steps(transform.get("categorical") or {}),
                      columns.categorical))
    if not parts:
        raise DataValidationError("transform leaves no feature column: every column is dropped")
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def model_pipeline(estimator: Any, columns: FeatureColumns, transform: Mapping[str, Any]) -> Any:
    """``Pipeline([("transform", ColumnTransformer), ("model", estimator)])``, not fitted."""
    from sklearn.pipeline import Pipeline

    return Pipeline([(TRANSFORM_STEP, preprocessor(columns, transform)), (MODEL_STEP, estimator)])


def final_estimator(model: Any) -> Any:
    """The estimator inside a logged Pipeline (the model itself otherwise)."""
    steps: Sequence[Any] | None = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def prepare_features(x_train: pd.DataFrame, transform: Mapping[str, Any] | None) -> tuple[
    pd.DataFrame, FeatureColumns | None
]:
    """The raw feature columns the model takes, and (with ``transform``) which are numeric/categorical.
    Without ``transform`` every feature must be numeric: fails at once otherwise, naming the columns."""
    if transform is None:
        require_numeric(x_train)
        return x_train, None
    columns = feature_columns(x_train, transform)
    frame = x_train[columns.features]
    strings = [c for c in columns.categorical if str(frame[c].dtype) in ("string", "category")]
    if strings:  # scikit-learn's imputers want objects with NaN, which scoring inputs arrive as too
        frame = frame.astype(dict.fromkeys(strings, object))
    return frame, columns
