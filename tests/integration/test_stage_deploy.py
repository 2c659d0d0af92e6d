"""Deploy stage: the alias moves only on a passed verdict; the move is audited and can be rolled back.

Real MLflow (embedded store), real Airflow (``dag.test()``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration._e2e_helpers import (
    alias_holder,
    embedded_client,
    make_project,
    training_dag,
    unique,
    versions,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def _add_deploy_without_evaluate(dag: Any, tasks: dict[str, Any]) -> None:
    """A careless hand-written DAG: a second deploy that names an evaluate task that does not exist."""
    from mlops_provider.operators.deploy import PromoteModelOperator

    careless = PromoteModelOperator(
        task_id="deploy_unchecked",
        evaluate_task_id="evaluate_missing",
        experiment=tasks["deploy"].experiment,
        model_name=tasks["deploy"].model_name,
        retries=2,
    )
    tasks["register"] >> careless


def test_promotion_is_audited_and_can_be_rolled_back(airflow_home, project: Path) -> None:
    from mlops_provider.run import run_dag
    from mlops_provider.stages.deploy import rollback

    model, experiment, dag_id = unique("bc"), unique("exp"), unique("deploy_audit")
    weak = {"n_estimators": 2, "max_depth": 1}  # the second run must beat it: a tie keeps the champion
    first = run_dag(training_dag(dag_id, experiment=experiment, model=model, hyperparams=weak))
    second = run_dag(training_dag(dag_id, experiment=experiment, model=model))
    assert first.ok and second.ok and not second.rejected, (first.failure, second.summary())
    assert first.xcom["deploy"] == {
        "alias": "champion",
        "version": "1",
        "previous_version": None,
        "model_name": model,
    }
    assert second.xcom["deploy"] == {
        "alias": "champion",
        "version": "2",
        "previous_version": "1",
        "model_name": model,
    }

    client = embedded_client(project)
    assert alias_holder(client, model, "champion") == "2"
    v1, v2 = versions(client, model)
    assert v1.tags["mlops.previous_champion"] == "none"
    assert v2.tags["mlops.previous_champion"] == "1"
    assert v2.tags["mlops.promoted_to_champion_by"]

    last = json.loads(client.get_registered_model(model).tags["mlops.champion.last_promotion"])
    assert (last["version"], last["previous_version"], last["dag_id"], last["dag_run_id"]) == (
        "2",
        "1",
        dag_id,
        second.run_id,
    )
    run = client.get_run(second.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["mlops.champion_version"], run.data.tags["mlops.previous_champion_version"]) == (
        "2",
        "1",
    )
    with_reason = json.loads(
        Path(
            client.download_artifacts(second.mlflow_run_id, "deploy/promotion.json", str(project))
        ).read_text()
    )
    assert "roc_auc" in with_reason["reason"] and with_reason["mlflow_run_id"] == second.mlflow_run_id

    assert rollback(client, model_name=model) == ("2", "1")
    assert alias_holder(client, model, "champion") == "1"


def test_deploy_refuses_without_a_passed_verdict(airflow_home, project: Path) -> None:
    from mlops_provider.run import run_dag

    model, experiment = unique("bc"), unique("exp")
    baseline = run_dag(training_dag(unique("deploy_first"), experiment=experiment, model=model))
    assert baseline.ok, baseline.failure

    # evaluate only records its "no" (on_rejection="continue"): register runs, deploy must refuse
    refused = run_dag(
        training_dag(
            unique("deploy_refused"),
            experiment=experiment,
            model=model,
            thresholds={"roc_auc": {"min": 0.99999}},
            on_rejection="continue",
            extra=_add_deploy_without_evaluate,
        )
    )
    states = {t.task_id: (t.state, t.tries) for t in refused.tasks}
    assert states["evaluate"] == ("success", 1) and states["register"] == ("success", 1)
    assert states["deploy"] == ("failed", 1)  # refused at once, no retries (retries=2)
    assert states["deploy_unchecked"] == ("failed", 1)
    assert refused.state == "failed"
    assert refused.xcom["evaluate"]["passed"] is False
    error = refused.task("deploy").error
    assert "refusing to move @champion to version 2" in error and "< minimum 0.99999" in error
    assert "no evaluation verdict from task 'evaluate_missing'" in refused.task("deploy_unchecked").error

    client = embedded_client(project)
    assert alias_holder(client, model, "champion") == "1"  # untouched
    assert alias_holder(client, model, "challenger") == "2"
    v2 = versions(client, model)[1]
    assert v2.tags["mlops.verdict"] == "rejected" and "mlops.previous_champion" not in v2.tags
    run = client.get_run(refused.mlflow_run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlops.verdict"] == "rejected"
