"""A pipeline on a real CeleryExecutor deployment whose tasks run on different "machines".

``celery_stack`` (tests/fixtures/celery.py): Airflow on Postgres + Redis with its api-server, scheduler,
dag-processor and triggerer; every Celery worker has its own copy of the project and its own home, so
nothing one task writes to local disk is visible to a task on another worker — only the metadata DB, the
MLflow server and the S3 workspace are shared, as between real machines.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.celery import PIPELINE, CeleryStack

pytestmark = pytest.mark.timeout(1500)

MODEL = "breast_cancer_classifier"


def _pipeline_runs(stack: CeleryStack, run_id: str) -> list[Any]:
    client = stack.mlflow.client()
    experiment = client.get_experiment_by_name(PIPELINE)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlops.pipeline` = '{PIPELINE}'", max_results=100
    )
    return [r for r in runs if r.data.tags.get("airflow.run_id") == run_id]


def test_tasks_on_two_workers_share_one_mlflow_run_one_model_version_and_complete_lineage(
    celery_stack: CeleryStack,
) -> None:
    stack = celery_stack
    first = stack.start_worker("a")
    run_id = stack.trigger(PIPELINE)
    stack.wait_task(PIPELINE, run_id, "ingest", ("success",))
    stack.stop_worker("a")  # warm shutdown: whatever it runs finishes, it takes nothing new
    second = stack.start_worker("b")
    run = stack.wait_run(PIPELINE, run_id)
    tis = stack.task_instances(PIPELINE, run_id)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}

    # the split really happened: ingest's log is on the first machine only, train's on the second only
    assert first.task_logs(PIPELINE, run_id, "ingest") and not second.task_logs(PIPELINE, run_id, "ingest")
    assert second.task_logs(PIPELINE, run_id, "train") and not first.task_logs(PIPELINE, run_id, "train")

    runs = _pipeline_runs(stack, run_id)
    assert len(runs) == 1, [r.info.run_id for r in runs]  # one MLflow run for the DAG run, not one per worker
    mlflow_run = runs[0]
    assert mlflow_run.info.status == "FINISHED"
    tags = mlflow_run.data.tags
    for key in ("mlops.data_sha256", "mlops.spec_sha256", "mlops.snapshot_uri", "mlops.train_uri",
                "mlops.validation", "mlops.verdict"):  # fmt: skip
        assert tags.get(key), f"lineage tag {key} missing: {sorted(tags)}"
    # the data every later task read is the snapshot in the shared workspace, not a worker's disk
    assert tags["mlops.snapshot_uri"].startswith(stack.workspace + "/"), tags["mlops.snapshot_uri"]
    assert tags["mlops.train_uri"].startswith(stack.workspace + "/"), tags["mlops.train_uri"]
    key = tags["mlops.snapshot_uri"].removeprefix(f"s3://{stack.bucket}/")
    stack.s3.client().head_object(Bucket=stack.bucket, Key=key)

    client = stack.mlflow.client()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    version = versions[0]
    assert version.run_id == mlflow_run.info.run_id
    assert version.tags.get("mlops.data_sha256") == tags["mlops.data_sha256"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == version.version
    # nothing of the pipeline's state landed in a worker's project (no embedded store, no local workspace)
    for worker in (first, second):
        assert not (worker.project / ".mlops").exists(), worker.name
        assert not (worker.project / "mlruns").exists(), worker.name
    stack.stop_worker("b")


def test_the_embedded_defaults_are_refused_at_the_first_task_naming_the_executor_and_settings(
    celery_stack: CeleryStack,
) -> None:
    stack = celery_stack
    client = stack.mlflow.client()
    versions_before = len(client.search_model_versions(f"name = '{MODEL}'"))
    # This worker has a local MLflow store and no [mlops] workspace. (A worker without any mlflow_default
    # would still get the api-server's: Airflow 3 tasks look connections up through the execution API.)
    local_store = stack.base / "worker-defaults" / "project" / ".mlops" / "mlflow.db"
    worker = stack.start_worker("defaults", env={
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": f"sqlite:///{local_store}"}),
        "AIRFLOW__MLOPS__WORKSPACE": None,
    })  # fmt: skip
    try:
        run_id = stack.trigger(PIPELINE)
        run = stack.wait_run(PIPELINE, run_id, timeout=300)
        tis = stack.task_instances(PIPELINE, run_id)
        assert run["state"] == "failed"
        assert tis["ingest"]["state"] == "failed"
        assert tis["ingest"]["try_number"] == 1  # a setting to change: not retried (the spec allows 2)
        assert tis["train"]["state"] == "upstream_failed"
        logs = worker.task_logs(PIPELINE, run_id, "ingest")
        assert len(logs) == 1
        text = logs[0].read_text(errors="replace")
        assert "CeleryExecutor" in text
        assert "NotAllowedError" in text
        assert "mlflow_default" in text and "[mlops] workspace" in text and "s3://" in text
        # refused before anything was written: no store in the worker's project, no new model version
        assert not (worker.project / ".mlops").exists()
        assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions_before
    finally:
        stack.stop_worker("defaults")
