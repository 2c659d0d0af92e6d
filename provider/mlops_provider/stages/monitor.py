"""Monitor: is the live data still like the data the champion learned from? (Evidently data drift)

Plain functions with no Airflow in them (the operator, the tests and ``bench/drift_bench.py`` call them);
heavy libraries are imported inside the functions.

The *reference* is the training data of the model version that holds ``@<alias>`` now: the version's
MLflow run carries the URI of the train split that ingest wrote (:func:`find_reference`).

How drift is computed, and why not with ``DataDriftPreset``: the preset tests every column three times
(``DriftedColumnsCount``, one ``ValueDrift`` per column, and ``DatasetDriftMetric`` + ``DataDriftTable``
again while rendering), each time over full copies of both tables. Here each column is read on its own
(parquet columns lazily, so only two columns are in memory at a time) and tested **once** with
Evidently's ``ValueDrift`` — the same stattest choice, threshold and verdict as the preset (the default
stattest is named up front by :func:`default_stattest`, sparing Evidently's two full distinct counts per
column) — next to a few data-quality numbers of that column. The per-column Evidently snapshots are then
merged into one Evidently snapshot (one HTML report, one JSON). The dataset verdict is Evidently's own rule
(``legacy.calculations.data_drift.get_dataset_drift``): drifted columns / tested columns >= drift share.
When the current data also holds the target, the model is scored on it (Evidently classification or
regression quality).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import LineageMissingError, StageError
from mlops_provider.metrics import positive_label
from mlops_provider.storage import workspace
from mlops_provider.storage.tables import TableColumns
from mlops_provider.tracking import tags as T
from mlops_provider.tracking.models import ModelVersionRef, require_alias

if TYPE_CHECKING:
    import pandas as pd
    from evidently.core.report import Snapshot
    from evidently.core.serialization import SnapshotModel
    from mlflow import MlflowClient

REPORT_ARTIFACT = "monitor/drift_report.html"
SNAPSHOT_ARTIFACT = "monitor/drift_snapshot.json"
VERDICT_ARTIFACT = "monitor/verdict.json"
PREDICTION = "prediction"
_DRIFT_TYPES = ("num", "cat", "text")  # Evidently ColumnType values that have drift tests


@dataclass(frozen=True)
class Reference:
    """The model version the live data is compared with, and the data it learned from."""

    model: ModelVersionRef
    data_uri: str
    data_sha256: str | None = None


def find_reference(client: MlflowClient, model_name: str, alias: str) -> Reference:
    """The version holding ``@alias`` and the train split its run recorded.

    Raises :class:`~mlops_provider.exceptions.NoAliasHolderError` when nothing holds the alias yet (the
    training DAG never promoted a model) and :class:`~mlops_provider.exceptions.LineageMissingError`
    when its run does not name its data.
    """
    model = require_alias(client, model_name, alias, hint="run the training DAG first")
    if not model.run_id:
        raise LineageMissingError(f"{model} has no MLflow run, so its training data is unknown")
    tags = client.get_run(model.run_id).data.tags
    uri = tags.get(T.TRAIN_URI) or tags.get(T.SNAPSHOT_URI)
    if not uri:
        raise LineageMissingError(
            f"the MLflow run {model.run_id} of {model} does not record its training data (tag "
            f"{T.TRAIN_URI}); retrain it with the ingest stage of this provider"
        )
    return Reference(model, uri, tags.get(T.DATA_SHA))


def current_uri(current: str) -> str:
    """The current data's URI: ``s3://`` as is, anything else a path under the project root."""
    return workspace.data_uri(current, what="monitor.current")


# ------------------------------------------------------------------------------------------------- drift
@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's ``ValueDrift`` verdict for one column."""

    column: str
    column_type: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class ColumnQuality:
    """Data quality of one column of the current data, next to the reference."""

    column: str
    missing_share: float
    reference_missing_share: float
    mean: float | None = None
    reference_mean: float | None = None
    out_of_range_share: float | None = None  # numeric: share of values outside the reference's [min, max]
    new_categories: int | None = None  # categorical: values the reference never had


