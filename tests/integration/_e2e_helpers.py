"""Helpers of the evaluate/register/deploy and end-to-end tests: a throw-away Airflow project with real
data and real specs, and what a user would look at afterwards (task states, registry, MLflow run)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.mlflow import preserved_mlflow_uris
from tests.integration._stage_helpers import MLFLOW_ENV

REPO = Path(__file__).resolve().parents[2]
E2E_SPECS = REPO / "tests" / "specs" / "e2e"


def write_datasets(folder: Path) -> None:
    """scikit-learn's bundled data sets as CSV: breast cancer (binary), wine (3 classes), diabetes."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    folder.mkdir(parents=True, exist_ok=True)
    for name, loader in (
        ("breast_cancer", load_breast_cancer),
        ("wine", load_wine),
        ("diabetes", load_diabetes),
    ):
        loader(as_frame=True).frame.to_csv(folder / f"{name}.csv", index=False)


def make_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *specs: str) -> Path:
    """``<tmp>/project`` with ``include/data/*.csv`` and the named e2e specs in ``dags/pipelines/``.

    The project root is ``[mlops] project_root``; MLflow falls back to its embedded ``.mlops/`` store
    unless the test configures a server.
    """
    root = tmp_path / "project"
    write_datasets(root / "include" / "data")
    (root / "dags" / "pipelines").mkdir(parents=True)
    for name in specs:
        (root / "dags" / "pipelines" / name).write_text((E2E_SPECS / name).read_text())
    for variable in MLFLOW_ENV:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(root))
    return root


def edit_spec(path: Path, **changes: Any) -> None:
    """Change top-level sections of a spec file, as a data scientist's commit would."""
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def fluent_uris(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.sklearn.load_model``) at ``uri`` for a block, then restore."""
    import mlflow

    with preserved_mlflow_uris():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield


def server_client(server: Any) -> Any:
    """A client of a test ``mlflow server`` for both tracking and registry (never the process default)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.tracking_uri, registry_uri=server.tracking_uri)


def embedded_client(root: Path) -> Any:
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    uri = embedded_tracking_uri(root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(client: Any, model: str) -> list[Any]:
    """Every version of a registered model, oldest first ([] when the model does not exist).

    Fetched one by one: search results do not carry the aliases.
    """
    found = sorted(client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version))
    return [client.get_model_version(model, str(v.version)) for v in found]


def alias_holder(client: Any, model: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def verdict_artifact(client: Any, run_id: str) -> dict[str, Any]:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "evaluation/verdict.json", tmp)
        return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def training_dag(
    dag_id: str,
    *,
    experiment: str,
    model: str,
    source: str = "include/data/breast_cancer.csv",
    thresholds: dict[str, dict[str, float]] | None = None,
    on_rejection: str = "skip",
    retries: int = 2,
    register_class: type | None = None,
    extra: Any = None,
    hyperparams: dict[str, Any] | None = None,
) -> Any:
    """A hand-written DAG of the stage operators: ingest → train → evaluate → register → deploy.

    ``register_class`` swaps in a RegisterModelOperator subclass; ``extra(dag, tasks)`` adds tasks.
    """
    import datetime as dt

    from airflow.sdk import DAG

    from mlops_provider.operators.deploy import PromoteModelOperator
    from mlops_provider.operators.evaluate import EvaluateModelOperator
    from mlops_provider.operators.ingest import IngestDatasetOperator
    from mlops_provider.operators.register import RegisterModelOperator
    from mlops_provider.operators.train import TrainModelOperator

    common = {
        "experiment": experiment,
        "model_name": model,
        "pipeline": dag_id,
        "retries": retries,
        "retry_delay": dt.timedelta(seconds=0),
    }
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        tasks = {
            "ingest": IngestDatasetOperator(task_id="ingest", source=source, stratify=True, seed=5, **common),
            "train": TrainModelOperator(
                task_id="train",
                estimator="sklearn.ensemble.RandomForestClassifier",
                hyperparams=hyperparams or {"n_estimators": 20, "max_depth": 4},
                seed=0,
                **common,
            ),
            "evaluate": EvaluateModelOperator(
                task_id="evaluate",
                metrics=["roc_auc", "accuracy", "f1"],
                thresholds=thresholds if thresholds is not None else {"roc_auc": {"min": 0.9}},
                champion_metric="roc_auc",
                champion_alias="champion",
                on_rejection=on_rejection,
                **common,
            ),
            "register": (register_class or RegisterModelOperator)(
                task_id="register", aliases=["challenger"], tags={"team": "tests"}, **common
            ),
            "deploy": PromoteModelOperator(task_id="deploy", alias="champion", **common),
        }
        tasks["ingest"] >> tasks["train"] >> tasks["evaluate"] >> tasks["register"] >> tasks["deploy"]
        if extra is not None:
            extra(dag, tasks)
    return dag


#: forests that beat each other in this order on the breast-cancer test split (a candidate must beat
#: the champion)
STRONGER = ({"n_estimators": 2, "max_depth": 1}, {"n_estimators": 5, "max_depth": 2},
            {"n_estimators": 20, "max_depth": 4})


def serving_dag(dag_id: str, experiment: str, model: str, target: dict[str, Any], step: int, *,
                retries: int = 0, retry_delay: float = 0) -> Any:
    """:func:`training_dag` whose deploy serves on ``target``, with a forest stronger than ``step - 1``'s."""
    import datetime as dt

    dag = training_dag(dag_id, experiment=experiment, model=model, hyperparams=STRONGER[step])
    deploy = dag.get_task("deploy")
    deploy.targets = [target]
    deploy.target_column = "target"
    deploy.retries = retries
    deploy.retry_delay = dt.timedelta(seconds=retry_delay)
    return dag
