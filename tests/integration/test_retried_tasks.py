"""A task whose first try dies half-way is retried without duplicating what that try already did.

Real MLflow (embedded store), real Airflow (``dag.test()``: the retry is Airflow's own, ``retries=2``). The
fault is injected at the MLflow boundary: the first call of one step raises the
:class:`~mlops_provider.exceptions.ServiceUnavailableError` a dropped connection to the tracking server
raises there (a real server cannot be made to go down between two given calls of one task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration._e2e_helpers import alias_holder, embedded_client, make_project, training_dag, unique
from tests.integration._stage_helpers import pipeline_runs

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def _fails_once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, before: Any = None) -> list[int]:
    """``owner.name`` raises ServiceUnavailableError on its first call (after ``before()``); returns the
    list of calls made (one entry per call)."""
    from mlops_provider.exceptions import ServiceUnavailableError

    real = getattr(owner, name)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            if before is not None:
                before()
            raise ServiceUnavailableError("MLflow tracking server at file:///... is unreachable (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)
    return calls


def test_a_deploy_retried_after_the_alias_moved_records_the_move_once(
    airflow_home: Any, project: Path
) -> None:
    """The first try moved the alias and wrote the audit record, then lost MLflow ending the run: the retry
    finds the alias already on its version and adds no second record (nor a "v2 -> v2" one)."""
    from mlops_provider.operators.deploy import PromoteModelOperator
    from mlops_provider.run import run_dag
    from mlops_provider.stages.deploy import history
    from mlops_provider.tracking import tags as T

    model, experiment, dag_id = unique("bc"), unique("exp"), unique("retried_deploy")
    client = embedded_client(project)
    weak = {"n_estimators": 2, "max_depth": 1}  # the second run's default forest beats it
    for step, hyperparams in enumerate((weak, None), start=1):
        with pytest.MonkeyPatch.context() as fault:
            calls = _fails_once(fault, PromoteModelOperator, "end_pipeline_run")
            dag = training_dag(dag_id, experiment=experiment, model=model, hyperparams=hyperparams)
            result = run_dag(dag)
        assert result.ok, result.failure
        deploy = result.task("deploy")
        assert deploy is not None and deploy.tries == 2 and len(calls) == 2
        assert alias_holder(client, model, "champion") == str(step)

    moves = history(client, model_name=model)
    assert [(m["version"], m["previous_version"]) for m in moves] == [("1", None), ("2", "1")]
    assert client.get_model_version(model, "2").tags[T.previous_tag("champion")] == "1"
    assert {r.info.status for r in pipeline_runs(client, experiment)} == {"FINISHED"}


def test_an_ingest_retried_after_writing_its_files_reuses_them(
    airflow_home: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try wrote the snapshot and the splits, then lost MLflow logging them: the retry finds the
    same content-addressed files and does not write them again; one MLflow run, inputs logged once."""
    from mlops_provider.run import run_dag
    from mlops_provider.stages import ingest as ingest_stage
    from mlops_provider.storage.workspace import SNAPSHOT, TEST_SPLIT, TRAIN_SPLIT

    model, experiment, dag_id = unique("bc"), unique("exp"), unique("retried_ingest")
    workspaces = project / ".mlops" / "workspace" / dag_id
    first_try: dict[str, int] = {}

    def remember_files() -> None:
        first_try.update({str(p.relative_to(workspaces)): p.stat().st_mtime_ns
                          for p in workspaces.rglob("*.parquet")})  # fmt: skip

    calls = _fails_once(monkeypatch, ingest_stage, "log_to_mlflow", before=remember_files)
    result = run_dag(training_dag(dag_id, experiment=experiment, model=model))
    assert result.ok, result.failure
    ingest = result.task("ingest")
    assert ingest is not None and ingest.tries == 2 and len(calls) == 2

    (folder,) = {Path(name).parent for name in first_try}  # one run, one data-<hash> folder
    assert {Path(name).name for name in first_try} == {SNAPSHOT, TRAIN_SPLIT, TEST_SPLIT}
    after = {str(p.relative_to(workspaces)): p.stat().st_mtime_ns for p in workspaces.rglob("*.parquet")}
    assert after == first_try, "the retry rewrote (or added) files the first try had written"
    assert result.xcom["ingest"]["train_uri"].endswith(f"{folder.as_posix()}/{TRAIN_SPLIT}")

    client = embedded_client(project)
    (run,) = pipeline_runs(client, experiment)
    assert run.info.status == "FINISHED"
    inputs = run.inputs.dataset_inputs
    contexts = sorted(t.value for d in inputs for t in d.tags if t.key == "mlflow.data.context")
    assert contexts == ["testing", "training"], contexts
