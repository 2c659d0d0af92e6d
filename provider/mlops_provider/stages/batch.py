"""Batch scoring: score a CSV/parquet file with the model version holding ``@alias``, chunk by chunk.

Plain functions with no Airflow in them (the operator, the tests and ``bench/batch_bench.py`` call them);
heavy libraries are imported inside the functions.

- **One version per output.** ``models:/<model>@<alias>`` is resolved to a concrete version first
  (:func:`resolve_alias`) and that version is loaded, so a promotion while the file is being scored cannot
  mix two models in one output. The version is in every row and in the parquet file's metadata.
- **Bounded memory.** The input is read ``chunk_rows`` rows at a time (parquet row groups / batches; CSV
  with pyarrow's streaming reader, feature types taken from the model signature) and each chunk is
  written as it is scored. An ``s3://`` input is first copied to a local temporary file (streamed to disk,
  not held in memory); an ``s3://`` output is written locally and uploaded once complete.
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
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import StageError
from mlops_provider.stages import workspace

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient

#: tag of every batch scoring run, so the MLflow UI can tell them from training and monitoring runs
TAG_RUN_TYPE = "mlops.run_type"
RUN_TYPE_BATCH = "batch"
ROW_NUMBER = "row_number"
OUTPUT_COLUMNS = ("prediction", "probability", "model_name", "model_version", "scored_at")
#: keys of the output parquet file's key-value metadata
META_MODEL_NAME = "mlops.model_name"
META_MODEL_VERSION = "mlops.model_version"
META_MODEL_URI = "mlops.model_uri"
META_SCORED_AT = "mlops.scored_at"
META_INPUT = "mlops.input"
#: classifiers whose ``predict`` is ``classes_[argmax(predict_proba)]`` in scikit-learn's own code
_PROBA_IS_PREDICT = (
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
)
_CSV_BLOCK_BYTES = 8 << 20


class NoModelForAliasError(StageError):
    """No version of the registered model holds the alias (nothing trained and promoted yet)."""


@dataclass(frozen=True)
class ModelRef:
    """The concrete version that ``models:/<name>@<alias>`` pointed at when scoring began."""

    name: str
    alias: str
    version: str
    run_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass
class BatchResult:
    """What a scoring run did. :meth:`as_dict` is the small dict that goes to XCom."""

    input_uri: str
    output_uri: str
    model: ModelRef
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


# ------------------------------------------------------------------------------------------------- model
def resolve_alias(client: MlflowClient, model_name: str, alias: str) -> ModelRef:
    """The version holding ``@alias`` now. Raises :class:`NoModelForAliasError` when none does."""
    from mlops_provider.stages.evaluate import current_champion

    version = current_champion(client, model_name, alias)
    if version is None:
        raise NoModelForAliasError(
            f"no version of registered model {model_name!r} holds @{alias}: nothing to score with; "
            f"train and promote first (run the training DAG, or `mlops run SPEC`)"
        )
    return ModelRef(model_name, alias, str(version.version), version.run_id or None)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score and what MLflow knows of its inputs."""

    model: Any
    flavor: str  # "sklearn" (the native object) or "pyfunc"
    #: (name, MLflow type) of the signature's input columns, if it has a column-based signature
    inputs: list[tuple[str, str]] | None = None


def load_model(model_uri: str, *, flavor: str = "auto") -> LoadedModel:
    """The model, scored as the native scikit-learn object when it has that flavor and ``flavor`` is
    ``auto``, else through pyfunc. Uses MLflow's module-level tracking/registry URI: call it inside
    ``MLflowHook.activate()``."""
    if flavor not in ("auto", "pyfunc"):
        raise ValueError(f"flavor must be auto or pyfunc, not {flavor!r}")
    from mlflow.models import get_model_info

    info = get_model_info(model_uri)
    inputs = _signature_inputs(info.signature)
    if flavor == "auto" and "sklearn" in info.flavors:
        import mlflow.sklearn

        return LoadedModel(mlflow.sklearn.load_model(model_uri), "sklearn", inputs)
    import mlflow.pyfunc

    return LoadedModel(mlflow.pyfunc.load_model(model_uri), "pyfunc", inputs)


def _signature_inputs(signature: Any) -> list[tuple[str, str]] | None:
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not inputs.has_input_names():
        return None
    return [(str(spec.name), str(getattr(spec.type, "name", spec.type))) for spec in inputs.inputs]


