"""Faults on the real CeleryExecutor deployment lose nothing (``celery_stack``, tests/fixtures/celery.py).

Each test runs the example pipeline (retries 2, 5 s apart) through Celery workers and breaks one real
component in the middle of the run: a worker SIGKILLed while ``train`` runs, the MLflow server down, the
object store down, the scheduler restarted. The run must complete with exactly one MLflow run, one new model
version and no MLflow run left RUNNING.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.celery import CeleryStack
from tests.fixtures.processes import wait_for

pytestmark = pytest.mark.timeout(1500)


def _runs_of(stack: CeleryStack, pipeline: str, run_id: str) -> list[Any]:
    client = stack.mlflow.client()
    experiment = client.get_experiment_by_name(pipeline)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    return [r for r in runs if r.data.tags.get("airflow.run_id") == run_id]


def _running(stack: CeleryStack, pipeline: str) -> list[str]:
    client = stack.mlflow.client()
    experiment = client.get_experiment_by_name(pipeline)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs]


def _assert_complete(stack: CeleryStack, pipeline: str, run_id: str) -> None:
    """The run succeeded with one MLflow run (FINISHED), one model version holding @champion, none RUNNING."""
    run = stack.wait_run(pipeline, run_id)
    tis = stack.task_instances(pipeline, run_id)
    assert run["state"] == "success", {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()}
    runs = _runs_of(stack, pipeline, run_id)
    statuses = [(r.info.run_id, r.info.status) for r in runs]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", statuses
    client = stack.mlflow.client()
    versions = client.search_model_versions(f"name = '{pipeline}_model'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    assert versions[0].run_id == runs[0].info.run_id
    assert str(client.get_model_version_by_alias(f"{pipeline}_model", "champion").version) == "1"
    assert not _running(stack, pipeline)


def _log_text(stack: CeleryStack, pipeline: str, run_id: str, task_id: str) -> str:
    return "\n".join(
        path.read_text(errors="replace")
        for worker in stack.workers.values()
        for path in worker.task_logs(pipeline, run_id, task_id)
    )


def test_a_worker_killed_during_train_is_retried_on_the_other_and_nothing_is_duplicated(
    celery_stack: CeleryStack,
) -> None:
    stack = celery_stack
    pipeline = stack.add_pipeline("fault_worker_killed")
    stack.start_worker("doomed")
    run_id = stack.trigger(pipeline)
    stack.wait_task(pipeline, run_id, "train", ("running",))
    stack.stop_worker("doomed", kill=True)  # the machine dies, its running task with it
    stack.start_worker("survivor")
    try:
        _assert_complete(stack, pipeline, run_id)
        train = stack.task_instances(pipeline, run_id)["train"]
        assert train["try_number"] >= 2  # the killed try was declared lost and retried ...
        survivor = stack.workers["survivor"]
        assert survivor.task_logs(pipeline, run_id, "train")  # ... on the surviving worker
    finally:
        stack.stop_worker("survivor")


def test_a_worker_killed_on_the_last_try_fails_the_run_and_ends_its_mlflow_run_failed(
    celery_stack: CeleryStack,
) -> None:
    """No try left: the scheduler declares the lost task failed and the dag processor runs its failure
    callback (no worker is left to run it), which ends the pipeline's MLflow run FAILED naming the task."""
    from mlops_provider.tracking import tags as T

    stack = celery_stack
    pipeline = stack.add_pipeline("fault_killed_last_try", retries=0)
    stack.start_worker("doomed-last")
    run_id = stack.trigger(pipeline)
    stack.wait_task(pipeline, run_id, "train", ("running",))
    stack.stop_worker("doomed-last", kill=True)
    run = stack.wait_run(pipeline, run_id)
    tis = stack.task_instances(pipeline, run_id)
    assert run["state"] == "failed", {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()}
    assert (tis["train"]["state"], tis["train"]["try_number"]) == ("failed", 1)

    def ended() -> bool:
        return [r.info.status for r in _runs_of(stack, pipeline, run_id)] == ["FAILED"]

    wait_for(ended, what="the pipeline's MLflow run ended FAILED by the failure callback", timeout=120)
    (mlflow_run,) = _runs_of(stack, pipeline, run_id)
    assert mlflow_run.data.tags[T.FAILED_TASK] == "train"
    assert not _running(stack, pipeline)
    assert stack.mlflow.client().search_model_versions(f"name = '{pipeline}_model'") == []


def test_the_mlflow_server_down_fails_the_task_naming_it_and_the_retry_completes_the_run(
    celery_stack: CeleryStack,
) -> None:
    stack = celery_stack
    pipeline = stack.add_pipeline("fault_mlflow_down")
    stack.start_worker("w1")
    try:
        run_id = stack.trigger(pipeline)
        stack.wait_task(pipeline, run_id, "ingest", ("success",))
        stack.mlflow_launch.stop()
        try:
            failed = stack.wait_task(pipeline, run_id, "validate", ("up_for_retry", "failed"), timeout=300)
        finally:
            stack.mlflow_launch.start_again()
        assert failed["state"] == "up_for_retry"  # transient: retried, not failed for good
        assert f"MLflow tracking server at {stack.mlflow.tracking_uri} is unreachable" in _log_text(
            stack, pipeline, run_id, "validate"
        )
        _assert_complete(stack, pipeline, run_id)
        assert stack.task_instances(pipeline, run_id)["validate"]["try_number"] >= 2
    finally:
        stack.stop_worker("w1")


def test_s3_unreachable_during_ingest_fails_the_task_naming_it_and_the_retry_completes_the_run(
    celery_stack: CeleryStack,
) -> None:
    """The workspace's object store is down when ``ingest`` writes the snapshot (the stack's MLflow server
    keeps its artifacts there too): up_for_retry with a message naming the S3 endpoint, then one run."""
    stack = celery_stack
    pipeline = stack.add_pipeline("fault_s3_down")
    stack.start_worker("w3")
    try:
        stack.s3.stop()
        try:
            run_id = stack.trigger(pipeline)
            failed = stack.wait_task(pipeline, run_id, "ingest", ("up_for_retry", "failed"), timeout=300)
        finally:
            stack.s3.start_again()
        assert failed["state"] == "up_for_retry"  # transient: retried, not failed for good
        log = _log_text(stack, pipeline, run_id, "ingest")
        named = f"S3 endpoint for s3://{stack.bucket}/workspace/"
        assert named in log and "is unreachable" in log, log[-3000:]
        _assert_complete(stack, pipeline, run_id)
        assert stack.task_instances(pipeline, run_id)["ingest"]["try_number"] >= 2
        # the snapshot the run trained on is in the workspace once, written by the retry
        from mlops_provider.storage.workspace import SNAPSHOT

        keys = _keys(stack, f"workspace/{pipeline}/")
        assert len([key for key in keys if key.endswith(f"/{SNAPSHOT}")]) == 1, keys
    finally:
        stack.stop_worker("w3")


def _keys(stack: CeleryStack, prefix: str) -> list[str]:
    pages = stack.s3.client().get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_scheduler_restarted_in_the_middle_of_a_run_completes_it(celery_stack: CeleryStack) -> None:
    stack = celery_stack
    pipeline = stack.add_pipeline("fault_scheduler_restarted")
    stack.start_worker("w2")
    try:
        run_id = stack.trigger(pipeline)
        stack.wait_task(pipeline, run_id, "train", ("running",))
        stack.restart("scheduler")
        _assert_complete(stack, pipeline, run_id)
    finally:
        stack.stop_worker("w2")