@dataclass
class DriftResult:
    """What the monitor found. :meth:`verdict` is the small dict that goes to XCom."""

    columns: list[ColumnDrift]
    drift_share_threshold: float
    current_rows: int
    reference_rows: int
    skipped: dict[str, str] = field(default_factory=dict)
    quality: list[ColumnQuality] = field(default_factory=list)
    performance: dict[str, float] = field(default_factory=dict)
    snapshot: Snapshot | None = field(default=None, repr=False)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share_of_drifted_columns(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        # Evidently's rule (get_dataset_drift): share of drifted columns >= drift_share
        return bool(self.columns) and self.share_of_drifted_columns >= self.drift_share_threshold

    def quality_metrics(self) -> dict[str, float]:
        """Flat data-quality numbers for MLflow."""
        cells = self.current_rows * max(len(self.quality), 1)
        out: dict[str, float] = {
            "rows": float(self.current_rows),
            "missing_share": sum(q.missing_share * self.current_rows for q in self.quality) / cells,
        }
        for q in self.quality:
            out[f"missing_share.{q.column}"] = q.missing_share
            if q.out_of_range_share is not None:
                out[f"out_of_range_share.{q.column}"] = q.out_of_range_share
            if q.new_categories is not None:
                out[f"new_categories.{q.column}"] = float(q.new_categories)
        return out

    def verdict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": round(self.share_of_drifted_columns, 6),
            "drift_share_threshold": self.drift_share_threshold,
            "number_of_columns": len(self.columns),
            "drifted_columns": self.drifted_columns,
        }

    def summary(self) -> str:
        state = "DRIFT" if self.dataset_drift else "no drift"
        return (f"{state}: {len(self.drifted_columns)} of {len(self.columns)} column(s) drifted "
                f"({self.share_of_drifted_columns:.0%}; dataset drift at >= {self.drift_share_threshold:.0%})"
                + (f": {', '.join(self.drifted_columns)}" if self.drifted_columns else ""))


def detect_drift(
    current: TableColumns,
    reference: TableColumns,
    *,
    target: str | None = None,
    columns: Sequence[str] | None = None,
    drift_share: float = 0.5,
    stattest: str | None = None,
    stattest_threshold: float | None = None,
    ml_task: str = "classification",
    load_model: Callable[[], Any] | None = None,
    positive_class: Any = None,
    title: str | None = None,
) -> DriftResult:
    """Drift of ``current`` against ``reference``, column by column, plus quality and (with the target
    in ``current`` and ``load_model`` given) model performance. Returns the result with its snapshot.

    :param columns: the columns to test; default: every reference column except ``target``.
    :param stattest: Evidently stattest name for every column (``ks``, ``psi``, ``wasserstein``, ...);
        default: Evidently's choice per column type and size.
    :param stattest_threshold: drift threshold of that stattest; default: the stattest's own.
    """
    if not 0 < drift_share <= 1:
        raise StageError(f"drift_share must be in (0, 1], not {drift_share}")
    if columns is None:
        columns = [c for c in reference.names if c != target]
    missing = [c for c in columns if c not in current.names]
    absent = [c for c in columns if c not in reference.names]
    if absent:
        raise StageError(f"column(s) {', '.join(map(repr, absent))} are not in the reference data "
                         f"{reference.uri}")
    if missing:
        raise StageError(f"the current data {current.uri} lacks column(s) {', '.join(map(repr, missing))} "
                         f"that the model was trained on; it has: {', '.join(current.names)}")
    if current.num_rows == 0:
        raise StageError(f"the current data {current.uri} has no rows")
    _check_stattest(stattest)

    result = DriftResult([], drift_share, current.num_rows, reference.num_rows)
    # Only the results and widgets of each column's report are kept: a Snapshot holds on to its input data.
    parts: list[SnapshotModel] = []
    for name in columns:  # two columns in memory at a time
        current_column, reference_column = current.frame([name]), reference.frame([name])
        snapshot, drift = _column_report(name, current_column, reference_column, stattest, stattest_threshold)
        result.quality.append(_column_quality(name, current_column[name], reference_column[name]))
        if snapshot is None or drift is None:
            result.skipped[name] = "no drift test for this column type"
        else:
            result.columns.append(drift)
            parts.append(snapshot.to_snapshot_model())
        del current_column, reference_column

    if target is not None and target in current.names and load_model is not None:
        snapshot, performance = _performance_report(current, list(columns), target, ml_task, load_model,
                                                    positive_class)
        result.performance = performance
        parts.append(snapshot.to_snapshot_model())
    result.snapshot = _merge(parts, result, title=title)
    return result


