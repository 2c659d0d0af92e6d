"""Batch scoring: score a CSV/parquet file with the model version holding ``@alias``, chunk by chunk.

Plain functions with no Airflow in them (the operator, the tests and ``bench/batch_bench.py`` call them);
heavy libraries are imported inside the functions.

- **One version per output.** ``models:/<model>@<alias>`` is resolved to a concrete version first
  (:func:`mlops_provider.tracking.models.require_alias`) and that version is loaded, so a promotion
  while the file is being scored cannot mix two models in one output. The version is in every row and
  in the parquet file's metadata.
- **Bounded memory.** The input is read ``chunk_rows`` rows at a time (parquet row groups / batches; CSV
  with pyarrow's streaming reader, feature types taken from the model signature) and each chunk is
  written as it is scored (:mod:`mlops_provider.storage.tables`). An ``s3://`` input is first copied to
  a local temporary file (streamed to disk, not held in memory); an ``s3://`` output is written locally
  and uploaded once complete.
- **Idempotent.** A local output is written under a temporary name and renamed into place; an S3 output
  is one PUT (or multipart upload) of the same key. A retry overwrites; readers never see half a file.
- **Native model when possible.** A model with MLflow's ``sklearn`` flavor is scored as the scikit-learn
  object itself (``bench/batch_bench.py`` measures the pyfunc wrapper's cost); anything else via pyfunc.

Output columns (:data:`OUTPUT_COLUMNS` after the key columns):

- ``row_number``: the row's position in the input (0-based), to join predictions back to the input;
- every input column the model does *not* use (ids, timestamps, a label if present): the keys. Feature
  columns are not copied (they are in the input already);
- ``prediction``; ``probability`` (classifiers whose ``predict`` is the arg-max of ``predict_proba``,
  i.e. scikit-learn's trees and forests, alone or last in a ``Pipeline``: there it costs nothing extra) —
  the probability of the predicted class;
- ``model_name``, ``model_version``, ``scored_at`` (UTC, one timestamp per scoring run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import StageError
from mlops_provider.storage import tables, workspace
from mlops_provider.tracking import tags as T
from mlops_provider.tracking.models import LoadedModel, ModelVersionRef, model_inputs

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient

ROW_NUMBER = "row_number"
OUTPUT_COLUMNS = ("prediction", "probability", "model_name", "model_version", "scored_at")
#: classifiers whose ``predict`` is ``classes_[argmax(predict_proba)]`` in scikit-learn's own code
_PROBA_IS_PREDICT = (
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
)


@dataclass
class BatchResult:
    """What a scoring run did. :meth:`as_dict` is the small dict that goes to XCom."""

    input_uri: str
    output_uri: str
    model: ModelVersionRef
    rows: int
    chunks: int
    seconds: float  # read + predict + write, model loading excluded
    predict_seconds: float
    scored_at: dt.datetime
    chunk_ms: list[float] = field(default_factory=list)
    load_seconds: float | None = None
    flavor: str = "sklearn"
    columns: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, quantile: float) -> float:
        return percentile(self.chunk_ms, quantile)

    def metrics(self) -> dict[str, float]:
        metrics = {
            "rows": float(self.rows),
            "chunks": float(self.chunks),
            "seconds": self.seconds,
            "rows_per_second": self.rows_per_second,
            "predict_seconds": self.predict_seconds,
            "chunk_latency_ms_p50": self.latency_ms(0.50),
            "chunk_latency_ms_p95": self.latency_ms(0.95),
        }
        if self.load_seconds is not None:
            metrics["load_model_seconds"] = self.load_seconds
        return {k: v for k, v in metrics.items() if math.isfinite(v)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_uri": self.input_uri,
            "output_uri": self.output_uri,
            "model_name": self.model.name,
            "model_alias": self.model.alias,
            "model_version": self.model.version,
            "model_uri": self.model.uri,
            "rows": self.rows,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 4),
            "rows_per_second": round(self.rows_per_second, 1),
            "chunk_latency_ms_p50": round(self.latency_ms(0.50), 3),
            "chunk_latency_ms_p95": round(self.latency_ms(0.95), 3),
            "scored_at": self.scored_at.isoformat(),
            "flavor": self.flavor,
        }

    def summary(self) -> str:
        return (
            f"Scored {self.rows} rows in {self.chunks} chunk(s) with {self.model.name} v{self.model.version} "
            f"(@{self.model.alias}, {self.flavor}) in {self.seconds:.2f} s "
            f"({self.rows_per_second:,.0f} rows/s; chunk latency p50 {self.latency_ms(0.5):.1f} ms, "
            f"p95 {self.latency_ms(0.95):.1f} ms) -> {self.output_uri}"
        )


def percentile(values: Sequence[float], quantile: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * quantile
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _proba_gives_prediction(model: Any) -> bool:
    final = model.steps[-1][1] if hasattr(model, "steps") and model.steps else model
    mro = {f"{c.__module__}.{c.__qualname__}" for c in type(final).__mro__}
    return bool(mro.intersection(_PROBA_IS_PREDICT)) and getattr(final, "n_outputs_", 1) == 1


class Scorer:
    """Predictions (and, when free, the predicted class's probability) for one chunk of features."""

    def __init__(self, loaded: LoadedModel, *, ml_task: str = "classification") -> None:
        self.model = loaded.model
        self.with_probability = (
            loaded.flavor == "sklearn" and ml_task == "classification" and _proba_gives_prediction(self.model)
        )

    def __call__(self, features: Any) -> tuple[Any, Any | None]:
        import numpy as np

        if self.with_probability:
            proba = self.model.predict_proba(features)
            best = np.argmax(proba, axis=1)  # exactly how the estimator's own predict decides
            return self.model.classes_.take(best, axis=0), proba[np.arange(len(best)), best]
        predicted = self.model.predict(features)
        if hasattr(predicted, "to_numpy"):  # pyfunc may return a Series or a one-column DataFrame
            predicted = predicted.to_numpy()
        predicted = np.asarray(predicted)
        if predicted.ndim == 2 and predicted.shape[1] == 1:
            predicted = predicted[:, 0]
        if predicted.ndim != 1:
            raise StageError(
                f"the model returned predictions of shape {predicted.shape}; batch scoring "
                "writes one prediction per row"
            )
        return predicted, None


# --------------------------------------------------------------------------------------------- scoring
def score_file(
    source: str,
    destination: str,
    *,
    model: LoadedModel,
    model_ref: ModelVersionRef,
    ml_task: str = "classification",
    conn_id: str | None = None,
    file_format: str | None = None,
    chunk_rows: int = 100_000,
    load_seconds: float | None = None,
) -> BatchResult:
    """Score ``source`` with ``model`` (:func:`~mlops_provider.tracking.models.load_model` of the version
    ``model_ref`` names) into the parquet ``destination``.

    ``source``/``destination``: a path under the project root or ``s3://bucket/key`` (``conn_id`` is the
    Airflow connection for both). Returns counts and timings; the output replaces any earlier one.
    """
    import pyarrow as pa

    if chunk_rows < 1:
        raise StageError(f"chunk_rows must be at least 1, not {chunk_rows}")
    in_uri = workspace.data_uri(source, what="batch input")
    out_uri = workspace.data_uri(destination, what="batch output")
    fmt = workspace.guess_format(in_uri, file_format)
    scorer = Scorer(model, ml_task=ml_task)
    signature = dict(model.inputs or [])
    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    metadata = {
        T.META_MODEL_NAME: model_ref.name,
        T.META_MODEL_VERSION: model_ref.version,
        T.META_MODEL_URI: model_ref.uri,
        T.META_SCORED_AT: scored_at.isoformat(),
        T.META_INPUT: in_uri,
    }
    local_out = None if workspace.is_s3(out_uri) else Path(out_uri)
    scratch_parent = local_out.parent if local_out is not None else None
    if scratch_parent is not None:
        scratch_parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    rows = chunks = 0
    predict_seconds = 0.0
    chunk_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mlops-batch-", dir=scratch_parent) as tmp:
        scratch = Path(tmp)
        partial = scratch / "output.parquet"  # same file system as a local output: the rename is atomic
        try:
            with contextlib.ExitStack() as stack:
                path = stack.enter_context(tables.local_copy(in_uri, conn_id, scratch))
                column_types = None
                if fmt == "csv" and signature:
                    column_types = {
                        n: t for n, t in ((n, tables.arrow_type(v)) for n, v in signature.items()) if t
                    }
                # A three-stage pipeline: the next chunk is read and decoded, and the previous one encoded
                # and written, in background threads (pyarrow releases the GIL) while this one is scored.
                chunk_iter = stack.enter_context(
                    tables.prefetched(tables.read_chunks(path, fmt, chunk_rows, column_types=column_types))
                )
                sink = stack.enter_context(tables.ParquetSink(partial, metadata, dictionary=_repeating))
                features: list[str] | None = None
                keys: list[str] = []
                while True:
                    tick = time.perf_counter()
                    table = next(chunk_iter, None)
                    if table is None:
                        break
                    if features is None:
                        features = model_inputs(model, table.column_names)
                        keys = [c for c in table.column_names if c not in features]
                        _check_clashes(keys, with_probability=scorer.with_probability)
                    frame = table.select(features).to_pandas()
                    before = time.perf_counter()
                    predicted, probability = scorer(frame)
                    predict_seconds += time.perf_counter() - before
                    sink.write(_output_table(table, keys, rows, predicted, probability, model_ref, scored_at))
                    rows += table.num_rows
                    chunks += 1
                    chunk_ms.append((time.perf_counter() - tick) * 1000)
        except (StageError, FileNotFoundError):
            raise
        except pa.ArrowInvalid as exc:
            raise StageError(f"cannot read {in_uri} as {fmt}: {exc}") from exc
        if chunks == 0 or sink.schema is None:
            raise StageError(f"batch input {in_uri} has no rows")
        columns = list(sink.schema.names)
        if local_out is not None:
            os.replace(partial, local_out)  # readers never see half a file; a retry replaces it whole
        else:
            workspace.upload_file(partial, out_uri, conn_id)
    return BatchResult(
        in_uri,
        out_uri,
        model_ref,
        rows,
        chunks,
        time.perf_counter() - started,
        predict_seconds,
        scored_at,
        chunk_ms,
        load_seconds,
        model.flavor,
        columns,
    )


def _check_clashes(keys: Sequence[str], *, with_probability: bool) -> None:
    ours = {ROW_NUMBER, *OUTPUT_COLUMNS}
    if not with_probability:
        ours.discard("probability")
    clashes = [k for k in keys if k in ours]
    if clashes:
        raise StageError(
            f"input column(s) {', '.join(map(repr, clashes))} would clash with the output's own "
            f"columns ({', '.join(sorted(ours))}); rename them in the input"
        )


def _output_table(
    table: pa.Table,
    keys: Sequence[str],
    offset: int,
    predicted: Any,
    probability: Any,
    model_ref: ModelVersionRef,
    scored_at: dt.datetime,
) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    n = table.num_rows
    arrays: list[Any] = [pa.array(np.arange(offset, offset + n, dtype=np.int64))]
    names = [ROW_NUMBER]
    for key in keys:
        arrays.append(table.column(key))
        names.append(key)
    arrays.append(pa.array(predicted))
    names.append("prediction")
    if probability is not None:
        arrays.append(pa.array(probability, type=pa.float64()))
        names.append("probability")
    # one-value dictionaries: built in microseconds, written as one dictionary page (``pa.repeat`` of a
    # string costs ~1 ms per 1,000 rows, and the writer would hash every value again)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    arrays += [
        pa.DictionaryArray.from_arrays(zeros, pa.array([model_ref.name], pa.string())),
        pa.DictionaryArray.from_arrays(zeros, pa.array([model_ref.version], pa.string())),
        pa.DictionaryArray.from_arrays(zeros, pa.array([scored_at], pa.timestamp("us", tz="UTC"))),
    ]
    names += ["model_name", "model_version", "scored_at"]
    return pa.Table.from_arrays(arrays, names=names)


