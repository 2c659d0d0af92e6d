"""Under an executor that may run a DAG run's tasks on different machines, the embedded defaults (a local
MLflow store, a local workspace) are refused by the first task, before anything is written and without
retries, naming the executor and what to set; ``mlops doctor`` says the same. In-process runs and the
local executor keep the defaults (every other test runs on them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import training_dag, unique
from tests.integration._stage_helpers import make_project, states

pytestmark = pytest.mark.integration


def test_the_first_task_refuses_the_embedded_defaults_under_a_distributed_executor(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path, monkeypatch)
    dag = training_dag(unique("celery_defaults"), experiment=unique("exp"), model=unique("m"), retries=2)
    # what a Celery deployment's workers read; the task runs here (dag.test), its check reads the setting
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    run = airflow_home.dag_test(dag)

    assert states(run)["ingest"] == "failed" and states(run)["train"] == "upstream_failed"
    ti = next(t for t in run.get_task_instances() if t.task_id == "ingest")
    assert ti.try_number == 1  # a setting to change, not a transient failure: no retry
    assert not (project / ".mlops").exists()  # refused before anything was written: no store, no workspace


def test_mlops_doctor_reports_the_same(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "home"), AIRFLOW__CORE__EXECUTOR="CeleryExecutor")
    mlops = str(Path(sys.executable).parent / "mlops")
    refused = subprocess.run([mlops, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "executor: CeleryExecutor (tasks may run on other machines)" in refused.stdout
    assert "REFUSED MLflow" in refused.stderr and "mlflow_default" in refused.stderr
    assert "REFUSED [mlops] workspace" in refused.stderr and "s3://" in refused.stderr

    env.update(MLFLOW_TRACKING_URI="http://mlflow.example:5000", AIRFLOW__MLOPS__WORKSPACE="s3://ml/work")
    fine = subprocess.run([mlops, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert fine.returncode == 0 and "OK: a DAG run's tasks share one MLflow and one workspace" in fine.stdout

    one_machine = {**env, "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    del one_machine["MLFLOW_TRACKING_URI"], one_machine["AIRFLOW__MLOPS__WORKSPACE"]
    local = subprocess.run([mlops, "doctor"], env=one_machine, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stdout + local.stderr  # one machine: the defaults are right
