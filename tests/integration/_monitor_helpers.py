"""Helpers of the monitor and retrain-loop tests: a champion model recorded the way the training DAG
records it, live data sets with and without drift, the factory's DAGs, and Airflow's asset bookkeeping."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

MONITOR_SPEC = """\
version: 1
name: {name}
task: classification
schedule: null
defaults: {{retries: 1, retry_delay: 1s, execution_timeout: 10m}}
mlflow: {{experiment: {name}, model: {name}_model}}
ingest:
  source: data/breast_cancer.csv
  target: target
  split: {{test_size: 0.25, seed: 7, stratify: true}}
train:
  estimator: sklearn.ensemble.RandomForestClassifier
  params: {{n_estimators: 20, max_depth: 4, random_state: 0}}
evaluate:
  metrics: [roc_auc, accuracy]
  thresholds: {{roc_auc: {{min: 0.8}}}}
deploy:
  alias: champion
monitor:
  schedule: "@daily"
  current: "data/live/{{{{ dag_run.conf.get('batch', 'latest') }}}}.csv"
  drift: {{share: 0.5}}
  retrain: true
"""


def embedded_client(root: Path) -> Any:
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    uri = embedded_tracking_uri(root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def seed_champion(
    root: Path, *, model_name: str, experiment: str, dag_id: str, alias: str = "champion"
) -> dict[str, Any]:
    """Ingest ``data/breast_cancer.csv`` with the ingest stage, train a small forest on the train split,
    log it with the train stage's ``log_model`` and register it holding ``@alias`` — what a training DAG
    run leaves behind, without running one. Returns the ingest result plus ``version`` and ``run_id``.

    The forest is smaller than MONITOR_SPEC's (2 trees of depth 2): a candidate the spec trains beats it,
    as a retrained model must (a tie keeps the champion)."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.stages.ingest import ingest
    from mlops_provider.stages.train import log_model
    from mlops_provider.tracking import tags as T

    client = embedded_client(root)
    (root / ".mlops").mkdir(exist_ok=True)
    artifacts = (root / ".mlops" / "artifacts").as_uri()
    experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
    run_id = "manual__seed"
    run = client.create_run(experiment_id, tags={T.DAG_ID: dag_id, T.RUN_ID: run_id})
    ingested = ingest("data/breast_cancer.csv", dag_id=dag_id, run_id=run_id, target="target", test_size=0.25,
                      seed=7, stratify=True, client=client, mlflow_run_id=run.info.run_id)
    train = pd.read_parquet(ingested["train_uri"])
    features = train.drop(columns="target")
    model = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)
    model.fit(features, train["target"])
    with MLflowHook().activate():  # the embedded store of ``root``, then back (env var included)
        info = log_model(model, features.head(5), mlflow_run_id=run.info.run_id)
        client.create_registered_model(model_name)
        version = client.create_model_version(model_name, source=info.model_uri, run_id=run.info.run_id,
                                              model_id=info.model_id)
    client.set_registered_model_alias(model_name, alias, version.version)
    client.set_terminated(run.info.run_id)
    return {**ingested, "version": str(version.version), "run_id": run.info.run_id}


def write_live_data(root: Path, test_uri: str) -> dict[str, Path]:
    """``data/live/stable.csv``: the held-out test split (same distribution as training, with labels).
    ``data/live/drifted.csv``: the same rows with every feature scaled by 1.6 (labels kept)."""
    import pandas as pd

    live = root / "data" / "live"
    live.mkdir(parents=True, exist_ok=True)
    stable = pd.read_parquet(test_uri)
    drifted = stable.copy()
    features = [c for c in drifted.columns if c != "target"]
    drifted[features] = drifted[features] * 1.6
    paths = {"stable": live / "stable.csv", "drifted": live / "drifted.csv"}
    stable.to_csv(paths["stable"], index=False)
    drifted.to_csv(paths["drifted"], index=False)
    return paths


def spec_dags(root: Path, name: str, text: str | None = None) -> dict[str, Any]:
    """The DAGs the factory renders from ``dags/pipelines/<name>.yaml`` (written from MONITOR_SPEC)."""
    from mlops_provider.loader import load_pipelines

    folder = root / "dags" / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text or MONITOR_SPEC.format(name=name))
    return load_pipelines(folder=folder, project_root=root)


def unpause(dag_id: str) -> None:
    """New DAGs are paused; Airflow queues asset-triggered runs only for unpaused ones."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))


def asset_events(uri: str) -> list[dict[str, Any]]:
    """Every event Airflow recorded for the asset ``uri``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
        ).all()
        return [{"source_dag_id": e.source_dag_id, "source_task_id": e.source_task_id,
                 "source_run_id": e.source_run_id, "extra": dict(e.extra or {})} for e in rows]


def queued_for(uri: str) -> list[str]:
    """DAG ids with an asset-triggered run queued by the asset ``uri`` (the scheduler's to-do list)."""
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.scalars(
            select(AssetDagRunQueue.target_dag_id)
            .join(AssetModel, AssetDagRunQueue.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
        ).all())


def dag_runs(dag_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).options(selectinload(DagRun.consumed_asset_events))
        ).all()
        session.expunge_all()
        return list(runs)


def monitor_conf(batch: str) -> dict[str, Any]:
    return {"run_conf": {"batch": batch}, "logical_date": dt.datetime.now(dt.timezone.utc)}
