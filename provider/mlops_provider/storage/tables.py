"""Tables read and written in chunks, and column by column: the I/O under batch scoring and monitoring.

* :func:`read_chunks` (parquet row groups, CSV blocks) and :func:`prefetched` (the next chunk read and
  decoded in a background thread while this one is used), :class:`ParquetSink` (the previous chunk
  encoded and written in another): pyarrow releases the GIL, so reading, the caller's work and writing
  overlap.
* :func:`local_copy`: a local path for an input that may be on ``s3://`` (streamed to disk).
* :class:`TableColumns`: a table read one column at a time (a wide parquet file never in memory whole).
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import StageError
from mlops_provider.storage import workspace

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_CSV_BLOCK_BYTES = 8 << 20


@contextlib.contextmanager
def local_copy(uri: str, conn_id: str | None, scratch: Path) -> Iterator[Path]:
    """A local path to read ``uri`` from: the file itself, or an ``s3://`` object streamed to ``scratch``."""
    if not workspace.is_s3(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"input {uri} does not exist")
        yield path
        return
    _, key = workspace.split_s3(uri)
    yield workspace.download_file(uri, scratch / f"input-{uuid.uuid4().hex}{Path(key).suffix}", conn_id)


def arrow_type(mlflow_type: str) -> pa.DataType | None:
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
        index = pandas_index_columns(parquet.schema_arrow)
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

    thread = threading.Thread(target=produce, name="mlops-table-reader", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        thread.join()


class ParquetSink:
    """Tables appended to one parquet file by a background thread (encoding and compression release the
    GIL). :meth:`write` hands a table over (waiting while the previous one is still being written) and
    raises the writer's error, if it had one; leaving the ``with`` block finishes the file. The schema is
    the first table's; the file's key-value metadata is ``metadata``; ``dictionary`` picks the columns to
    dictionary-encode from the schema (see :func:`parquet_writer`)."""

    def __init__(
        self, path: Path, metadata: dict[str, str], *, dictionary: Callable[[pa.Schema], list[str]]
    ) -> None:
        import queue
        import threading

        self.path = path
        self.metadata = metadata
        self.dictionary = dictionary
        self.schema: pa.Schema | None = None
        self._tables: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlops-table-writer", daemon=True)

    def __enter__(self) -> ParquetSink:
        self._thread.start()
        return self

    def _run(self) -> None:
        writer = None
        try:
            while (table := self._tables.get()) is not None:
                if writer is None:
                    self.schema = table.schema
                    writer = parquet_writer(self.path, table.schema, self.dictionary(table.schema))
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


def parquet_writer(path: Path, schema: pa.Schema, dictionary: list[str]) -> Any:
    """A parquet writer that stores dictionary columns as plain strings/timestamps for readers
    (``store_schema=False``: no Arrow schema, so pandas sees ``object``, not ``category``) and
    dictionary-encodes only the ``dictionary`` columns, those whose values repeat. (Parquet would
    dictionary-encode a chunk of 100,000 unique integer ids too: twice the write time, no gain.)"""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, store_schema=False, use_dictionary=dictionary)


class TableColumns:
    """A CSV or parquet table (path under the project root, or ``s3://``), read one column at a time.

    Parquet columns are read lazily from the file, so a wide table never sits in memory as a whole; a CSV
    has to be parsed once, with pandas (as ingest does, so dtypes match the training data).
    """

    def __init__(self, uri: str, conn_id: str | None = None, file_format: str | None = None) -> None:
        self.uri = uri
        self.format = workspace.guess_format(uri, file_format)
        self._frame: pd.DataFrame | None = None
        try:
            if self.format == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                local = None if workspace.is_s3(uri) else uri.removeprefix("file://")
                source: Any = local if local else pa.BufferReader(workspace.read_bytes(uri, conn_id))
                # no memory map: mapped pages of the whole file would count as this process's memory
                self._parquet = pq.ParquetFile(source)
                index = set(pandas_index_columns(self._parquet.schema_arrow))
                self.names = [n for n in self._parquet.schema_arrow.names if n not in index]
                self.num_rows = int(self._parquet.metadata.num_rows)
            else:
                import pandas as pd

                self._frame = pd.read_csv(io.BytesIO(workspace.read_bytes(uri, conn_id)))
                self.names = [str(c) for c in self._frame.columns]
                self.num_rows = len(self._frame)
        except (FileNotFoundError, StageError):
            raise
        except Exception as exc:
            raise StageError(f"cannot read {uri} as {self.format}: {exc}") from exc

    def frame(self, names: Sequence[str]) -> pd.DataFrame:
        if self._frame is not None:
            return self._frame[list(names)]
        return self._parquet.read(columns=list(names), use_pandas_metadata=False).to_pandas()


def pandas_index_columns(schema: Any) -> list[str]:
    """The columns pandas stored as the index when it wrote the file (not data)."""
    metadata = schema.metadata or {}
    raw = metadata.get(b"pandas")
    if not raw:
        return []
    return [c for c in json.loads(raw).get("index_columns", []) if isinstance(c, str)]