def _repeating(schema: pa.Schema) -> list[str]:
    """The output columns worth a dictionary: strings, class labels, booleans and the constant ones."""
    import pyarrow as pa

    def repeats(field: pa.Field) -> bool:
        kind = field.type
        if field.name in ("model_name", "model_version", "scored_at") or pa.types.is_dictionary(kind):
            return True
        if field.name == "prediction":  # class labels repeat, regression values do not
            return not pa.types.is_floating(kind)
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind))

    return [f.name for f in schema if f.name != ROW_NUMBER and repeats(f)]


def log_batch_run(
    client: MlflowClient, run_id: str, result: BatchResult, *, tags: dict[str, str] | None = None
) -> None:
    """Record the scoring on its MLflow run (metrics, the per-chunk latency series, tags) and point the
    model version at its latest batch run."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in result.metrics().items()]
    items += [Metric("chunk_latency_ms", ms, now, step) for step, ms in enumerate(result.chunk_ms)]
    all_tags = {
        **(tags or {}),
        T.RUN_TYPE: T.RUN_TYPE_BATCH,
        T.MODEL_NAME: result.model.name,
        T.MODEL_ALIAS: result.model.alias or "",
        T.MODEL_VERSION: result.model.version,
        T.MODEL_URI: result.model.uri,
        T.MODEL_FLAVOR: result.flavor,
        # tags, not params: a retry may meet a newer version, and params never change
        T.BATCH_INPUT_URI: result.input_uri,
        T.BATCH_OUTPUT_URI: result.output_uri,
        T.BATCH_SCORED_AT: result.scored_at.isoformat(),
    }
    for start in range(0, max(len(items), 1), 900):  # MLflow accepts 1,000 metrics per batch
        client.log_batch(
            run_id,
            metrics=items[start : start + 900],
            tags=[RunTag(k, v) for k, v in all_tags.items()] if start == 0 else [],
        )
    client.set_model_version_tag(result.model.name, result.model.version, T.BATCH_LAST_RUN, run_id)
