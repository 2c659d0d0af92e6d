"""Train: fit an estimator on the train split and log the model to the pipeline's MLflow run.

The model comes from either

* ``estimator``: the dotted path of a scikit-learn-API class, checked against ``[mlops] allowed_modules``
  when the task runs (not only when the spec is linted), instantiated with ``params``; or
* ``entrypoint``: ``path/to/file.py:function`` under the project root, called as
  ``function(X_train, y_train, params) -> model``.

It is logged with a signature, an input example and ``serialization_format="cloudpickle"`` (MLflow's
default, skops, rejects many estimators and floods the log with warnings).

The same code runs outside Airflow — in a container, say — through the command line::

    python -m mlops_provider.stages.train --train-uri s3://.../train.parquet --target y \\
        --estimator sklearn.linear_model.Ridge --params '{"alpha": 0.5}' --run-id <mlflow run> \\
        --output result.json

which reads MLflow's usual environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN``, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import random
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.estimators import build_estimator
from mlops_provider.exceptions import StageError
from mlops_provider.preprocessing import prepare_features
from mlops_provider.storage import workspace

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models.model import ModelInfo

    from mlops_provider.preprocessing import FeatureColumns

MODEL_NAME = "model"


def load_split(
    uri: str, *, target: str, features: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    x, y = workspace.read_parquet_frames(uri, workspace.workspace_conn_id(), features, [target])
    return x, y[target]


def entrypoint_function(entrypoint: str) -> Callable[..., Any]:
    """Load ``file.py:function`` from under the project root; its module is pickled with the model."""
    import cloudpickle

    path, sep, name = entrypoint.partition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise StageError(f"entrypoint {entrypoint!r} is not of the form path/to/file.py:function")
    file = workspace.project_path(path, what="train entrypoint")
    if not file.is_file():
        raise StageError(f"entrypoint file {path!r} does not exist ({file})")
    module_name = "mlops_entrypoint_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise StageError(f"cannot load {file} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise StageError(f"importing entrypoint file {path!r} failed: {type(exc).__name__}: {exc}") from exc
    # classes/functions defined in the user's file travel inside the pickle: no import needed to load it
    cloudpickle.register_pickle_by_value(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise StageError(f"{path!r} defines no function {name!r}")
    return function  # type: ignore[no-any-return]


def seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)


def fit(
    x_train: pd.DataFrame,
    y_train: pd.Series,
    *,
    estimator: str | None = None,
    entrypoint: str | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    columns: FeatureColumns | None = None,
    transform: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The fitted model (a Pipeline of the transform and the estimator, with ``transform``) and the
    parameters it was built with. A failing fit is not retried: the same data fails the same way."""
    if (estimator is None) == (entrypoint is None):
        raise StageError("give exactly one of estimator and entrypoint")
    params = dict(params or {})
    seed_everything(seed)
    if estimator is not None:
        model, params = build_estimator(estimator, params, seed)
        if transform is not None and columns is not None:
            from mlops_provider.preprocessing import model_pipeline

            model = model_pipeline(model, columns, transform)
        try:
            model.fit(x_train, y_train)
        except Exception as exc:
            raise StageError(f"{estimator}.fit failed: {type(exc).__name__}: {exc}"
                             + _fit_hint(x_train, transform)) from exc
    else:
        function = entrypoint_function(str(entrypoint))
        try:
            model = function(x_train, y_train, params)
        except Exception as exc:
            raise StageError(f"entrypoint {entrypoint!r} failed: {type(exc).__name__}: {exc}") from exc
        if model is None or not callable(getattr(model, "predict", None)):
            raise StageError(f"entrypoint {entrypoint!r} returned {type(model).__name__}, "
                             "not a fitted model with a predict() method")
    return model, params


def _fit_hint(x_train: pd.DataFrame, transform: Mapping[str, Any] | None) -> str:
    missing = [str(c) for c in x_train.columns if x_train[c].isna().any()]
    if missing and transform is None:
        return (f" (column(s) {', '.join(map(repr, missing[:10]))} have missing values: add "
                "`transform: {numeric: {impute: median}}`, or choose an estimator that accepts them)")
    return ""


