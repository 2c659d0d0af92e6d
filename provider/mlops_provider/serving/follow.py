"""Make the serving targets of a spec (``deploy.targets``) serve a model version, around an alias move.

:func:`follow` is what a deploy, a rollback and a serving sync call: it builds the
:class:`~mlops_provider.serving.base.Candidate` (the version's model files, sample rows and the model's own
predictions on them), then runs :func:`mlops_provider.serving.base.rollout` — every target is staged and
health-checked before ``move_alias()`` runs, and switched only after it — and finally records each
target's live address on the registered model (tag ``mlops.serving.<target>.url``).

The sample rows are the ``health.sample`` file of the targets (a CSV/parquet path under the project root;
targets of one spec share it), else the first rows of the version's own test split (its MLflow run names
the train split; ingest writes the test split next to it). Each target sends its first ``health.rows``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import StageError
from mlops_provider.storage.workspace import TEST_SPLIT, TRAIN_SPLIT
from mlops_provider.tracking import tags as T
from mlops_provider.tracking.models import ModelVersionRef

if TYPE_CHECKING:
    import logging

    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.serving.base import Candidate
    from mlops_provider.tracking import MLflowAccess


@dataclass(frozen=True)
class Followed:
    """What :func:`follow` did: ``move_alias``'s result and each target's live address."""

    result: Any
    endpoints: dict[str, str | None]


def _health_settings(targets: Sequence[Mapping[str, Any]]) -> tuple[str | None, int]:
    samples = {t.get("health", {}).get("sample") for t in targets} - {None}
    if len(samples) > 1:
        raise StageError(
            f"serving targets name different health.sample files ({', '.join(sorted(samples))}); "
            "the targets of one pipeline share one sample"
        )
    rows = max(int(t.get("health", {}).get("rows", 20)) for t in targets)
    return (samples.pop() if samples else None), rows


def held_out_split_uri(client: MlflowClient, model_name: str, version: str) -> str:
    """The test split ingest wrote for the version's run (next to the train split its run tags name)."""
    model_version = client.get_model_version(model_name, version)
    train_uri = (
        client.get_run(model_version.run_id).data.tags.get(T.TRAIN_URI) if model_version.run_id else None
    )
    if not train_uri or not train_uri.endswith(f"/{TRAIN_SPLIT}"):
        raise StageError(
            f"{model_name} v{version}: its MLflow run does not name its train split (tag {T.TRAIN_URI}), "
            "so there is no test set to health-check the serving with; set health.sample in the target"
        )
    return f"{train_uri.removesuffix(TRAIN_SPLIT)}{TEST_SPLIT}"


def _features(model_dir: str, frame: pd.DataFrame, target_column: str | None) -> pd.DataFrame:
    """The columns the model takes (its signature), else every column but the target."""
    from mlflow.models import Model

    schema = Model.load(model_dir).get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    if names:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise StageError(
                f"the health-check sample lacks the model's input column(s) {', '.join(missing)}"
            )
        return frame[list(names)]
    return frame.drop(columns=[target_column]) if target_column in frame.columns else frame


def build_candidate(
    hook: MLflowAccess,
    *,
    model_name: str,
    version: str,
    pipeline: str,
    targets: Sequence[Mapping[str, Any]],
    workdir: str,
    target_column: str | None = None,
) -> Candidate:
    """Download the version's model into ``workdir`` and compute its own predictions on the sample rows."""
    import mlflow.artifacts
    import mlflow.pyfunc
    import numpy as np

    from mlops_provider.serving.base import Candidate
    from mlops_provider.storage import workspace

    model = ModelVersionRef(model_name, str(version))
    sample_path, rows = _health_settings(targets)
    with hook.activate():
        local = mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=workdir)
    if sample_path is not None:
        frame = workspace.read_table(str(workspace.project_path(sample_path, what="health.sample")))
    else:
        frame = workspace.read_table(
            held_out_split_uri(hook.client, model_name, model.version), workspace.workspace_conn_id()
        )
    sample = _features(local, frame, target_column).head(rows).reset_index(drop=True)
    if sample.empty:
        raise StageError(f"the health-check sample for {model} has no rows")
    predicted = mlflow.pyfunc.load_model(local).predict(sample)
    if hasattr(predicted, "to_numpy"):
        predicted = predicted.to_numpy()
    expected = np.asarray(predicted).tolist()
    return Candidate(
        model=model,
        pipeline=pipeline,
        sample=sample,
        expected=expected,
        local_model_dir=local,
    )


def follow(
    hook: MLflowAccess,
    *,
    model_name: str,
    version: str,
    pipeline: str,
    targets: Sequence[Mapping[str, Any]],
    move_alias: Callable[[list[str]], Any],
    log: logging.Logger | Any,
    target_column: str | None = None,
) -> Followed:
    """Stage and check ``version`` on every target, ``move_alias(names)``, then switch every target to it.

    ``move_alias`` gets the targets' display names (for the audit record). With no targets this is just
    ``move_alias([])``. A target that fails its check raises
    :class:`~mlops_provider.exceptions.DeploymentCheckError` before the alias moves; nothing is left staged.
    """
    if not targets:
        return Followed(move_alias([]), {})
    from mlops_provider.serving.base import Staged, make_target, rollout

    serving = [make_target(config, pipeline=pipeline, log=log) for config in targets]
    committed: list[Staged] = []
    with tempfile.TemporaryDirectory(prefix="mlops-serve-") as workdir:
        candidate = build_candidate(
            hook, model_name=model_name, version=version, pipeline=pipeline, targets=targets,
            workdir=workdir, target_column=target_column,
        )  # fmt: skip
        names = [target.name for target in serving]
        result = rollout(
            serving, candidate, move_alias=lambda: move_alias(names), log=log, committed=committed
        )
    endpoints = {item.target: item.endpoint for item in committed}
    for target, endpoint in endpoints.items():
        if endpoint:
            hook.client.set_registered_model_tag(model_name, T.serving_url_tag(target), endpoint)
        hook.client.set_registered_model_tag(model_name, T.serving_version_tag(target), str(version))
    return Followed(result, endpoints)
