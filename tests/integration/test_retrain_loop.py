"""The retraining loop, as a user runs it: the factory's training DAG promotes a champion, the monitor DAG
checks live data against the champion's training data, and only drift queues an asset-triggered run of
the training DAG (through the scheduler's own DAG-run creation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration._monitor_helpers import (
    asset_events,
    dag_runs,
    embedded_client,
    monitor_conf,
    queued_for,
    scheduler_creates_dag_runs,
    spec_dags,
    unpause,
    write_live_data,
)
from tests.integration._stage_helpers import make_project, states, unique, xcom

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
    scheduler_creates_dag_runs()
    assert asset_events(asset) == [] and queued_for(asset) == []
    assert [r.run_id for r in dag_runs(name)] == [first.run_id]

    # 3. drifted live data: the monitor asks for a retrain, and the scheduler queues one
    stormy = airflow_home.dag_test(monitor, **monitor_conf("drifted"))
    assert states(stormy) == {"detect_drift": "success", "request_retrain": "success"}
    verdict = xcom(stormy, "detect_drift")
    assert verdict["dataset_drift"] is True and verdict["model_version"] == str(champion["version"])
    assert queued_for(asset) == [name]
    scheduler_creates_dag_runs()
    assert queued_for(asset) == []  # consumed by the new run
    (retrain,) = [r for r in dag_runs(name) if r.run_id != first.run_id]
    assert str(retrain.run_type) in ("asset_triggered", "DagRunType.ASSET_TRIGGERED")
    assert str(retrain.state) in ("queued", "DagRunState.QUEUED")
    (trigger,) = retrain.consumed_asset_events
    assert trigger.source_run_id == stormy.run_id and trigger.source_task_id == "request_retrain"
    assert trigger.extra["mlflow_run_id"] == verdict["mlflow_run_id"]
    assert trigger.extra["drifted_columns"] == verdict["drifted_columns"]

    # both checks are monitoring runs next to the training run, linked to the champion version
    client = embedded_client(project)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    monitoring = [r for r in runs if r.data.tags.get("mlops.run_type") == "monitor"]
    assert len(monitoring) == 2 and len(runs) == 3
    assert {r.data.tags["mlops.dataset_drift"] for r in monitoring} == {"true", "false"}
    assert {r.data.tags["mlops.model_version"] for r in monitoring} == {str(champion["version"])}
    assert {r.data.tags["mlops.current_data_uri"] for r in monitoring} == {str(p) for p in live.values()}
