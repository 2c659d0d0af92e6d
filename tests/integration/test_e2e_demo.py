"""``make demo``, the README's first command: the example pipeline twice through Airflow, then the benchmark.

Runs ``make demo`` in a fresh copy of the project, whose Makefile gives it a fresh AIRFLOW_HOME, as a user
would on a new machine once the venv exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import REPO, alias_holder, embedded_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_demo_end_to_end(tmp_path: Path) -> None:
    """``make demo`` itself, in a fresh copy of the project (this checkout's venv: ``make venv`` finds it up
    to date, as it is for the same pyproject.toml and lock); the Makefile sets AIRFLOW_HOME and the rest."""
    deps = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "requirements.lock").read_bytes())
    stamp = REPO / ".venv" / ".mlops-deps-stamp"
    if not stamp.is_file() or stamp.read_text().strip() != deps.hexdigest()[:32]:
        # else `make venv` would `pip install -e .` the copy (which has no provider/) into this venv
        pytest.fail(f"{REPO / '.venv'} is not up to date with pyproject.toml and the lock: run `make venv`")
    root = tmp_path / "project"
    shutil.copytree(REPO / "dags", root / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "bench").mkdir()
    shutil.copy(REPO / "bench" / "plain_pipeline.py", root / "bench")
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, root / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    done = subprocess.run(
        ["make", "demo", f"VENV={REPO / '.venv'}"],
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
    assert "venv: " in out and "is up to date" in out  # make demo's venv step reused the venv
    # the overhead lines: through Airflow / plain script = the ratio of the two times printed
    overheads = re.findall(r"(\d+\.\d) s / (\d+\.\d) s = (\d+\.\d\d)x", out)
    assert len(overheads) == 2, out[-3000:]
    for through_airflow, plain, ratio in ((float(a), float(p), float(r)) for a, p, r in overheads):
        assert plain > 0.05, overheads  # times are printed to 0.1 s, the ratio to 0.01
        assert (through_airflow - 0.05) / (plain + 0.05) - 0.005 <= ratio <= (through_airflow + 0.05) / (
            plain - 0.05) + 0.005, overheads  # fmt: skip
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
