"""The pipeline run: the one MLflow run of a training DAG run, which every stage logs to.

A task finds it by the DAG run's key (:func:`run_key`, tag ``mlops.run_key``), creates it if no stage
did yet, reopens it when a task is retried after a failure, and ends it ``FINISHED`` (deploy, or a
rejected candidate) or ``FAILED`` with the task and the first line of its error (a stage that failed
for good). The lineage tags (:func:`lineage_tags`) tie it to the DAG run, the spec, the commit and the
data.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_provider.tracking import tags as T

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def run_key(dag_id: str, run_id: str) -> str:
    """The value of ``mlops.run_key`` for one DAG run."""
    return hashlib.sha256(f"{dag_id}\x1f{run_id}".encode()).hexdigest()[:32]


def git_sha(root: Path) -> str | None:
    """The commit checked out in ``root``, read from ``.git`` without running git."""
    git = root / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = git.read_text().strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.partition(":")[2].strip()).resolve()
    head_file = git / "HEAD"
    if not head_file.is_file():
        return None
    head = head_file.read_text().strip()
    if not head.startswith("ref:"):
        return head or None
    ref = head.partition(":")[2].strip()
    common = git
    if (git / "commondir").is_file():
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for base in (git, common):
        if (base / ref).is_file():
            return (base / ref).read_text().strip() or None
    for base in (git, common):
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref:
                    return sha
    return None


def lineage_tags(
    *,
    dag_id: str,
    run_id: str,
    try_number: int | str,
    project_root: Path,
    pipeline: str | None = None,
    spec_sha256: str | None = None,
    data_sha256: str | None = None,
) -> dict[str, str]:
    """Tags that tie an MLflow run or model version to the DAG run, spec, code and data that made it."""
    tags = {T.DAG_ID: dag_id, T.RUN_ID: run_id, T.TRY_NUMBER: str(try_number)}
    if pipeline:
        tags[T.PIPELINE] = pipeline
    if spec_sha256:
        tags[T.SPEC_SHA] = spec_sha256
    sha = git_sha(project_root)
    if sha:
        tags[T.GIT_SHA] = sha
    if data_sha256:
        tags[T.DATA_SHA] = data_sha256
    return tags


def get_or_create_experiment(client: MlflowClient, name: str, *, artifact_location: str | None) -> str:
    """The experiment's id; created (in ``artifact_location``, when given) if missing, restored if deleted."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:  # created meanwhile by a concurrent task
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def find_pipeline_run(client: MlflowClient, experiment_id: str, *, dag_id: str, run_id: str) -> str | None:
    """The MLflow run of this DAG run, if a stage already created it."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{T.RUN_KEY}` = '{run_key(dag_id, run_id)}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_pipeline_run(client: MlflowClient, experiment_id: str, *, lineage: dict[str, str]) -> str:
    """Get or create THE MLflow run of the DAG run named by ``lineage``; idempotent under retries.

    A run ended by an earlier failure is reopened (status RUNNING) when a task is retried or cleared.
    """
    from mlflow.entities import RunTag

    dag_id, dag_run_id = lineage[T.DAG_ID], lineage[T.RUN_ID]
    found = find_pipeline_run(client, experiment_id, dag_id=dag_id, run_id=dag_run_id)
    if found is None:
        run = client.create_run(
            experiment_id,
            tags={**lineage, T.RUN_KEY: run_key(dag_id, dag_run_id)},
            run_name=f"{dag_id}__{dag_run_id}",
        )
        log.info("Created MLflow run %s for DAG run %s", run.info.run_id, dag_run_id)
        return str(run.info.run_id)
    client.log_batch(found, tags=[RunTag(k, v) for k, v in lineage.items()])
    if client.get_run(found).info.status != "RUNNING":
        client.update_run(found, status="RUNNING")
    return str(found)


def end_pipeline_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    client.set_terminated(run_id, status=status)


def record_failure(client: MlflowClient, run_id: str, *, task_id: str, failure: str | None) -> None:
    """Tag the pipeline run with the task that failed for good and its error's :func:`failure_line`
    (already masked: the caller holds Airflow's secrets masker)."""
    from mlflow.entities import RunTag

    recorded = [RunTag(T.FAILED_TASK, task_id)]
    if failure:
        recorded.append(RunTag(T.FAILURE, failure))
    client.log_batch(run_id, tags=recorded)


def failure_line(error: BaseException | str, limit: int = 300) -> str:
    """``Type: first line of the message`` (the stage's own error, not Airflow's wrapper around it), at
    most ``limit`` characters."""
    from mlops_provider.exceptions import describe

    lines = [line.strip() for line in describe(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:  # "3 expectations not met:" says little without the first
        text = f"{text} {lines[1]}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