def pip_requirements(model: Any) -> list[str]:
    """Pinned distributions of the classes inside ``model`` (plus scikit-learn and cloudpickle).

    Spelled out because MLflow's inference loads the model in a subprocess: ~20 s per model here.
    """
    from importlib.metadata import packages_distributions, version

    objects = [model]
    if callable(getattr(model, "get_params", None)):
        # a custom estimator with a broken get_params still gets the basics
        with contextlib.suppress(Exception):
            objects += list(model.get_params(deep=True).values())
    roots = {type(obj).__module__.split(".")[0] for obj in objects} | {"sklearn", "cloudpickle"}
    distributions = packages_distributions()
    pins = set()
    for root in roots:
        for dist in distributions.get(root, []):
            try:
                pins.add(f"{dist}=={version(dist)}")
            except Exception:
                continue
    return sorted(pins)


def log_model(model: Any, x_sample: pd.DataFrame, *, mlflow_run_id: str | None) -> ModelInfo:
    """Log with signature and input example, as cloudpickle; the tracking URI comes from MLflow's config."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model_id = None
    if mlflow_run_id is not None:
        # MLflow files a model under the *active* experiment (else experiment 0, whose artifacts default
        # to ./mlruns in the current directory), not the run's: create it in the run's experiment.
        experiment_id = mlflow.MlflowClient().get_run(mlflow_run_id).info.experiment_id
        model_id = mlflow.initialize_logged_model(
            name=MODEL_NAME, source_run_id=mlflow_run_id, experiment_id=experiment_id
        ).model_id
    from mlops_provider.logs import expected_pickle_notice

    with warnings.catch_warnings(), expected_pickle_notice():
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        signature = infer_signature(x_sample, model.predict(x_sample))
        return mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME,
            run_id=mlflow_run_id,
            model_id=model_id,
            signature=signature,
            input_example=x_sample,
            serialization_format="cloudpickle",
            pip_requirements=pip_requirements(model),
        )


def _class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def train(
    train_uri: str,
    *,
    target: str,
    features: Sequence[str] | None = None,
    estimator: str | None = None,
    entrypoint: str | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    client: MlflowClient | None = None,
    mlflow_run_id: str | None = None,
    transform: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit and log the model. Returns the XCom payload ``{"model_uri", "model_id", "mlflow_run_id", ...}``."""
    x_train, y_train = load_split(train_uri, target=target, features=features)
    if entrypoint is None:
        x_train, columns = prepare_features(x_train, transform)
    else:
        columns = None
    model, used_params = fit(
        x_train, y_train, estimator=estimator, entrypoint=entrypoint, params=params, seed=seed,
        columns=columns, transform=transform,
    )
    if mlflow_run_id is not None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = client or MlflowClient()
        logged: dict[str, Any] = {"train.estimator": estimator or _class_path(model)}
        if seed is not None:
            logged["train.seed"] = seed
        if entrypoint:
            logged["train.entrypoint"] = entrypoint
        logged.update({f"param.{k}": v for k, v in used_params.items()})
        if columns is not None:
            logged.update({"transform.numeric": columns.numeric, "transform.categorical": columns.categorical,
                           "transform.dropped": columns.dropped})
        client.log_batch(mlflow_run_id, params=[Param(k, _param_value(v)) for k, v in logged.items()])
    info = log_model(model, x_train.head(5), mlflow_run_id=mlflow_run_id)
    return {
        "model_uri": info.model_uri,
        "model_id": getattr(info, "model_id", None),
        "mlflow_run_id": mlflow_run_id,
        "model_class": _class_path(model),
        "params": json.loads(json.dumps(used_params, default=str)),
        "train_rows": len(x_train),
        "features": list(x_train.columns),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_provider.stages.train", description="Fit a model and log it to MLflow."
    )
    parser.add_argument("--train-uri", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--features", help="JSON list of feature columns; default: all but the target")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--estimator")
    model.add_argument("--entrypoint")
    parser.add_argument("--params", default="{}", help="JSON object")
    parser.add_argument("--transform", help="JSON object: the spec's transform section")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-id", help="MLflow run to log to")
    parser.add_argument("--output", help="write the result JSON here (default: stdout)")
    args = parser.parse_args(argv)
    result = train(
        args.train_uri,
        target=args.target,
        features=json.loads(args.features) if args.features else None,
        estimator=args.estimator,
        entrypoint=args.entrypoint,
        params=json.loads(args.params),
        seed=args.seed,
        mlflow_run_id=args.run_id,
        transform=json.loads(args.transform) if args.transform else None,
    )
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as out:
            out.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