def _check_stattest(stattest: str | None) -> None:
    if stattest is None:
        return
    try:  # Evidently's registry of stattest names (private; skip the early check if it moves)
        from evidently.legacy.calculations.stattests.registry import _registered_stat_tests
    except ImportError:
        return
    if stattest not in _registered_stat_tests:
        known = ", ".join(sorted(_registered_stat_tests))
        raise StageError(f"unknown drift method {stattest!r}; Evidently knows: {known}")


def _column_report(
    name: str,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    stattest: str | None,
    threshold: float | None,
) -> tuple[Snapshot | None, ColumnDrift | None]:
    """Evidently's ValueDrift of one column (its widget shows both distributions), or nothing for a
    column type without a drift test (datetime, lists, all-missing)."""
    from evidently import Report
    from evidently.core.datasets import infer_column_type
    from evidently.legacy.tests.base_test import TestStatus
    from evidently.metrics import ValueDrift

    column_type = infer_column_type(current[name]).value
    if column_type not in _DRIFT_TYPES or current[name].isna().all() or reference[name].isna().all():
        return None, None
    method = stattest or default_stattest(reference[name], current[name], column_type)
    drift_metric = ValueDrift(column=name, method=method, threshold=threshold)
    try:
        snapshot = Report([drift_metric], include_tests=True).run(current, reference)
    except Exception as exc:
        raise StageError(f"Evidently failed on column {name!r}: {type(exc).__name__}: {exc}") from exc
    value = snapshot.metric_results[drift_metric.metric_id]
    test = next(iter(value.tests))
    config = value.to_dict()["config"]  # method/threshold as Evidently resolved them
    drift = ColumnDrift(
        column=name,
        column_type=column_type,
        method=method or str(config.get("method") or ""),
        threshold=float(config.get("threshold") if config.get("threshold") is not None else math.nan),
        score=float(value.value),
        drifted=test.status == TestStatus.FAIL,
    )
    return snapshot, drift


def default_stattest(reference: pd.Series, current: pd.Series, column_type: str) -> str | None:
    """The stattest Evidently picks for a column when none is configured — decided without its cost.

    Evidently (``stattests.registry._get_default_stattest``) counts the distinct values of both columns
    joined, twice, to tell "at most 5 values" from "more": 40% of the whole drift step on 1M-row numeric
    columns. The same rule needs only to know whether there are more than 5, which the first few values
    of a continuous column settle. Same inputs as Evidently's (the columns without missing/infinite
    values), same rule, same answer (``tests/integration/test_stage_monitor.py`` checks it against
    Evidently's own choice). ``None`` when Evidently's choice cannot be named for this column type
    (chi-square or Z for a numeric column with few values and a small reference): then Evidently picks.
    """
    import numpy as np
    from evidently.legacy.calculations import stattests as st

    reference = reference.replace([-np.inf, np.inf], np.nan).dropna()
    current = current.replace([-np.inf, np.inf], np.nan).dropna()
    if column_type == "text":
        big = len(reference) > 1000
        test = st.abs_text_content_drift_stat_test if big else st.perc_text_content_drift_stat_test
    elif len(reference) > 1000:
        if column_type == "cat" or _distinct_up_to(6, reference, current) <= 5:
            test = st.jensenshannon_stat_test
        else:
            test = st.wasserstein_stat_test
    else:
        values = _distinct_up_to(6, reference, current)
        if column_type == "num" and values > 5:
            test = st.ks_stat_test
        else:
            test = st.chi_stat_test if values > 2 else st.z_stat_test
    if column_type not in {t.value for t in test.allowed_feature_types}:
        return None  # Evidently applies it unnamed; by name it refuses the type
    return str(test.name)