def feature_columns(loaded: LoadedModel, available: Sequence[str]) -> list[str]:
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
        raise StageError(
            f"the input lacks column(s) {', '.join(map(repr, missing))} that the model needs; "
            f"it has: {', '.join(available)}"
        )
    return names


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


# --------------------------------------------------------------------------------------------------- I/O
def input_uri(value: str) -> str:
    """``s3://`` as is; anything else a path under the project root."""
    return _uri(value, "batch input")


def output_uri(value: str) -> str:
    """``s3://`` as is; anything else a path under the project root."""
    return _uri(value, "batch output")


def _uri(value: str, what: str) -> str:
    # templates render at run time, so the spec-time check (inside the project root) is repeated here
    if workspace.is_s3(value):
        workspace.split_s3(value)
        return value
    if "://" in value and not value.startswith("file://"):
        raise StageError(
            f"unsupported {what} {value!r}: use a path under the project root or s3://bucket/key"
        )
    return str(workspace.project_path(value.removeprefix("file://"), what=what))


@contextlib.contextmanager
def local_copy(uri: str, conn_id: str | None, scratch: Path) -> Iterator[Path]:
    """A local path to read ``uri`` from: the file itself, or an ``s3://`` object streamed to ``scratch``."""
    if not workspace.is_s3(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"batch input {uri} does not exist")
        yield path
        return
    bucket, key = workspace.split_s3(uri)
    target = scratch / f"input-{uuid.uuid4().hex}{Path(key).suffix}"
    workspace._s3_call(
        uri, "read", lambda: workspace._s3_hook(conn_id).get_conn().download_file(bucket, key, str(target))
    )
    yield target


def _arrow_type(mlflow_type: str) -> pa.DataType | None:
    import pyarrow as pa

    return {
        "double": pa.float64(),
        "float": pa.float32(),
        "long": pa.int64(),
        "integer": pa.int32(),
        "boolean": pa.bool_(),
        "string": pa.string(),
    }.get(mlflow_type)


def read_chunks(
    path: Path, file_format: str, chunk_rows: int, *, column_types: dict[str, Any] | None = None
) -> Iterator[pa.Table]:
    """Tables of at most ``chunk_rows`` rows, in file order. Pandas index columns are dropped."""
    import pyarrow as pa

    if file_format == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path, memory_map=False)
        index = _pandas_index_columns(parquet.schema_arrow)
        columns = [n for n in parquet.schema_arrow.names if n not in index] if index else None
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns, use_pandas_metadata=False):
            yield pa.Table.from_batches([batch])
        return
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        convert_options=pcsv.ConvertOptions(column_types=column_types or {}),
    )
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending)


