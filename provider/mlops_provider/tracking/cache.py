"""Skip unchanged training: a model is reused when nothing it was made from changed.

The key (:func:`cache_key`) is a hash of what decides the model: the ingested data's content hash, the
spec's ``ingest``/``transform``/``train`` sections (the runner image included), the entrypoint file's
content, and the versions of the ML libraries (scikit-learn, NumPy, SciPy, pandas, MLflow, and the
estimator's own package). Every training run records its key on the pipeline run (``mlops.cache.key``)
and what it trained (``mlops.train.result``); :func:`find_cached` returns the newest FINISHED pipeline run
with the same key whose model is still loadable — a run whose artifacts are gone is a miss, never an
error. A reused model keeps its ``model_uri``, so the registry finds the version already made from it and
none is added; evaluate still compares it with the current champion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from mlops_provider.tracking import tags as T

if TYPE_CHECKING:
    from mlflow import MlflowClient

_TAG_LIMIT = 5000  # MLflow's bound on a tag value (a longer result is not cached)
#: distributions whose version changes the model even when nothing else did
ML_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "mlflow", "cloudpickle")


@dataclass(frozen=True)
class CachedModel:
    source_run_id: str
    result: dict[str, Any]  # the train XCom of the run that trained it


def library_versions(estimator: str | None) -> dict[str, str]:
    names = list(ML_LIBRARIES)
    if estimator:
        top = estimator.split(".", 1)[0]
        names += [dist for dist in metadata.packages_distributions().get(top, []) if dist not in names]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cache_key(*, config_sha256: str, data_sha256: str, entrypoint_sha256: str | None,
              libraries: Mapping[str, str]) -> str:
    payload = {"config": config_sha256, "data": data_sha256, "entrypoint": entrypoint_sha256,
               "libraries": dict(sorted(libraries.items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def record(client: MlflowClient, run_id: str, *, key: str, result: Mapping[str, Any] | None,
           hit: CachedModel | None) -> None:
    """What this run trained (or reused): the key, the train result, and the source run of a hit."""
    from mlflow.entities import RunTag

    recorded = [RunTag(T.CACHE_KEY, key), RunTag(T.CACHE_HIT, "true" if hit else "false")]
    if hit is not None:
        recorded.append(RunTag(T.CACHE_SOURCE_RUN, hit.source_run_id))
    if result is not None:
        text = json.dumps(dict(result), default=str)
        if len(text) > _TAG_LIMIT:  # a wide table's feature list: the model's signature has it anyway
            text = json.dumps({k: v for k, v in result.items() if k != "features"}, default=str)
        if len(text) <= _TAG_LIMIT:
            recorded.append(RunTag(T.TRAIN_RESULT, text))
    client.log_batch(run_id, tags=recorded)


def find_cached(client: MlflowClient, experiment_id: str, *, key: str, exclude_run: str | None = None) -> (
    CachedModel | None
):
    """The newest finished pipeline run trained with ``key`` whose model still loads; None: a miss."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{T.CACHE_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        if run.info.run_id == exclude_run:
            continue
        raw = run.data.tags.get(T.TRAIN_RESULT)
        if not raw:
            continue
        try:
            result = json.loads(raw)
        except ValueError:
            continue
        if _loadable(str(result.get("model_uri") or "")):
            return CachedModel(run.info.run_id, result)
    return None


def _loadable(uri: str) -> bool:
    """Is the model there (its MLmodel file readable)? Uses MLflow's module-level URIs."""
    if not uri:
        return False
    from mlflow.models import get_model_info

    try:
        get_model_info(uri)
    except Exception:  # deleted artifacts, a deleted logged model: a miss
        return False
    return True
