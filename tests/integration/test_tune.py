"""train.tune through Airflow (``dag.test``): the search runs as mapped tasks, every trial is an MLflow
child run of the pipeline run, the registered model uses the best trial's parameters; a shard that runs
again finishes only what it still owes; a parameter the estimator does not take fails at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import edit_spec, embedded_client, make_project

pytestmark = pytest.mark.integration

TUNE = {
    "trials": 6, "parallel": 2, "cv": 3, "seed": 11,
    "space": {"n_estimators": {"int": [5, 40]}, "max_depth": {"int": [2, 8]},
              "max_features": {"choice": ["sqrt", 0.5]}},
}  # fmt: skip


def _tuned_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tune: dict) -> Path:
    root = make_project(tmp_path, monkeypatch, "wine_classifier.yaml")
    spec = root / "dags" / "pipelines" / "wine_classifier.yaml"
    edit_spec(spec, train={"params": {"random_state": 7}, "tune": tune})
    return spec


def test_the_search_runs_as_mapped_tasks_and_the_model_uses_the_best_trial(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from mlops_provider.run import run_spec

    spec = _tuned_project(tmp_path, monkeypatch, TUNE)
    result = run_spec(spec)
    assert result.ok and not result.rejected, result.summary()
    with create_session() as session:
        shards = session.query(TaskInstance).filter_by(dag_id="wine_classifier", run_id=result.run_id,
                                                       task_id="tune").all()
    assert sorted((ti.map_index, str(getattr(ti.state, "value", ti.state))) for ti in shards) == [
        (0, "success"), (1, "success")
    ]

    client = embedded_client(tmp_path / "project")
    experiment = client.get_experiment_by_name("wine_classifier").experiment_id
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{result.mlflow_run_id}'")
    assert len(children) == 6 and {c.info.status for c in children} == {"FINISHED"}
    assert sorted(int(c.data.tags["mlops.tune.trial"]) for c in children) == list(range(6))
    assert {c.data.tags["mlops.tune.shard"] for c in children} == {"0", "1"}
    assert all("cv_f1" in c.data.metrics and "duration_seconds" in c.data.metrics for c in children)

    best = json.loads(client.get_run(result.mlflow_run_id).data.tags["mlops.tune.best"])
    values = [c.data.metrics["cv_f1"] for c in children]
    assert best["value"] == max(values)  # f1: higher is better
    trained = result.xcom["train"]
    assert trained["tune"]["best_params"] == best["params"] and trained["tune"]["trials"] == 6
    assert trained["params"] == {"random_state": 7, **best["params"]}  # fixed params plus the best ones
    version = client.get_model_version("wine_cultivar", result.model_version)
    pipeline_params = client.get_run(version.run_id).data.params
    assert pipeline_params["param.n_estimators"] == str(best["params"]["n_estimators"])


def test_a_shard_that_runs_again_only_finishes_what_it_owes(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a retried shard does: the trials it finished are in MLflow, it runs none of them again."""
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri
    from mlops_provider.stages import tune

    root = make_project(tmp_path, monkeypatch, "wine_classifier.yaml")
    client = MlflowClient(embedded_tracking_uri(root))
    experiment = client.create_experiment("tune-retry")
    parent = client.create_run(experiment).info.run_id
    frame = pd.read_csv(root / "include" / "data" / "wine.csv")
    x, y = frame.drop(columns="target"), frame["target"]
    kwargs = dict(experiment_id=experiment, parent_run_id=parent, shard=0, parallel=1, trials=4,
                  space=TUNE["space"], estimator="sklearn.ensemble.RandomForestClassifier",
                  params={"random_state": 7}, x=x, y=y, columns=None, transform=None,
                  task="classification", metric="accuracy", cv=3, seed=11)  # fmt: skip
    first = tune.run_shard(client, **{**kwargs, "trials": 2})  # "crashed" after 2 of 4
    assert first["trials"] == 2
    again = tune.run_shard(client, **kwargs)
    assert (again["owed"], again["trials"]) == (2, 2)
    done = tune.finished_trials(client, experiment, parent, "accuracy")
    assert sorted(t.number for t in done) == [0, 1, 2, 3]  # no duplicate numbers, none lost
    assert tune.run_shard(client, **kwargs)["trials"] == 0  # nothing left to do


def test_a_parameter_the_estimator_does_not_take_fails_before_any_trial(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.run import run_spec

    spec = _tuned_project(tmp_path, monkeypatch, {**TUNE, "space": {"n_estimatorz": {"int": [5, 40]}}})
    result = run_spec(spec)
    assert result.state == "failed"
    failed = [t for t in result.tasks if t.task_id == "tune"]
    assert failed and all(t.state == "failed" and t.tries == 1 for t in failed), result.summary()
    assert "'n_estimatorz'" in (failed[0].error or "") and "does not take" in (failed[0].error or "")
