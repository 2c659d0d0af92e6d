"""Register stage: one version per pipeline run, with aliases and lineage — even when the task is retried.

Real MLflow (embedded store), real Airflow retries through ``dag.test()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_provider.operators.register import RegisterModelOperator
from tests.integration._e2e_helpers import (
    alias_holder,
    embedded_client,
    fluent_uris,
    make_project,
    training_dag,
    unique,
    versions,
)

pytestmark = pytest.mark.integration


class RegisterThenCrash(RegisterModelOperator):
    """Registers, then dies on its first try before reporting success (a worker lost mid-task)."""

    def execute(self, context: Any) -> dict[str, Any]:
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost after the registry write")
        return result


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def test_retried_register_finds_its_version_instead_of_creating_another(airflow_home, project: Path) -> None:
    from mlops_provider.run import run_dag

    model, dag_id = unique("bc"), unique("register_retry")
    result = run_dag(
        training_dag(
            dag_id, experiment=unique("exp"), model=model, retries=1, register_class=RegisterThenCrash
        )
    )

    assert result.ok, result.failure
    assert (result.task("register").state, result.task("register").tries) == ("success", 2)
    client = embedded_client(project)
    (version,) = versions(client, model)  # exactly one version despite two register attempts
    assert result.xcom["register"] == {"model_name": model, "version": "1", "model_uri": f"models:/{model}/1"}
    assert version.run_id == result.mlflow_run_id
    assert version.source == result.xcom["train"]["model_uri"]
    assert alias_holder(client, model, "challenger") == alias_holder(client, model, "champion") == "1"

    run_tags = client.get_run(result.mlflow_run_id).data.tags
    tags = version.tags
    for key in ("airflow.dag_id", "airflow.run_id", "mlops.pipeline", "mlops.data_sha256"):
        assert tags[key] == run_tags[key], key
    assert tags["airflow.dag_id"] == dag_id and tags["airflow.run_id"] == result.run_id
    assert tags["airflow.try_number"] == "2"  # the try that finished the job
    assert tags["team"] == "tests"
    assert tags["mlops.verdict"] == "passed"
    assert float(tags["mlops.test_roc_auc"]) == pytest.approx(
        result.xcom["evaluate"]["metrics"]["roc_auc"], abs=1e-5
    )


def test_register_keeps_one_version_per_run_when_called_again(project: Path) -> None:
    """The stage function itself: a second call for the same run and model is a no-op that re-applies tags."""
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    from mlops_provider.stages.register import register
    from mlops_provider.stages.train import log_model

    client = embedded_client(project)
    (project / ".mlops").mkdir(exist_ok=True)
    artifacts = (project / ".mlops" / "artifacts").as_uri()  # not MLflow's default, ./mlruns in the cwd
    run_id = client.create_run(
        client.create_experiment(unique("exp"), artifact_location=artifacts)
    ).info.run_id
    model = unique("m")
    with fluent_uris(
        client.tracking_uri
    ):  # registering a models:/m-... source resolves it via the fluent URIs
        x = pd.DataFrame({"x": [0.0, 1.0]})
        info = log_model(DummyClassifier().fit(x, [0, 1]), x, mlflow_run_id=run_id)
        first, created = register(
            client, model_name=model, model_uri=info.model_uri, run_id=run_id, aliases=["a"], tags={"k": "1"}
        )
        again, created_again = register(
            client,
            model_name=model,
            model_uri=info.model_uri,
            run_id=run_id,
            aliases=["a", "b"],
            tags={"k": "2"},
        )
    assert (created, created_again) == (True, False)
    assert str(first.version) == str(again.version) == "1"
    assert again.tags["k"] == "2" and sorted(again.aliases) == ["a", "b"]
    assert len(versions(client, model)) == 1