@contextlib.contextmanager
def prefetched(items: Iterator[Any]) -> Iterator[Iterator[Any]]:
    """``items`` produced one ahead by a background thread; its errors are raised in the consumer. On
    exit the thread is stopped and joined (so a file it reads can be removed afterwards)."""
    import queue
    import threading

    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            slots.put(("error", exc))

    def consume() -> Iterator[Any]:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    thread = threading.Thread(target=produce, name="mlops-batch-reader", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        thread.join()


def _pandas_index_columns(schema: Any) -> list[str]:
    from mlops_provider.stages.monitor import _pandas_index_columns as index_columns

    return index_columns(schema)


# --------------------------------------------------------------------------------------------- scoring
def score_file(
    source: str,
    destination: str,
    *,
    model: LoadedModel,
    model_ref: ModelRef,
    ml_task: str = "classification",
    conn_id: str | None = None,
    file_format: str | None = None,
    chunk_rows: int = 100_000,
    load_seconds: float | None = None,
) -> BatchResult:
    """Score ``source`` with ``model`` (:func:`load_model`; the version ``model_ref`` names) into the
    parquet ``destination``.

    ``source``/``destination``: a path under the project root or ``s3://bucket/key`` (``conn_id`` is the
    Airflow connection for both). Returns counts and timings; the output replaces any earlier one.
    """
    import pyarrow as pa

    if chunk_rows < 1:
        raise StageError(f"chunk_rows must be at least 1, not {chunk_rows}")
    in_uri, out_uri = input_uri(source), output_uri(destination)
    fmt = workspace.guess_format(in_uri, file_format)
    scorer = Scorer(model, ml_task=ml_task)
    signature = dict(model.inputs or [])
    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    metadata = {
        META_MODEL_NAME: model_ref.name,
        META_MODEL_VERSION: model_ref.version,
        META_MODEL_URI: model_ref.uri,
        META_SCORED_AT: scored_at.isoformat(),
        META_INPUT: in_uri,
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
                path = stack.enter_context(local_copy(in_uri, conn_id, scratch))
                column_types = None
                if fmt == "csv" and signature:
                    column_types = {n: t for n, t in ((n, _arrow_type(v)) for n, v in signature.items()) if t}
                # A three-stage pipeline: the next chunk is read and decoded, and the previous one encoded
                # and written, in background threads (pyarrow releases the GIL) while this one is scored.
                chunk_iter = stack.enter_context(
                    prefetched(read_chunks(path, fmt, chunk_rows, column_types=column_types))
                )
                sink = stack.enter_context(ParquetSink(partial, metadata))
                features: list[str] | None = None
                keys: list[str] = []
                while True:
                    tick = time.perf_counter()
                    table = next(chunk_iter, None)
                    if table is None:
                        break
                    if features is None:
                        features = feature_columns(model, table.column_names)
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
            bucket, key = workspace.split_s3(out_uri)
            workspace._s3_call(
                out_uri,
                "write",
                lambda: workspace._s3_hook(conn_id).load_file(str(partial), key, bucket, replace=True),
            )
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
    model_ref: ModelRef,
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


class ParquetSink:
    """Tables appended to one parquet file by a background thread (encoding and compression release the
    GIL). :meth:`write` hands a table over (waiting while the previous one is still being written) and
    raises the writer's error, if it had one; leaving the ``with`` block finishes the file. The schema is
    the first table's; the file's key-value metadata is ``metadata``."""

    def __init__(self, path: Path, metadata: dict[str, str]) -> None:
        import queue
        import threading

        self.path = path
        self.metadata = metadata
        self.schema: pa.Schema | None = None
        self._tables: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlops-batch-writer", daemon=True)

    def __enter__(self) -> ParquetSink:
        self._thread.start()
        return self

    def _run(self) -> None:
        writer = None
        try:
            while (table := self._tables.get()) is not None:
                if writer is None:
                    self.schema = table.schema
                    writer = _writer(self.path, table.schema)
                    writer.add_key_value_metadata(self.metadata)
                writer.write_table(table if table.schema == self.schema else table.cast(self.schema))
        except BaseException as exc:  # handed to the producer
            self._error = exc
            while self._tables.get() is not None:  # drain, so the producer never blocks
                pass
        finally:
            if writer is not None:
                writer.close()

    def write(self, table: pa.Table) -> None:
        if self._error is not None:
            raise self._error
        self._tables.put(table)

    def __exit__(self, *exc_info: object) -> None:
        self._tables.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error


def _writer(path: Path, schema: pa.Schema) -> Any:
    """A parquet writer that stores the dictionary columns as plain strings/timestamps for readers
    (``store_schema=False``: no Arrow schema, so pandas sees ``object``, not ``category``), and
    dictionary-encodes only where values repeat: strings, class labels, the constant columns. (Parquet
    would dictionary-encode a chunk of 100,000 unique integer ids too: twice the write time, no gain.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def repeats(field: pa.Field) -> bool:
        kind = field.type
        if field.name in ("model_name", "model_version", "scored_at") or pa.types.is_dictionary(kind):
            return True
        if field.name == "prediction":  # class labels repeat, regression values do not
            return not pa.types.is_floating(kind)
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind))

    dictionary = [f.name for f in schema if f.name != ROW_NUMBER and repeats(f)]
    return pq.ParquetWriter(path, schema, store_schema=False, use_dictionary=dictionary)


# ------------------------------------------------------------------------------------------------ MLflow
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
        TAG_RUN_TYPE: RUN_TYPE_BATCH,
        "mlops.model_name": result.model.name,
        "mlops.model_alias": result.model.alias,
        "mlops.model_version": result.model.version,
        "mlops.model_uri": result.model.uri,
        "mlops.model_flavor": result.flavor,
        # tags, not params: a retry may meet a newer version, and params never change
        "mlops.batch.input_uri": result.input_uri,
        "mlops.batch.output_uri": result.output_uri,
        "mlops.batch.scored_at": result.scored_at.isoformat(),
    }
    for start in range(0, max(len(items), 1), 900):  # MLflow accepts 1,000 metrics per batch
        client.log_batch(
            run_id,
            metrics=items[start : start + 900],
            tags=[RunTag(k, v) for k, v in all_tags.items()] if start == 0 else [],
        )
    client.set_model_version_tag(result.model.name, result.model.version, "mlops.batch.last_run_id", run_id)