def _distinct_up_to(cap: int, *columns: pd.Series) -> int:
    """``min(cap, number of distinct values)`` over the columns, reading only as far as needed."""
    import pandas as pd

    seen: set[Any] = set()
    for column in columns:
        values = column.to_numpy()
        start, size = 0, 1024
        while start < len(values):
            chunk = pd.unique(values[start:start + size])
            if len(chunk) >= cap:
                return cap
            seen.update(chunk.tolist())
            if len(seen) >= cap:
                return cap
            start, size = start + size, 65536
    return len(seen)


def _column_quality(name: str, current: pd.Series, reference: pd.Series) -> ColumnQuality:
    import pandas as pd

    missing = float(current.isna().sum()) / max(len(current), 1)
    reference_missing = float(reference.isna().sum()) / max(len(reference), 1)
    numeric = pd.api.types.is_numeric_dtype(current) and pd.api.types.is_numeric_dtype(reference)
    if numeric and not pd.api.types.is_bool_dtype(current):
        low, high = _finite(reference.min()), _finite(reference.max())
        present = current.dropna()
        outside = None
        if low is not None and high is not None:
            outside = float(((present < low) | (present > high)).sum()) / max(len(present), 1)
        return ColumnQuality(name, missing, reference_missing, mean=_finite(current.mean()),
                             reference_mean=_finite(reference.mean()), out_of_range_share=outside)
    new = set(current.dropna().unique()) - set(reference.dropna().unique())
    return ColumnQuality(name, missing, reference_missing, new_categories=len(new))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_CLASSIFICATION = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1Score"}
_REGRESSION = {"rmse": "RMSE", "mae": "MAE", "r2": "R2Score", "mean_error": "MeanError"}


def _performance_report(
    current: TableColumns, features: list[str], target: str, ml_task: str, load_model: Callable[[], Any],
    positive_class: Any = None,
) -> tuple[Snapshot, dict[str, float]]:
    import evidently.metrics as em
    import pandas as pd
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
        Report,
    )

    frame = current.frame([*features, target])
    frame = frame[frame[target].notna()]
    if frame.empty:
        raise StageError(f"the target column {target!r} of the current data has no values")
    model = load_model()
    wanted = getattr(model, "feature_names_in_", None)  # a Pipeline takes exactly its raw columns
    if wanted is not None:
        features = [str(c) for c in wanted if str(c) in frame.columns]
    try:
        predicted = model.predict(frame[features])
    except Exception as exc:
        raise StageError(f"the reference model could not score the current data: {exc}") from exc
    scored = pd.DataFrame({target: frame[target].to_numpy(), PREDICTION: _flat(predicted)})
    del frame
    if ml_task == "regression":
        definition = DataDefinition(regression=[Regression(target=target, prediction=PREDICTION)])
        wanted = _REGRESSION
    else:
        labels = set(pd.unique(scored[target])) | set(pd.unique(scored[PREDICTION]))
        if len(labels) <= 2:
            # Evidently assumes the positive label is 1: say which it is (the evaluate stage's rule)
            positive = positive_label(sorted(labels, key=str), positive_class)
            task: Any = BinaryClassification(target=target, prediction_labels=PREDICTION, pos_label=positive)
        else:
            task = MulticlassClassification(target=target, prediction_labels=PREDICTION)
        definition = DataDefinition(classification=[task])
        wanted = _CLASSIFICATION
    metrics = {key: getattr(em, cls)() for key, cls in wanted.items()}
    dataset = Dataset.from_pandas(scored, data_definition=definition)
    snapshot = Report(list(metrics.values())).run(dataset, None)
    values = {}
    for key, metric in metrics.items():
        result = snapshot.metric_results[metric.metric_id]
        value = getattr(result, "value", None)
        if value is None and hasattr(result, "mean"):  # MeanStdValue (MAE, mean error)
            value = result.mean.value
        if value is not None and math.isfinite(float(value)):
            values[key] = float(value)
    return snapshot, values


