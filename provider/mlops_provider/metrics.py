"""The metrics a spec names, computed one way for the evaluation gate, the champion comparison and the
cross-validated hyperparameter search: scikit-learn's metric functions, with the positive class of a
binary task chosen once (:func:`positive_label`) and macro averages for more than two classes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mlops_provider.exceptions import DataValidationError
from mlops_provider.spec.schema import METRICS

if TYPE_CHECKING:
    import pandas as pd


def positive_label(labels: Sequence[Any], wanted: Any = None) -> Any:
    """The positive class of a binary task: ``wanted`` (``evaluate.positive_class``) when given, else the
    second of the two labels sorted (``1`` of 0/1, ``True`` of booleans, ``"Yes"`` of No/Yes)."""
    ordered = sorted(labels, key=lambda v: (str(type(v)), v))
    if wanted is None:
        return ordered[-1]
    for label in ordered:
        if label == wanted or str(label) == str(wanted):
            return label
    raise DataValidationError(
        f"evaluate.positive_class {wanted!r} is not a label of the test set; its labels are "
        f"{', '.join(map(repr, ordered))}"
    )


def direction(task: str, metric: str) -> Literal["max", "min"]:
    try:
        return METRICS[task][metric]
    except KeyError:
        known = ", ".join(METRICS.get(task, {}))
        raise ValueError(f"unknown {task} metric {metric!r}; known: {known}") from None


def _probabilities(model: Any, features: pd.DataFrame) -> tuple[Any, list[Any]]:
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        classes = list(getattr(model, "classes_", range(proba.shape[1])))
        return proba, classes
    raise ValueError(
        f"{type(model).__name__} has no predict_proba; roc_auc and log_loss need probabilities "
        "(choose other metrics, or an estimator that predicts probabilities)"
    )


def score(
    model: Any, features: pd.DataFrame, target: pd.Series, *, task: str, metrics: list[str],
    positive_class: Any = None,
) -> dict[str, float]:
    """The requested metrics of ``model`` on ``(features, target)``.

    Classification with more than two classes uses macro averages (and one-vs-rest for roc_auc); for two
    classes, precision/recall/f1/roc_auc are about :func:`positive_label`.
    """
    import numpy as np
    from sklearn import metrics as skm

    for metric in metrics:
        direction(task, metric)
    predicted = model.predict(features)
    results: dict[str, float] = {}
    if task == "regression":
        y_true = np.asarray(target, dtype=float)
        y_pred = np.asarray(predicted, dtype=float).reshape(len(y_true))
        scorers = {
            "rmse": lambda: math.sqrt(skm.mean_squared_error(y_true, y_pred)),
            "mae": lambda: skm.mean_absolute_error(y_true, y_pred),
            "r2": lambda: skm.r2_score(y_true, y_pred),
            "mape": lambda: skm.mean_absolute_percentage_error(y_true, y_pred),
        }
        return {m: float(scorers[m]()) for m in metrics}

    y_true = np.asarray(target)
    y_pred = np.asarray(predicted).reshape(len(y_true))
    labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()), key=str)
    classes = list(getattr(model, "classes_", labels))
    binary = len(classes) <= 2
    positive = positive_label(classes, positive_class) if binary else None
    averaging: dict[str, Any] = (
        {"average": "binary", "pos_label": positive} if binary else {"average": "macro", "labels": classes}
    )
    for metric in metrics:
        if metric == "accuracy":
            results[metric] = float(skm.accuracy_score(y_true, y_pred))
        elif metric in ("precision", "recall", "f1"):
            fn = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}[metric]
            results[metric] = float(fn(y_true, y_pred, zero_division=0, **averaging))
    if {"roc_auc", "log_loss"} & set(metrics):
        proba, proba_classes = _probabilities(model, features)
        if "roc_auc" in metrics:
            if len(set(y_true.tolist())) < 2:
                raise ValueError("roc_auc is undefined: the test set holds a single class")
            if binary:
                column = proba_classes.index(positive)
                results["roc_auc"] = float(skm.roc_auc_score(y_true == positive, proba[:, column]))
            else:
                results["roc_auc"] = float(
                    skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=proba_classes)
                )
        if "log_loss" in metrics:
            results["log_loss"] = float(skm.log_loss(y_true, proba, labels=proba_classes))
    return {m: results[m] for m in metrics}
