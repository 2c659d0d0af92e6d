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
    fluent_uris,
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


def _someone_moves_champion_after_evaluate(project: Path, model: str, *, by: str | None) -> Any:
    """``extra`` for training_dag: between evaluate and deploy, @champion moves to a new version made from
    v1's model (a hotfix registered by hand): through ``mlops rollback``'s function as ``by``, or, with
    ``by=None``, straight through the MLflow API as the MLflow UI does."""

    def move() -> None:
        from mlops_provider.hooks.mlflow import embedded_tracking_uri
        from mlops_provider.stages.deploy import rollback

        client = embedded_client(project)
        v1 = client.get_model_version(model, "1")
        with fluent_uris(embedded_tracking_uri(project)):  # MLflow's store looks the model up through them
            hotfix = client.create_model_version(model, v1.source, run_id=v1.run_id, model_id=v1.model_id)
        if by is None:
            client.set_registered_model_alias(model, "champion", hotfix.version)
        else:
            rollback(
                client, model_name=model, to=str(hotfix.version), performed_by=by, reason="hotfix for v1"
            )

    def add(dag: Any, tasks: dict[str, Any]) -> None:
        from airflow.providers.standard.operators.python import PythonOperator

        mover = PythonOperator(task_id="someone_moves_champion", python_callable=move)
        tasks["evaluate"] >> mover >> tasks["deploy"]
        mover >> tasks["register"]

    return add


@pytest.mark.parametrize("by", [None, "alice@example.com"], ids=["mlflow-ui", "rollback"])
def test_deploy_refuses_when_champion_moved_after_evaluate(
    airflow_home: Any, project: Path, by: str | None
) -> None:
    from mlops_provider.run import run_dag
    from mlops_provider.stages.deploy import history

    model, experiment = unique("bc"), unique("exp")
    weak = {"n_estimators": 2, "max_depth": 1}
    first = run_dag(training_dag(unique("cas_first"), experiment=experiment, model=model, hyperparams=weak))
    assert first.ok, first.failure
    raced = run_dag(training_dag(
        unique("cas_raced"), experiment=experiment, model=model,
        extra=_someone_moves_champion_after_evaluate(project, model, by=by),
    ))  # fmt: skip
    states = {t.task_id: (t.state, t.tries) for t in raced.tasks}
    assert states["evaluate"] == ("success", 1) and states["register"] == ("success", 1)
    assert raced.xcom["evaluate"]["passed"] is True  # it beat v1 ...
    assert raced.xcom["evaluate"]["alias_at_evaluation"] == {"alias": "champion", "version": "1"}
    assert states["deploy"] == ("failed", 1)  # ... but v1 is no longer the champion: refused, not retried
    error = raced.task("deploy").error
    assert "ChampionChangedError" in error
    assert "evaluate compared it with v1, but @champion now holds v2" in error
    assert ("moved outside this provider" in error) if by is None else (f"moved by {by}" in error)
    assert "hotfix for v1" in error or by is None
    assert "clear `evaluate` and its downstream tasks" in error

    client = embedded_client(project)
    assert alias_holder(client, model, "champion") == "2"  # the person's choice stands
    candidate = versions(client, model)[2]
    assert str(candidate.version) == "3" and "mlops.previous_champion" not in candidate.tags
    moved_to = [m["version"] for m in history(client, model_name=model)]
    assert moved_to == (["1"] if by is None else ["1", "2"])  # no record for a move that did not happen
    run = client.get_run(raced.mlflow_run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlops.verdict"] == "passed"  # the verdict stays what evaluate decided


def test_deploy_refuses_when_a_first_champion_appeared_after_evaluate(airflow_home, project: Path) -> None:
    """No version held @champion when evaluate ran (nothing to compare with); one does by deploy time."""
    from mlops_provider.run import run_dag

    model, other, experiment = unique("bc"), unique("other"), unique("exp")
    elsewhere = run_dag(training_dag(unique("cas_other"), experiment=experiment, model=other))
    assert elsewhere.ok, elsewhere.failure

    def add(dag: Any, tasks: dict[str, Any]) -> None:
        from airflow.providers.standard.operators.python import PythonOperator

        def promote_by_hand() -> None:  # someone registers another model under this name and promotes it
            from mlops_provider.hooks.mlflow import embedded_tracking_uri

            client = embedded_client(project)
            source = client.get_model_version(other, "1")
            client.create_registered_model(model)
            with fluent_uris(embedded_tracking_uri(project)):
                by_hand = client.create_model_version(
                    model, source.source, run_id=source.run_id, model_id=source.model_id
                )
            client.set_registered_model_alias(model, "champion", by_hand.version)

        mover = PythonOperator(task_id="someone_promotes", python_callable=promote_by_hand)
        tasks["evaluate"] >> mover >> tasks["register"]

    raced = run_dag(training_dag(unique("cas_first_champion"), experiment=experiment, model=model, extra=add))
    assert raced.xcom["evaluate"]["alias_at_evaluation"] == {"alias": "champion", "version": None}
    assert raced.task("deploy").state == "failed"
    error = raced.task("deploy").error
    assert "evaluate compared it with no champion (no version held it), but @champion now holds v1" in error
    assert alias_holder(embedded_client(project), model, "champion") == "1"


def test_concurrent_writers_lose_no_move_record(mlflow_server_local: Any) -> None:
    """Eight promotions recorded at the same instant against a real MLflow server: eight records."""
    import threading

    from mlops_provider.stages.deploy import Promotion, history, record

    client = mlflow_server_local.client()
    model = unique("moves")
    client.create_registered_model(model)
    run = client.create_run(client.create_experiment(unique("moves")))
    for _ in range(8):
        client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            start.wait()
            record(client, Promotion(
                model_name=model, alias="champion", version=str(i + 1), previous_version=None,
                promoted_by=f"writer-{i}", dag_id=None, dag_run_id=None, mlflow_run_id=None, reason="race",
            ))  # fmt: skip
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    moves = history(client, model_name=model)
    assert sorted(m["promoted_by"] for m in moves) == sorted(f"writer-{i}" for i in range(8))
    assert [m["promoted_at"] for m in moves] == sorted(m["promoted_at"] for m in moves)  # in time order