def _flat(predicted: Any) -> Any:
    import numpy as np

    array = np.asarray(predicted)
    return array.ravel() if array.ndim == 2 and array.shape[1] == 1 else array


def _merge(models: list[SnapshotModel], result: DriftResult, *, title: str | None) -> Snapshot:
    """One Evidently snapshot of every column's report, headed by the dataset verdict."""
    from evidently.core.metric_types import metric_tests_widget
    from evidently.core.report import Snapshot, metric_tests_stats
    from evidently.core.serialization import ReportModel, SnapshotModel
    from evidently.legacy.renderers.html_widgets import CounterData, counter, header_text, table_data

    tests = [t for m in models for k in m.top_level_metrics for t in m.metric_results[k].tests]
    rows = sorted(result.columns, key=lambda c: (not c.drifted, c.column))
    headline = [
        header_text(label=title or "Data drift against the model's training data"),
        counter(counters=[
            CounterData("Dataset drift", "DETECTED" if result.dataset_drift else "not detected"),
            CounterData("Drifted columns", f"{len(result.drifted_columns)} of {len(result.columns)} "
                        f"({result.share_of_drifted_columns:.0%}; "
                        f"threshold {result.drift_share_threshold:.0%})"),
            CounterData("Rows (current / reference)", f"{result.current_rows} / {result.reference_rows}"),
        ]),
        table_data(
            title="Drift by column",
            column_names=["Column", "Type", "Method", "Threshold", "Drift score", "Drift detected"],
            data=[[c.column, c.column_type, c.method, f"{c.threshold:.3g}", f"{c.score:.4g}",
                   "yes" if c.drifted else "no"] for c in rows],
        ),
    ]
    headline.append(table_data(
        title="Data quality by column (current vs reference)",
        column_names=["Column", "Missing", "Missing (ref)", "Mean", "Mean (ref)", "Outside ref. range",
                      "New categories"],
        data=[[q.column, f"{q.missing_share:.2%}", f"{q.reference_missing_share:.2%}", _fmt(q.mean),
               _fmt(q.reference_mean),
               "" if q.out_of_range_share is None else f"{q.out_of_range_share:.2%}",
               "" if q.new_categories is None else str(q.new_categories)] for q in result.quality],
    ))
    if result.skipped:
        headline.append(table_data(title="Columns without a drift test", column_names=["Column", "Why"],
                                   data=[[k, v] for k, v in result.skipped.items()]))
    if result.performance:
        headline.append(counter(
            title="Model performance on the current data",
            counters=[CounterData(k, f"{v:.4g}") for k, v in result.performance.items()],
        ))
    merged = SnapshotModel(
        report=ReportModel(items=[]),
        name=title,
        timestamp=dt.datetime.now(),
        metadata={},
        tags=[],
        metric_results={k: v for m in models for k, v in m.metric_results.items()},
        top_level_metrics=[k for m in models for k in m.top_level_metrics],
        widgets=[*headline, *(w for m in models for w in m.widgets)],
        tests_widgets=[metric_tests_stats(tests), metric_tests_widget(tests)] if tests else [],
    )
    return Snapshot.load_model(merged)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


