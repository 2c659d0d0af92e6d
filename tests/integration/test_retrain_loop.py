"""The retraining loop, as a user runs it: the factory's training DAG promotes a champion, the monitor DAG
checks live data against the champion's training data, and only drift queues an asset-triggered run of
the training DAG. In-process (``dag.test()``) up to the queue; in a running Airflow (the ``airflow_server``
fixture: api-server, scheduler, LocalExecutor) the scheduler then starts that run and it retrains."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.processes import wait_for
from tests.integration._monitor_helpers import (
    MONITOR_SPEC,
    asset_events,
    dag_runs,
    embedded_client,
    monitor_conf,
    queued_for,
    spec_dags,
    unpause,
    write_live_data,
)
from tests.integration._stage_helpers import make_project, states, unique, xcom

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_drift_queues_a_retrain_and_no_drift_does_not(airflow_home, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_provider.plan.build import retrain_asset_uri

    project = make_project(tmp_path, monkeypatch)
    name = unique("loop")
    dags = spec_dags(project, name)
    training, monitor = dags[name], dags[f"{name}_monitor"]
    for dag in (training, monitor):
        airflow_home.register_dag(dag)
    unpause(name)
    asset = retrain_asset_uri(name)

    # 1. the training DAG, as rendered from the spec, promotes the first champion
    first = airflow_home.dag_test(training)
    assert set(states(first).values()) == {"success"}, states(first)
    champion = xcom(first, "deploy")
    assert champion["alias"] == "champion"
    live = write_live_data(project, xcom(first, "ingest")["test_uri"])

    # 2. live data like the training data: checked, recorded, no retrain
    calm = airflow_home.dag_test(monitor, **monitor_conf("stable"))
    assert states(calm) == {"detect_drift": "success", "request_retrain": "skipped"}
    assert asset_events(asset) == [] and queued_for(asset) == []
    assert [r.run_id for r in dag_runs(name)] == [first.run_id]

    # 3. drifted live data: the monitor asks for a retrain, and the scheduler queues one
    stormy = airflow_home.dag_test(monitor, **monitor_conf("drifted"))
    assert states(stormy) == {"detect_drift": "success", "request_retrain": "success"}
    verdict = xcom(stormy, "detect_drift")
    assert verdict["dataset_drift"] is True and verdict["model_version"] == str(champion["version"])
    assert queued_for(asset) == [name]  # the scheduler's to-do: see the airflow_server test below
    (event,) = asset_events(asset)
    assert event["source_run_id"] == stormy.run_id and event["source_task_id"] == "request_retrain"
    assert event["extra"]["mlflow_run_id"] == verdict["mlflow_run_id"]
    assert event["extra"]["drifted_columns"] == verdict["drifted_columns"]

    # both checks are monitoring runs next to the training run, linked to the champion version
    client = embedded_client(project)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    monitoring = [r for r in runs if r.data.tags.get("mlops.run_type") == "monitor"]
    assert len(monitoring) == 2 and len(runs) == 3
    assert {r.data.tags["mlops.dataset_drift"] for r in monitoring} == {"true", "false"}
    assert {r.data.tags["mlops.model_version"] for r in monitoring} == {str(champion["version"])}
    assert {r.data.tags["mlops.current_data_uri"] for r in monitoring} == {str(p) for p in live.values()}


def test_the_running_scheduler_retrains_after_drift(airflow_server: AirflowServer) -> None:
    """The whole loop with no step done by hand: drift found by the monitor DAG's run makes the scheduler
    start an asset-triggered run of the training DAG, which trains on the source's new rows and registers
    a second version (on unchanged data it would reuse the cached model: no new version)."""
    import pandas as pd

    name = unique("loop_server")
    project = airflow_server.project_root
    source = project / "data" / name / "train.csv"
    source.parent.mkdir(parents=True)
    spec = MONITOR_SPEC.format(name=name).replace("data/breast_cancer.csv", f"data/{name}/train.csv", 1)
    spec = spec.replace('monitor:\n  schedule: "@daily"', "monitor:\n  schedule: null", 1)
    original = pd.read_csv(project / "include" / "data" / "breast_cancer.csv")
    original.to_csv(source, index=False)
    drifted = original.copy()
    features = [c for c in drifted.columns if c != "target"]
    drifted[features] = drifted[features] * 1.6
    live = project / "data" / "live"
    live.mkdir(parents=True, exist_ok=True)
    drifted.to_csv(live / "drifted.csv", index=False)
    with airflow_server.pipeline_spec(name, spec):
        first = airflow_server.trigger(name)
        airflow_server.wait_run(name, first, timeout=600)
        # the live rows, labelled since, join the training data
        pd.concat([original, drifted], ignore_index=True).to_csv(source, index=False)
        check = airflow_server.trigger(f"{name}_monitor", conf={"batch": "drifted"})
        airflow_server.wait_run(f"{name}_monitor", check, timeout=600)
        assert airflow_server.task_states(f"{name}_monitor", check) == {
            "detect_drift": "success", "request_retrain": "success"}  # fmt: skip

        def retrain_run() -> dict[str, Any] | None:
            status, body = airflow_server.request("GET", f"/api/v2/dags/{name}/dagRuns")
            assert status == 200, body
            runs = [r for r in body["dag_runs"] if r["dag_run_id"] != first]
            assert len(runs) <= 1, runs  # one drift, one retrain
            return runs[0] if runs else None

        wait_for(lambda: retrain_run() is not None, what="the scheduler's asset-triggered run", timeout=120)
        retrain = retrain_run()
        assert retrain is not None and retrain["run_type"] == "asset_triggered", retrain
        airflow_server.wait_run(name, retrain["dag_run_id"], timeout=600)
        status, body = airflow_server.request(
            "GET", f"{airflow_server.run_path(name, retrain['dag_run_id'])}/upstreamAssetEvents")
        assert status == 200, body
        (event,) = body["asset_events"]
        assert event["source_dag_id"] == f"{name}_monitor" and event["source_run_id"] == check, event
        assert event["extra"]["drifted_columns"], event

        client = airflow_server.mlflow.client()
        versions = client.search_model_versions(f"name='{name}_model'")
        assert sorted(int(v.version) for v in versions) == [1, 2]  # the retrain registered a new version
        (retrained,) = [v for v in versions if v.version == "2"]
        tags = client.get_run(retrained.run_id).data.tags
        assert tags["airflow.run_id"] == retrain["dag_run_id"] and tags["mlops.verdict"] == "passed", tags
        assert client.get_model_version_by_alias(f"{name}_model", "champion").version == "2"
