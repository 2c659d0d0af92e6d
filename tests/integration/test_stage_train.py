"""Train stage: allow-listed estimators, user entrypoints, the container-ready command line.

Real scikit-learn, real MLflow (embedded store; a real ``mlflow server`` for the command line).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration._stage_helpers import make_project, pipeline_runs, states, try_number, unique, xcom

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def _pipeline(dag_id: str, experiment: str, source: str, **train_kwargs: object):  # type: ignore[no-untyped-def]
    from airflow.sdk import DAG

    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.operators.train import TrainModelOperator

    common = {"experiment": experiment, "retries": 2, "retry_delay": dt.timedelta(seconds=0)}
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        IngestDatasetOperator(task_id="ingest", source=source, seed=3, **common) >> TrainModelOperator(
            task_id="train", seed=3, **common, **train_kwargs
        )
    return dag


def test_estimator_is_logged_with_signature_example_and_params(airflow_home, project: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import Model

    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    experiment = unique("exp")
    dag = _pipeline(unique("train_rf"), experiment, "data/breast_cancer.csv",
                    estimator="sklearn.ensemble.RandomForestClassifier",
                    hyperparams={"n_estimators": 10, "max_depth": 3})
    run = airflow_home.dag_test(dag)
    assert states(run) == {"ingest": "success", "train": "success"}

    out, ingested = xcom(run, "train"), xcom(run, "ingest")
    assert out["model_uri"] == f"models:/{out['model_id']}"
    assert out["mlflow_run_id"] == ingested["mlflow_run_id"]
    assert out["params"] == {"n_estimators": 10, "max_depth": 3, "random_state": 3}  # seed → random_state

    uri = embedded_tracking_uri(project)
    client = MlflowClient(uri)
    (mlflow_run,) = pipeline_runs(client, experiment)
    params = mlflow_run.data.params
    assert params["train.estimator"] == "sklearn.ensemble.RandomForestClassifier"
    logged = (params["param.n_estimators"], params["param.random_state"], params["train.seed"])
    assert logged == ("10", "3", "3")
    logged_model = client.get_logged_model(out["model_id"])
    assert (logged_model.source_run_id, logged_model.experiment_id, str(logged_model.status)) == (
        mlflow_run.info.run_id, mlflow_run.info.experiment_id, "READY")
    assert logged_model.artifact_location.startswith((project / ".mlops" / "artifacts").as_uri())

    mlflow.set_tracking_uri(uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(out["model_uri"], dst_path=str(project / "dl")))
        meta = Model.load(str(local / "MLmodel"))
        assert meta.flavors["sklearn"]["serialization_format"] == "cloudpickle"
        assert [c.name for c in meta.signature.inputs.inputs] == ingested["features"]
        assert (local / "input_example.json").is_file()
        requirements = (local / "requirements.txt").read_text()
        assert "scikit-learn==" in requirements and "cloudpickle==" in requirements
        test = pd.read_parquet(ingested["test_uri"])
        predictions = mlflow.pyfunc.load_model(out["model_uri"]).predict(test[ingested["features"]])
        assert (predictions == test["target"]).mean() > 0.9
    finally:
        mlflow.set_tracking_uri(None)


def test_disallowed_estimator_fails_at_once_and_ends_run_failed(airflow_home, project: Path) -> None:
    from mlflow import MlflowClient

    from mlops_provider.estimators import estimator_class
    from mlops_provider.exceptions import NotAllowedError
    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    with pytest.raises(NotAllowedError, match=r"'subprocess\.Popen' is not allowed.*\(sklearn, xgboost"):
        estimator_class("subprocess.Popen")

    experiment = unique("exp")
    # a hand-written DAG skips `mlops lint`; the allow-list still holds when the task runs
    run = airflow_home.dag_test(_pipeline(unique("train_evil"), experiment, "data/breast_cancer.csv",
                                          estimator="subprocess.Popen", hyperparams={"args": ["true"]}))
    assert states(run) == {"ingest": "success", "train": "failed"}
    assert try_number(run, "train") == 1
    (mlflow_run,) = pipeline_runs(MlflowClient(embedded_tracking_uri(project)), experiment)
    assert mlflow_run.info.status == "FAILED"


ENTRYPOINT = '''
import numpy as np
from sklearn.linear_model import Ridge


class LogTargetRidge:
    """Defined in the user's file: must load where this file is not importable."""

    def __init__(self, alpha):
        self.inner = Ridge(alpha=alpha)

    def fit(self, X, y):
        self.inner.fit(X, np.log(y))
        return self

    def predict(self, X):
        return np.exp(self.inner.predict(X))


def build(X_train, y_train, params):
    return LogTargetRidge(**params).fit(X_train, y_train)
'''


def test_entrypoint_model_loads_without_the_users_file(airflow_home, project: Path) -> None:
    import pandas as pd

    from mlops_provider.exceptions import NotAllowedError
    from mlops_provider.hooks.mlflow import embedded_tracking_uri
    from mlops_provider.stages.train import entrypoint_function

    (project / "models").mkdir()
    (project / "models" / "log_ridge.py").write_text(ENTRYPOINT)
    (project.parent / "outside.py").write_text("def build(X, y, params): pass\n")
    with pytest.raises(NotAllowedError, match=r"train entrypoint '\.\./outside\.py' resolves to .* outside"):
        entrypoint_function("../outside.py:build")

    dag = _pipeline(unique("train_entry"), unique("exp"), "data/diabetes.csv",
                    entrypoint="models/log_ridge.py:build", hyperparams={"alpha": 0.1})
    run = airflow_home.dag_test(dag)
    assert states(run) == {"ingest": "success", "train": "success"}
    out, ingested = xcom(run, "train"), xcom(run, "ingest")
    assert out["model_class"].endswith(".LogTargetRidge")

    features = pd.read_parquet(ingested["test_uri"])[ingested["features"]].head(3)
    code = textwrap.dedent(f"""
        import json, sys, mlflow, pandas as pd
        mlflow.set_tracking_uri({embedded_tracking_uri(project)!r})
        model = mlflow.pyfunc.load_model({out["model_uri"]!r})
        print(json.dumps(list(model.predict(pd.read_json(sys.stdin, orient="split")))))
    """)
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    done = subprocess.run([sys.executable, "-c", code], input=features.to_json(orient="split"), env=env,
                          cwd=project.parent, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(predictions) == 3 and all(25 < p < 346 for p in predictions)  # diabetes target range


def test_command_line_trains_against_a_tracking_server(mlflow_server_local, project: Path,
                                                       tmp_path: Path) -> None:
    """``python -m mlops_provider.stages.train``: what a container runs, with MLflow's env only."""
    import pandas as pd

    train_uri = tmp_path / "train.parquet"
    pd.read_csv(project / "data" / "diabetes.csv").to_parquet(train_uri, index=False)
    client = mlflow_server_local.client()
    run_id = client.create_run(client.create_experiment(unique("exp"))).info.run_id
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server_local.tracking_uri}
    done = subprocess.run(
        [sys.executable, "-m", "mlops_provider.stages.train", "--train-uri", str(train_uri),
         "--target", "target",
         "--estimator", "sklearn.linear_model.Lasso", "--params", '{"alpha": 0.5}', "--seed", "1",
         "--run-id", run_id, "--output", str(tmp_path / "out.json")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["mlflow_run_id"] == run_id and out["params"] == {"alpha": 0.5, "random_state": 1}
    assert client.get_logged_model(out["model_id"]).source_run_id == run_id
    assert client.get_run(run_id).data.params["param.alpha"] == "0.5"
