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
#: tests/specs/parse/served.yaml: every DAG kind and section at once
SERVED = {"served", "served_batch", "served_monitor", "served_serve"}
REPORTER = "ml_pipelines_spec_errors.py"
HEAVY = ("mlflow", "great_expectations", "evidently", "sklearn", "pandas", "numpy", "boto3", "botocore",
         "docker", "pyarrow", "scipy", "optuna", "cloudpickle")  # none installed: fastapi is Airflow's own


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


# --------------------------------------------------------------------------------------------------
# "the scheduler and dag processor need only the core package; no network or DB access at parse time"
# --------------------------------------------------------------------------------------------------
#: on PYTHONPATH of the dag processor: in the processes that parse DAG files (Airflow marks them
#: _AIRFLOW_PROCESS_CONTEXT=client before running user code), every network connection, name lookup and
#: database open is recorded (with its stack) and refused, as on a host with no network and no DB
_SITECUSTOMIZE = """
import json, os, sys, traceback

_LOG = os.environ.get("MLOPS_PARSE_ACCESS_LOG")
_REFUSED = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
            "sqlite3.connect"}


def _refuse(event, args):
    if event not in _REFUSED or os.environ.get("_AIRFLOW_PROCESS_CONTEXT") != "client":
        return
    stack = [f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_stack()[:-1]]
    with open(_LOG, "a") as out:
        out.write(json.dumps({"event": event, "args": repr(args)[:200], "stack": stack}) + "\\n")
    raise PermissionError(f"{event} at parse time (refused by the test)")


if _LOG:
    sys.addaudithook(_refuse)
"""

#: a DAG file that reaches for the network and a database at parse time: proves the refusal is active
_CANARY = """# an airflow dag file that must not parse here
import socket
import sqlite3

refused = []
for reach in (lambda: socket.socket().connect(("127.0.0.1", 9)), lambda: sqlite3.connect(":memory:")):
    try:
        reach()
    except PermissionError as exc:
        refused.append(str(exc))
raise RuntimeError("canary: " + "; ".join(refused))
"""


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install airflow-provider-mlops`` and no extras (pinned by requirements.lock): what
    a scheduler / dag-processor image installs (README "Running it in Airflow")."""
    root = tmp_path_factory.mktemp("core")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "provider", src / "provider",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(REPO_ROOT / "requirements.lock"), str(src)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert install.returncode == 0, f"pip install of the core package failed:\n{install.stderr[-3000:]}"
    return python


def test_the_dag_processor_parses_in_a_core_only_venv_with_no_network_or_db(
    core_venv: Path, dag_processor_project: Path, tmp_path: Path
) -> None:
    import json
    from importlib import resources

    from tests.fixtures.dag_processor import running_dag_processor

    probe = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    installed = subprocess.run([str(core_venv), "-c", probe], capture_output=True, text=True, check=True)
    assert installed.stdout.strip() == "[]", f"the core install pulls in heavy packages: {installed.stdout}"

    project = dag_processor_project
    for kind, name in (("good", "minimal_regression.yaml"), ("good", "monitored_classifier.yaml"),
                       ("parse", "served.yaml"), ("bad", "unknown_keys.yaml")):  # fmt: skip
        shutil.copy(SPECS / kind / name, project / "dags" / "pipelines" / name)
    (project / "include" / "data").mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("palmerpenguins") / "data" / "penguins-raw.csv") as raw:
        shutil.copy(raw, project / "include" / "data" / "penguins.csv")
    (project / "dags" / "zz_canary.py").write_text(_CANARY)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    accesses = tmp_path / "parse-accesses.jsonl"
    env = {"PYTHONPATH": str(site), "MLOPS_PARSE_ACCESS_LOG": str(accesses)}

    with running_dag_processor(project, tmp_path, python=str(core_venv), env=env) as processor:
        processor.wait(
            lambda: _active(processor, REGRESSION | CHURN | SERVED)
            and {REPORTER, "zz_canary.py"} <= set(processor.import_errors()),
            "every good pipeline active, the bad spec and the canary reported",
        )
        _wait_for_reparses(processor, "minimal_regression", 2)
        errors = processor.import_errors()
        assert _active(processor, REGRESSION | CHURN | SERVED), processor.dags()

    assert set(errors) == {REPORTER, "zz_canary.py"}, errors
    assert "unknown_keys.yaml" in errors[REPORTER]
    canary = errors["zz_canary.py"]
    assert "socket.connect at parse time (refused" in canary and "sqlite3.connect at parse time" in canary
    events = [json.loads(line) for line in accesses.read_text().splitlines()]
    ours = [e for e in events if not any("zz_canary.py" in frame for frame in e["stack"])]
    assert ours == [], "parsing the pipelines reached for the network or a database:\n" + "\n".join(
        f"{e['event']} {e['args']}\n  " + "\n  ".join(e["stack"][-8:]) for e in ours
    )
    assert {e["event"] for e in events} == {"socket.connect", "sqlite3.connect"}