# ------------------------------------------------------------------------------------------------ MLflow
_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def metric_key(*parts: str) -> str:
    """An MLflow metric name from column names (which may hold characters MLflow refuses)."""
    return ".".join(_METRIC_KEY.sub("_", p) for p in parts)[:250]


def log_monitoring_run(
    client: MlflowClient,
    run_id: str,
    result: DriftResult,
    reference: Reference,
    *,
    current: str,
    stattest: str | None,
    stattest_threshold: float | None,
    tags: dict[str, str] | None = None,
) -> str:
    """Record the result on the monitoring run (metrics, params, tags, HTML report, Evidently JSON, verdict)
    and tag the model version with it. Returns the report's artifact URI."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    metrics = {
        "drift.dataset_drift": float(result.dataset_drift),
        "drift.share_of_drifted_columns": result.share_of_drifted_columns,
        "drift.number_of_drifted_columns": float(len(result.drifted_columns)),
        "drift.number_of_columns": float(len(result.columns)),
        **{metric_key("drift.score", c.column): c.score for c in result.columns},
        **{metric_key("quality", k): v for k, v in result.quality_metrics().items()},
        **{metric_key("performance", k): v for k, v in result.performance.items()},
    }
    params = {
        "drift.share_threshold": result.drift_share_threshold,
        "drift.method": stattest or "evidently default",
        "drift.threshold": stattest_threshold if stattest_threshold is not None else "method default",
    }
    all_tags = {
        **(tags or {}),
        T.RUN_TYPE: T.RUN_TYPE_MONITOR,
        T.MODEL_NAME: reference.model.name,
        T.MODEL_VERSION: reference.model.version,
        T.MODEL_ALIAS: reference.model.alias or "",
        T.REFERENCE_RUN_ID: reference.model.run_id or "",
        # tags, not params: a retry of the same check may meet a newer champion, and params never change
        T.REFERENCE_DATA_URI: reference.data_uri,
        T.CURRENT_DATA_URI: current,
        T.DATASET_DRIFT: str(result.dataset_drift).lower(),
        T.DRIFTED_COLUMNS: ",".join(result.drifted_columns)[:5000],
    }
    if reference.data_sha256:
        all_tags[T.REFERENCE_DATA_SHA] = reference.data_sha256
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))]
    for start in range(0, max(len(items), 1), 900):  # MLflow accepts 1,000 metrics per batch
        client.log_batch(
            run_id,
            metrics=items[start:start + 900],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()] if start == 0 else [],
            tags=[RunTag(k, str(v)) for k, v in all_tags.items()] if start == 0 else [],
        )
    if result.snapshot is None:
        raise StageError("the drift result has no Evidently snapshot to log")
    with tempfile.TemporaryDirectory(prefix="mlops-monitor-") as tmp:
        folder = Path(tmp) / "monitor"
        folder.mkdir()
        result.snapshot.save_html(str(folder / Path(REPORT_ARTIFACT).name))
        result.snapshot.save_json(str(folder / Path(SNAPSHOT_ARTIFACT).name))
        verdict = {**result.verdict(), "columns": [c.__dict__ for c in result.columns],
                   "quality": [q.__dict__ for q in result.quality],
                   "skipped": result.skipped, "performance": result.performance,
                   "reference": {**reference.model.__dict__, "data_uri": reference.data_uri,
                                 "data_sha256": reference.data_sha256}, "current": current}
        (folder / Path(VERDICT_ARTIFACT).name).write_text(json.dumps(verdict, indent=2, default=str))
        client.log_artifacts(run_id, str(folder), artifact_path="monitor")
    client.set_model_version_tag(reference.model.name, reference.model.version, T.MONITOR_LAST_RUN, run_id)
    client.set_model_version_tag(reference.model.name, reference.model.version, T.MONITOR_DATASET_DRIFT,
                                 str(result.dataset_drift).lower())
    artifact_uri = client.get_run(run_id).info.artifact_uri
    return f"{artifact_uri.rstrip('/')}/{REPORT_ARTIFACT}"
