"""``mlops run SPEC``, as a user runs it: a fresh shell, a fresh AIRFLOW_HOME (no airflow.cfg, no DB)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import E2E_SPECS, alias_holder, edit_spec, embedded_client, write_datasets

pytestmark = pytest.mark.integration

MLOPS = str(Path(sys.executable).parent / "mlops")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "project"
    write_datasets(root / "include" / "data")
    (root / "dags" / "pipelines").mkdir(parents=True)
    (root / "dags" / "pipelines" / "wine_classifier.yaml").write_text(
        (E2E_SPECS / "wine_classifier.yaml").read_text()
    )
    return root


def _user_env(home: Path) -> dict[str, str]:
    """The user's environment: no Airflow or MLflow settings at all but AIRFLOW_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env["AIRFLOW_HOME"] = str(home)
    return env


def mlops_run(root: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLOPS, "run", *args], cwd=root, env=_user_env(home), capture_output=True, text=True, timeout=900,
        check=False,
    )


_READ_TASK_LOGS = """
import json, sys
from airflow.models.taskinstance import TaskInstance
from airflow.utils.log.log_reader import TaskLogReader
from airflow.utils.session import create_session
from sqlalchemy import select

logs = {}
with create_session() as session:
    for ti in session.scalars(select(TaskInstance).where(TaskInstance.run_id == sys.argv[1])):
        lines = TaskLogReader().read_log_stream(ti, ti.try_number, {})
        logs[ti.task_id] = [json.loads(line).get("event", "") for line in lines]
print(json.dumps(logs))
"""


def task_logs(run_id: str, home: Path) -> dict[str, str]:
    """Each task's log of one DAG run as the Airflow UI shows it (Airflow's log reader, as the api-server)."""
    probe = subprocess.run([sys.executable, "-c", _READ_TASK_LOGS, run_id], env=_user_env(home),
                           capture_output=True, text=True, timeout=300, check=True)
    return {task: "\n".join(lines) for task, lines in json.loads(probe.stdout.splitlines()[-1]).items()}


def test_run_in_an_uninitialised_airflow_home(project: Path) -> None:
    home = project.parent / "fresh-airflow-home"
    assert not home.exists()
    done = mlops_run(project, "dags/pipelines/wine_classifier.yaml", home=home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (home / "airflow.db").is_file()  # the metadata DB was created on the way

    summary = done.stdout[done.stdout.rindex("DAG run wine_classifier") :]
    assert "SUCCESS" in summary.splitlines()[0]
    assert "verdict: PASSED" in summary
    assert "model version: wine_cultivar v1" in summary
    assert "alias: @champion -> v1 (first champion)" in summary
    run_id = re.search(r"MLflow run: ([0-9a-f]{32})", summary).group(1)  # type: ignore[union-attr]
    client = embedded_client(project)  # project root = the parent of the spec's dags folder
    assert client.get_run(run_id).info.status == "FINISHED"
    assert alias_holder(client, "wine_cultivar", "champion") == "1"

    # the task logs are where the Airflow UI reads them, one per task
    dag_run_id = re.search(r"DAG run wine_classifier / (\S+):", summary).group(1)  # type: ignore[union-attr]
    logs = task_logs(dag_run_id, home)
    assert set(logs) == {"ingest", "validate", "train", "evaluate", "register", "deploy"}
    assert "Evaluation of wine_cultivar on" in logs["evaluate"] and "Verdict: PASSED" in logs["evaluate"]
    assert "Data validation passed" in logs["validate"] and "Verdict" not in logs["train"]
    assert "Skipping registering function" not in logs["validate"]  # GX's import-time noise is silenced
    assert "pickle" not in logs["train"]  # MLflow's cloudpickle notice is dropped
    assert "Data validation passed" in done.stdout  # and the console still shows everything


def test_rejected_candidate_exits_3_and_json_output_is_clean(project: Path) -> None:
    spec = project / "dags" / "pipelines" / "strict_wine.yaml"
    spec.write_text((E2E_SPECS / "wine_classifier.yaml").read_text())
    edit_spec(spec, name="strict_wine", evaluate={"thresholds": {"f1": {"min": 0.99999}}})
    done = mlops_run(project, str(spec), "--format", "json", home=project.parent / "home-2")
    assert done.returncode == 3, done.stderr[-3000:]
    result = json.loads(done.stdout)  # task logs went to stderr: stdout is exactly the JSON document
    assert result["state"] == "success" and result["rejected"] is True and result["failure"] is None
    assert result["verdict"]["status"] == "rejected"
    assert "f1" in result["verdict"]["reason"] and "< minimum 0.99999" in result["verdict"]["reason"]
    assert result["model_version"] is None and result["promotion"] is None
    states = {t["task_id"]: t["state"] for t in result["tasks"]}
    assert (states["evaluate"], states["register"], states["deploy"]) == ("success", "skipped", "skipped")
    assert "Verdict: REJECTED" in done.stderr  # the evaluate task's table, in its log


def test_failed_run_exits_1(project: Path) -> None:
    spec = project / "dags" / "pipelines" / "no_data_wine.yaml"
    spec.write_text((E2E_SPECS / "wine_classifier.yaml").read_text())
    edit_spec(spec, name="no_data_wine", ingest={"source": "include/data/not_there.csv", "target": "target"})
    done = mlops_run(project, str(spec), home=project.parent / "home-3")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failure: task 'ingest' failed" in done.stdout and "not_there.csv" in done.stdout


def test_invalid_spec_exits_2_before_touching_airflow(project: Path, tmp_path: Path) -> None:
    spec = project / "dags" / "pipelines" / "broken.yaml"
    spec.write_text("version: 1\nname: broken\ntask: clasification\n")
    home = tmp_path / "untouched-home"
    done = mlops_run(project, str(spec), home=home)
    spec.unlink()
    assert done.returncode == 2
    assert "dags/pipelines/broken.yaml:3:7: task:" in done.stderr
    assert "did you mean `classification`" in done.stderr
    assert not home.exists()
