"""``make demo``, the README's first command: the example pipeline twice through Airflow, then the benchmark.

Runs the demo (what the Makefile target runs, ``python -m mlops_provider.demo``) in a fresh copy of the
project with a fresh AIRFLOW_HOME, as a user would on a new machine once the venv exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import REPO, alias_holder, embedded_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_demo_target_runs_the_demo_with_a_project_local_airflow_home() -> None:
    done = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    command = done.stdout.replace("\\\n", " ")
    assert f"AIRFLOW_HOME={REPO}/.airflow" in command
    assert "-m mlops_provider.demo" in command and "-u MLFLOW_TRACKING_URI" in command


def test_demo_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(REPO / "dags", root / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "bench").mkdir()
    shutil.copy(REPO / "bench" / "plain_pipeline.py", root / "bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(root / ".airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__MLOPS__PROJECT_ROOT": str(root),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "mlops_provider.demo", "--project-root", str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]

    assert (root / "include" / "data" / "breast_cancer.csv").is_file()
    assert (root / "include" / "data" / "breast_cancer_live.csv").is_file()
    assert "run 1: success" in out and "run 2: success" in out
    assert "breast_cancer_classifier v1  @champion -> v1 (previous: none)" in out
    assert "breast_cancer_classifier v2  @champion -> v2 (previous: 1)" in out
    assert "gate threshold roc_auc" in out and "gate champion  roc_auc" in out and "vs @champion v1" in out
    ratios = re.findall(r" s = (\d+\.\d+)x", out)
    assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)
    assert f"mlflow ui --backend-store-uri sqlite:///{root}/.mlops/mlflow.db" in out
    assert "airflow standalone" in out
    where = next(line for line in out.splitlines() if "airflow standalone" in line)
    port = re.search(r"AIRFLOW__API__PORT=(\d+)", where).group(1)  # type: ignore[union-attr]
    assert f"AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:{port}/execution/" in where
    assert f"AIRFLOW__API__BASE_URL=http://localhost:{port}" in where
    # run 1 was last month's weaker spec; run 2 (as committed) beat it, strictly
    assert "last month's spec: params: {n_estimators: 3, max_depth: 1" in out
    assert re.search(r"vs @champion v1 0\.\d+: improvement \+0\.0*[1-9]", out), out[-3000:]
    # the task logs are where the Airflow UI reads them: one file per task try under AIRFLOW_HOME/logs
    logs_dir = root / ".airflow" / "logs"
    evaluate_logs = sorted(logs_dir.glob("dag_id=breast_cancer/run_id=*/task_id=evaluate/*.log"))
    assert len(evaluate_logs) == 2 and all("Verdict: PASSED" in p.read_text() for p in evaluate_logs)

    # the lifecycle after training: @champion (v2) scored the live sample, and the monitor saw its drift
    assert re.search(r"batch: +300 rows scored by breast_cancer_classifier v2 -> .*predictions/.*\.parquet",
                     out)
    predictions = list((root / "predictions").glob("*.parquet"))
    assert len(predictions) == 1
    import pyarrow.parquet as pq

    table = pq.read_table(predictions[0])
    assert table.num_rows == 300 and set(table.column("model_version").to_pylist()) == {"2"}
    assert "monitor: dataset drift YES" in out and "request_retrain success" in out

    client = embedded_client(root)
    assert alias_holder(client, "breast_cancer_classifier", "champion") == "2"
    assert (
        alias_holder(client, "breast_cancer_classifier_plain", "champion") is not None
    )  # the benchmark's own
    logs = sorted(p.name for p in (root / ".airflow").glob("demo-*.log"))
    assert logs == [
        "demo-batch.log", "demo-monitor.log", "demo-plain.log",
        "demo-run-1.log", "demo-run-2.log", "demo-setup.log",
    ]  # fmt: skip
