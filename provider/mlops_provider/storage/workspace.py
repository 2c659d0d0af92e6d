"""Where stages read their inputs and keep run-scoped data: paths under the project root, ``s3://`` URIs.

The run workspace is ``<[mlops] workspace>/<dag_id>/<run_id>/`` — by default
``<project_root>/.mlops/workspace``, or an ``s3://bucket/prefix`` read and written with Airflow's S3Hook
(connection ``[mlops] workspace_conn_id``). Only URIs of these files travel through XCom.

Airflow's ``ObjectStoragePath`` would cover both, but its ``s3://`` backend needs ``s3fs``, whose
``aiobotocore`` pins an older botocore than the boto3 the Amazon provider installs; S3Hook does not.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.exceptions import NotAllowedError, StageError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("csv", "parquet")
#: the files ingest writes into a run's workspace (:func:`run_workspace`)
SNAPSHOT = "snapshot.parquet"
TRAIN_SPLIT = "train.parquet"
TEST_SPLIT = "test.parquet"


def project_path(path: str, *, what: str = "path", root: Path | None = None) -> Path:
    """A path from a spec, resolved against the project root; it may not leave it (symlinks included)."""
    root = (root or config.project_root()).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise NotAllowedError(f"{what} {path!r} resolves to {target}, outside the project root {root}")
    return target


def data_uri(value: str, *, what: str) -> str:
    """Where a stage reads or writes ``value``: an ``s3://`` URI as is, anything else a path under the
    project root. (Templates render at run time, so the spec-time check is repeated here.)"""
    if is_s3(value):
        split_s3(value)
        return value
    if "://" in value and not value.startswith("file://"):
        raise StageError(f"unsupported {what} {value!r}: use a path under the project root or s3://bucket/key")
    return str(project_path(value.removeprefix("file://"), what=what))


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket or not key:
        raise StageError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def _s3_hook(conn_id: str | None):  # type: ignore[no-untyped-def]
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id)


def _s3_call(uri: str, action: str, call):  # type: ignore[no-untyped-def]
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    from mlops_provider.exceptions import ServiceUnavailableError

    try:
        return call()
    except EndpointConnectionError as exc:
        raise ServiceUnavailableError(f"S3 endpoint for {uri} is unreachable: {exc}") from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise FileNotFoundError(f"{uri} does not exist ({code})") from exc
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable"):
            raise ServiceUnavailableError(f"S3 could not {action} {uri} for now: {exc}") from exc
        raise StageError(f"cannot {action} {uri}: {exc}") from exc  # access denied, bad request: permanent
    except BotoCoreError as exc:
        raise ServiceUnavailableError(f"cannot {action} {uri}: {exc}") from exc


def exists(uri: str, conn_id: str | None = None) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return bool(_s3_call(uri, "check", lambda: _s3_hook(conn_id).check_for_key(key, bucket)))
    return Path(uri.removeprefix("file://")).exists()


def read_bytes(uri: str, conn_id: str | None = None) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)

        def get() -> bytes:
            body = _s3_hook(conn_id).get_conn().get_object(Bucket=bucket, Key=key)["Body"]
            return bytes(body.read())

        return bytes(_s3_call(uri, "read", get))
    return Path(uri.removeprefix("file://")).read_bytes()


def write_bytes(uri: str, data: bytes, conn_id: str | None = None) -> str:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _s3_call(uri, "write", lambda: _s3_hook(conn_id).load_bytes(data, key, bucket, replace=True))
        return uri
    path = Path(uri.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)  # readers never see half a file
    return str(path)


def download_file(uri: str, destination: Path, conn_id: str | None = None) -> Path:
    """Stream an ``s3://`` object to a local file (never held in memory)."""
    bucket, key = split_s3(uri)
    _s3_call(uri, "read", lambda: _s3_hook(conn_id).get_conn().download_file(bucket, key, str(destination)))
    return destination


def upload_file(path: Path, uri: str, conn_id: str | None = None) -> str:
    """Upload a local file to ``s3://`` in one put (or multipart upload) of the key: all or nothing."""
    bucket, key = split_s3(uri)
    _s3_call(uri, "write", lambda: _s3_hook(conn_id).load_file(str(path), key, bucket, replace=True))
    return uri


def guess_format(uri: str, file_format: str | None = None) -> str:
    if file_format:
        if file_format not in FORMATS:
            raise StageError(f"unknown file format {file_format!r}; one of {', '.join(FORMATS)}")
        return file_format
    suffix = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    if suffix == "csv":
        return "csv"
    if suffix in ("parquet", "pq"):
        return "parquet"
    raise StageError(f"cannot tell the format of {uri!r} from its suffix; set the file format")


def read_table(uri: str, conn_id: str | None = None, file_format: str | None = None) -> pd.DataFrame:
    import pandas as pd

    fmt = guess_format(uri, file_format)
    # a local file is read in place (no second copy of its bytes in memory); S3 objects through S3Hook
    data: Any = io.BytesIO(read_bytes(uri, conn_id)) if is_s3(uri) else Path(uri.removeprefix("file://"))
    if isinstance(data, Path) and not data.is_file():
        raise FileNotFoundError(f"{uri} does not exist")
    try:
        return pd.read_csv(data) if fmt == "csv" else pd.read_parquet(data)
    except Exception as exc:
        raise StageError(f"cannot read {uri} as {fmt}: {exc}") from exc


def read_parquet_frames(uri: str, conn_id: str | None, *groups: Sequence[str] | None) -> list[pd.DataFrame]:
    """Column groups of one parquet table as DataFrames, read once; a group of None is every column not
    named in another group. (Selecting columns of a whole DataFrame would copy them.)"""
    import pyarrow.parquet as pq

    source: Any = io.BytesIO(read_bytes(uri, conn_id)) if is_s3(uri) else uri.removeprefix("file://")
    try:
        table = pq.read_table(source)
    except Exception as exc:
        raise StageError(f"cannot read {uri} as parquet: {exc}") from exc
    named = {c for group in groups if group is not None for c in group}
    missing = sorted(named - set(table.column_names))
    if missing:
        raise StageError(f"column(s) {', '.join(map(repr, missing))} not in {uri}")
    rest = [c for c in table.column_names if c not in named]
    return [table.select(list(group) if group is not None else rest).to_pandas() for group in groups]


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_parquet(uri: str, frame: pd.DataFrame, conn_id: str | None = None) -> str:
    """A table as parquet at ``uri``: a local file is written in place (never whole in memory as bytes)
    and appears at once, complete; an S3 object is uploaded in one piece."""
    if is_s3(uri):
        return write_bytes(uri, to_parquet_bytes(frame), conn_id)
    path = Path(uri.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    frame.to_parquet(partial, index=False)
    partial.replace(path)  # readers never see half a file
    return str(path)


def workspace_conn_id() -> str | None:
    return config.get("workspace_conn_id") or None


def workspace_root() -> str:
    value = config.get("workspace")
    if value:
        return value.rstrip("/")
    return str(config.project_root() / ".mlops" / "workspace")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", part).strip("_") or "_"


def run_workspace(dag_id: str, run_id: str) -> str:
    """The folder (or S3 prefix) of one DAG run's data."""
    return f"{workspace_root()}/{_safe(dag_id)}/{_safe(run_id)}"


def frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of a table: column names, dtypes and values; independent of file format and index."""
    import pandas as pd

    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name}\x1f{dtype}\x1e".encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
