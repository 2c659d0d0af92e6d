""""A broken spec never hides the others", proven in Airflow's real dag processor.

The processor marks every DAG of a file that has an import error as stale, so these tests read what
``airflow dag-processor`` wrote to the metadata DB (``dag.is_stale``, ``import_error``), not a DagBag:
a DagBag keeps the good DAGs whatever the processor would do with them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.processes import REPO_ROOT

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer
    from tests.fixtures.dag_processor import DagProcessor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = REPO_ROOT / "tests" / "specs"
REGRESSION = {"minimal_regression"}
CHURN = {"churn", "churn_monitor"}
REPORTER = "ml_pipelines_spec_errors.py"


def _add(processor: DagProcessor, *specs: tuple[str, str]) -> None:
    for kind, name in specs:
        shutil.copy(SPECS / kind / name, processor.pipelines / name)


def _active(processor: DagProcessor, dag_ids: set[str]) -> bool:
    dags = processor.dags()
    return all(dags.get(dag_id) is True for dag_id in dag_ids)


def _wait_for_reparses(processor: DagProcessor, dag_id: str, count: int) -> None:
    """Until the processor has written ``dag_id`` ``count`` more times (each parse of its file does)."""
    seen = {processor.parsed_at(dag_id)}

    def another() -> bool:
        seen.add(processor.parsed_at(dag_id))
        return len(seen) > count

    processor.wait(another, f"{count} more parses of {dag_id}'s file")


def test_good_specs_stay_active_beside_a_bad_one(dag_processor: DagProcessor) -> None:
    _add(dag_processor, ("good", "minimal_regression.yaml"), ("good", "monitored_classifier.yaml"),
         ("bad", "unknown_keys.yaml"))

    dag_processor.wait(
        lambda: _active(dag_processor, REGRESSION | CHURN) and REPORTER in dag_processor.import_errors(),
        "both good pipelines active and the bad spec reported",
    )
    error = dag_processor.import_errors()[REPORTER]
    assert error.startswith("SpecError: 1 of 3 pipeline specs invalid"), error
    assert "dags/pipelines/unknown_keys.yaml (7 errors)" in error.splitlines()[0]
    assert ("dags/pipelines/unknown_keys.yaml:12:1: shedule: unknown key 'shedule' "
            "(hint: did you mean `schedule`?)") in error
    assert "ml_pipelines.py" not in dag_processor.import_errors()

    # several more parse cycles and stale sweeps later, nothing has been deactivated
    before = dag_processor.dags()
    _wait_for_reparses(dag_processor, "minimal_regression", 3)
    assert dag_processor.dags() == before
    assert _active(dag_processor, REGRESSION | CHURN), dag_processor.dags()


def test_a_spec_that_turns_bad_takes_down_only_its_own_dags_and_fixing_it_brings_them_back(
    dag_processor: DagProcessor,
) -> None:
    _add(dag_processor, ("good", "minimal_regression.yaml"), ("good", "monitored_classifier.yaml"))
    dag_processor.wait(lambda: _active(dag_processor, REGRESSION | CHURN), "both pipelines active")
    assert dag_processor.import_errors() == {}
    # yesterday's run of the pipeline that is about to break: its history must survive
    trigger = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "trigger", "churn"],
        env=dag_processor.process.env, capture_output=True, text=True, check=False, timeout=120,
    )
    assert trigger.returncode == 0, trigger.stderr[-2000:]
    assert dag_processor.dag_runs("churn") == 1

    spec = dag_processor.pipelines / "monitored_classifier.yaml"
    good_text = spec.read_text()
    spec.write_text(good_text.replace("\ntrain:", "\ntrian:", 1))  # the typo committed today

    dag_processor.wait(
        lambda: not any(dag_processor.dags()[d] for d in CHURN) and REPORTER in dag_processor.import_errors(),
        "the broken pipeline's DAGs deactivated and its spec reported",
    )
    error = dag_processor.import_errors()[REPORTER]
    assert error.startswith("SpecError: 1 of 2 pipeline specs invalid"), error
    assert "dags/pipelines/monitored_classifier.yaml:" in error and "trian: unknown key 'trian'" in error
    assert _active(dag_processor, REGRESSION), dag_processor.dags()

    spec.write_text(good_text)
    dag_processor.wait(
        lambda: _active(dag_processor, REGRESSION | CHURN) and dag_processor.import_errors() == {},
        "the fixed pipeline back and its import error cleared",
    )
    assert dag_processor.dag_runs("churn") == 1


def test_every_bad_spec_is_counted_and_named_in_the_first_line(dag_processor: DagProcessor) -> None:
    _add(dag_processor, ("good", "minimal_regression.yaml"), ("bad", "unknown_keys.yaml"),
         ("bad", "bad_metrics.yaml"), ("bad", "yaml_syntax.yaml"))
    dag_processor.wait(
        lambda: REPORTER in dag_processor.import_errors() and _active(dag_processor, REGRESSION),
        "the bad specs reported",
    )
    head = dag_processor.import_errors()[REPORTER].splitlines()[0]
    assert head.startswith("SpecError: 3 of 4 pipeline specs invalid"), head
    for name in ("bad_metrics.yaml", "unknown_keys.yaml", "yaml_syntax.yaml"):
        assert f"dags/pipelines/{name} (" in head, head
    assert Path(dag_processor.project / "dags" / "ml_pipelines.py").exists()


def test_the_scheduler_runs_a_good_pipeline_while_a_bad_spec_is_in_the_folder(
    airflow_server: AirflowServer,
) -> None:
    """api-server + scheduler + dag-processor + triggerer; the project holds the example and a broken copy."""
    from tests.fixtures.airflow import BROKEN_SPEC

    run = airflow_server.run_dag("breast_cancer")
    assert run["state"] == "success"

    status, body = airflow_server.request("GET", "/api/v2/importErrors")
    assert status == 200, body
    (error,) = body["import_errors"]
    assert error["filename"] == REPORTER
    assert error["stack_trace"].startswith("SpecError: 1 of 2 pipeline specs invalid"), error
    assert f"dags/pipelines/{BROKEN_SPEC}:" in error["stack_trace"] and "trian" in error["stack_trace"]
    for dag_id in ("breast_cancer", "breast_cancer_monitor", "breast_cancer_batch"):
        status, dag = airflow_server.request("GET", f"/api/v2/dags/{dag_id}")
        assert status == 200 and dag["is_stale"] is False, (dag_id, dag)
        assert dag["has_import_errors"] is False, dag
    status, _ = airflow_server.request("GET", "/api/v2/dags/broken_pipeline")
    assert status == 404
