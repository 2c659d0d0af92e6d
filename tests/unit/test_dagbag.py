"""The loader as Airflow sees it: BundleDagBag (used by the dag processor and `airflow dags`), real files.

Real Airflow, real spec files copied into a temp project; nothing faked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from mlops_provider.plan.build import retrain_asset_uri

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "tests" / "specs"
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) ([a-z-]+)\s*$", re.M)
_ISSUE_LINE = re.compile(r"^(dags/pipelines/[\w./-]+\.ya?ml):(\d+):(\d+): (.+)$", re.M)

GOOD = ["minimal_regression.yaml", "custom_entrypoint.yaml", "monitored_classifier.yaml"]
GOOD_DAG_IDS = {"minimal_regression", "custom_entrypoint", "churn", "churn_monitor", "breast_cancer",
                "breast_cancer_batch", "breast_cancer_monitor"}  # fmt: skip
BAD = ["unknown_keys.yaml", "literal_secrets.yaml", "path_escapes.yaml", "python_tags.yaml",
       "bad_metrics.yaml", "yaml_syntax.yaml"]  # fmt: skip
LITERAL_SECRETS = ("hunter2", "sk-live-1234", "wJalrXUtnFEMI", "12345")
DAG_FILES = ("ml_pipelines.py", "ml_pipelines_spec_errors.py")
REPORTER = "ml_pipelines_spec_errors.py"


def _bag(dags: Path):
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project like a user's: dags/ml_pipelines.py (the repo's loader file), specs, include/."""
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    for dag_file in DAG_FILES:
        shutil.copy(REPO / "dags" / dag_file, dags)
    shutil.copytree(SPECS / "include", tmp_path / "include")
    for name in GOOD:
        shutil.copy(SPECS / "good" / name, dags / "pipelines")
    shutil.copy(REPO / "dags" / "pipelines" / "breast_cancer.yaml", dags / "pipelines")
    for name in BAD:
        shutil.copy(SPECS / "bad" / name, dags / "pipelines")
    monkeypatch.setenv("AIRFLOW__MLOPS__PIPELINES_FOLDER", str(dags / "pipelines"))
    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__MLOPS__ALLOWED_MODULES", raising=False)
    return tmp_path


# --------------------------------------------------------------------------------------------------
# (a) the repo's own dags/ folder
# --------------------------------------------------------------------------------------------------
def test_repo_dags_folder_loads_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "AIRFLOW__MLOPS__PIPELINES_FOLDER",
        "AIRFLOW__MLOPS__PROJECT_ROOT",
        "AIRFLOW__MLOPS__ALLOWED_MODULES",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    bag = _bag(REPO / "dags")

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "breast_cancer", "breast_cancer_monitor", "breast_cancer_batch", "follow_champion"
    }  # fmt: skip
    assert type(bag.dags["follow_champion"].timetable).__name__ == "NullTimetable"  # example: on demand only
    training, monitor = bag.dags["breast_cancer"], bag.dags["breast_cancer_monitor"]
    assert {"mlops", "demo", "mlops:training"} <= set(training.tags)
    assert {"mlops", "demo", "mlops:monitor"} <= set(monitor.tags)
    assert [t.task_id for t in training.topological_sort()] == [
        "ingest", "validate", "train", "evaluate", "register", "deploy",
    ]  # fmt: skip
    for task in training.tasks + monitor.tasks:
        assert task.owner == "ml-platform"
        assert task.retries == 2
        assert task.retry_delay.total_seconds() == 300
        assert task.execution_timeout.total_seconds() == 3600
    assert training.description == "Tumour classifier on scikit-learn's breast cancer data, retrained weekly"
    assert training.start_date.isoformat() == "2026-01-01T00:00:00+00:00"
    assert "generated from `dags/pipelines/breast_cancer.yaml`" in training.doc_md
    assert "  estimator: sklearn.ensemble.RandomForestClassifier" in training.doc_md
    assert training.fileloc == str(REPO / "dags" / "ml_pipelines.py")


# --------------------------------------------------------------------------------------------------
# (b) several good and several bad specs: good DAGs load; ONE import error, on the reporting file that
#     holds no DAG (the dag processor deactivates every DAG of a file with an import error), lists every
#     issue of every bad spec. What the real processor does with it: tests/integration/test_dag_processor.py
# --------------------------------------------------------------------------------------------------
def test_bad_specs_become_one_import_error_and_good_dags_still_load(project: Path) -> None:
    bag = _bag(project / "dags")

    assert set(bag.dag_ids) == GOOD_DAG_IDS
    assert list(bag.import_errors) == [REPORTER]
    assert {bag.dags[d].fileloc for d in bag.dag_ids} == {str(project / "dags" / "ml_pipelines.py")}
    error = bag.import_errors[REPORTER]
    assert error.startswith(f"SpecError: {len(BAD)} of {len(BAD) + len(GOOD) + 1} pipeline specs invalid")
    reported = {(Path(f).name, int(line), int(col)) for f, line, col, _ in _ISSUE_LINE.findall(error)}
    expected = {
        (name, int(line), int(col))
        for name in BAD
        for line, col, _ in _EXPECT.findall((SPECS / "bad" / name).read_text())
    }
    assert reported == expected
    assert len(_ISSUE_LINE.findall(error)) == sum(
        len(_EXPECT.findall((SPECS / "bad" / n).read_text())) for n in BAD
    )
    assert (
        "dags/pipelines/unknown_keys.yaml:12:1: shedule: unknown key 'shedule' "
        "(hint: did you mean `schedule`?)" in error
    )
    for secret in LITERAL_SECRETS:
        assert secret not in error


def test_invalid_specs_dag_is_never_stored(project: Path) -> None:
    bag = _bag(project / "dags")
    assert "mlops_invalid_specs" not in bag.dags


# --------------------------------------------------------------------------------------------------
# the DAG docs show the spec, never a secret
# --------------------------------------------------------------------------------------------------
def test_doc_md_shows_the_spec_without_secret_values(project: Path) -> None:
    dag = _bag(project / "dags").dags["custom_entrypoint"]
    doc = dag.doc_md
    assert "generated from `dags/pipelines/custom_entrypoint.yaml`" in doc
    assert "entrypoint: include/train_custom.py:train" in doc
    assert "api_token: '***'" in doc
    assert "AWS_SECRET_ACCESS_KEY: '***'" in doc
    assert "houses_api_token" not in doc and "conn.aws_default.password" not in doc
    assert "LOG_LEVEL: info" in doc


# --------------------------------------------------------------------------------------------------
# (d) a worker parsing for one DAG builds only that DAG and reads only its spec
# --------------------------------------------------------------------------------------------------
def test_parsing_context_builds_only_the_requested_dag(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task runner sets these variables (``_airflow_parsing_context_manager``) around its parse."""
    from airflow.sdk.definitions.context import (
        _AIRFLOW_PARSING_CONTEXT_DAG_ID,
        _AIRFLOW_PARSING_CONTEXT_TASK_ID,
    )

    from mlops_provider import loader

    read: list[str] = []
    real_load_spec = loader.load_spec

    def counting_load_spec(path, **kwargs):
        read.append(Path(path).name)
        return real_load_spec(path, **kwargs)

    monkeypatch.setattr(loader, "load_spec", counting_load_spec)
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, "churn_monitor")
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_TASK_ID, "detect_drift")
    bag = _bag(project / "dags")

    assert set(bag.dag_ids) == {"churn_monitor"}
    assert bag.import_errors == {}  # six broken specs in the folder, none read
    assert read == ["monitored_classifier.yaml"]

    read.clear()
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, "breast_cancer")
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_TASK_ID, "train")
    bag = _bag(project / "dags")
    assert set(bag.dag_ids) == {"breast_cancer"}
    assert read == ["breast_cancer.yaml"]


# --------------------------------------------------------------------------------------------------
# (e) monitor.retrain: the monitor's drift task emits the asset the training DAG is scheduled on
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pipeline", "timetable"),
    [
        ("breast_cancer", "airflow.timetables.assets.AssetOrTimeSchedule"),  # @weekly or drift
        ("churn", "airflow.timetables.simple.AssetTriggeredTimetable"),  # schedule: null, drift only
    ],
)
def test_retrain_asset_wiring_in_the_serialized_dags(project: Path, pipeline: str, timetable: str) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    bag = _bag(project / "dags")
    training = DagSerialization.to_dict(bag.dags[pipeline])["dag"]
    monitor = DagSerialization.to_dict(bag.dags[f"{pipeline}_monitor"])["dag"]
    uri = retrain_asset_uri(pipeline)

    assert training["timetable"]["__type"] == timetable
    assert {(d["source"], d["target"], d["label"]) for d in training["dag_dependencies"]} >= {
        ("asset", pipeline, uri)
    }
    assert {(d["source"], d["target"], d["label"]) for d in monitor["dag_dependencies"]} >= {
        (f"{pipeline}_monitor", "asset", uri)
    }
    monitor_dag = bag.dags[f"{pipeline}_monitor"]
    drift, request = monitor_dag.get_task("detect_drift"), monitor_dag.get_task("request_retrain")
    assert request.upstream_task_ids == {"detect_drift"}
    assert [a.uri for a in request.outlets] == [uri] and not drift.outlets
    # Airflow's UI shows only the assets of a "cron or assets" schedule: the display name names the cron
    expected_name = {"breast_cancer": "breast_cancer (@weekly or on drift)", "churn": "churn"}[pipeline]
    assert bag.dags[pipeline].dag_display_name == expected_name


def test_no_retrain_means_no_asset_schedule(project: Path) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    bag = _bag(project / "dags")
    unscheduled = DagSerialization.to_dict(bag.dags["minimal_regression"])["dag"]
    cron = DagSerialization.to_dict(bag.dags["custom_entrypoint"])["dag"]
    assert unscheduled["timetable"]["__type"] == "airflow.timetables.simple.NullTimetable"
    assert cron["timetable"]["__type"] == "airflow.timetables.trigger.CronTriggerTimetable"
    assert cron["timetable"]["__var"]["expression"] == "30 2 * * 1-5"
    assert not unscheduled.get("dag_dependencies") and not cron.get("dag_dependencies")
    assert "minimal_regression_monitor" not in bag.dags


# --------------------------------------------------------------------------------------------------
# (f) Airflow knows the provider: hook, connection type, [mlops] config section
# --------------------------------------------------------------------------------------------------
def test_providers_manager_lists_the_provider() -> None:
    import warnings

    from airflow.configuration import conf
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    info = manager.providers["airflow-provider-mlops"]
    assert info.data["package-name"] == "airflow-provider-mlops"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hook = manager.hooks["mlflow"]
    assert hook is not None
    assert (hook.hook_class_name, hook.package_name) == ("mlops_provider.hooks.mlflow.MLflowHook",
                                                         "airflow-provider-mlops")  # fmt: skip
    sections = dict(manager.provider_configs)["airflow-provider-mlops"]
    assert {"pipelines_folder", "project_root", "allowed_modules"} <= set(sections["mlops"]["options"])
    assert conf.get("mlops", "allowed_modules") == "sklearn,xgboost,lightgbm,catboost"


# --------------------------------------------------------------------------------------------------
# fresh processes: what the dag processor pays, and what reaches the metadata DB
# --------------------------------------------------------------------------------------------------
HEAVY = ("mlflow", "great_expectations", "evidently", "sklearn", "pandas", "numpy", "boto3", "botocore",
         "docker", "pyarrow", "scipy", "optuna", "fastapi", "cloudpickle")
#: a spec with every DAG kind and section (its _serve, _batch and _monitor DAGs, tune, approval, targets)
SERVED = SPECS / "parse" / "served.yaml"
SERVED_DAG_IDS = {"served", "served_batch", "served_monitor", "served_serve"}

_PARSE_PROBE = """
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
dags = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": sorted(bag.import_errors), "heavy": heavy}))
"""

_CLI_PROBE = """
import io, json, sys
from contextlib import redirect_stdout
from airflow.cli import cli_parser

def airflow(*argv):
    args = cli_parser.get_parser().parse_args(list(argv))
    out = io.StringIO()
    code = 0
    with redirect_stdout(out):
        try:
            args.func(args)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue()

airflow("db", "migrate")
airflow("dags", "reserialize")
errors_code, errors = airflow("dags", "list-import-errors", "-o", "json")
_, dags = airflow("dags", "list", "-o", "json")
print(json.dumps({"errors_code": errors_code, "errors": json.loads(errors), "dags": json.loads(dags)}))
"""


def _airflow_env(project: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(project / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__MLOPS__PROJECT_ROOT=str(project),
    )
    return env


def _last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_parse_in_a_fresh_process_imports_nothing_heavy(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "airflow_home"
    home.mkdir()
    shutil.copy(SERVED, project / "dags" / "pipelines")
    (project / "include" / "data").mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("palmerpenguins") / "data" / "penguins-raw.csv") as raw:
        shutil.copy(raw, project / "include" / "data" / "penguins.csv")
    probe = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(project / "dags"), ",".join(HEAVY)],
        env=_airflow_env(project, home),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    result = _last_json_line(probe.stdout)
    assert result["heavy"] == [], "a parse-time module imports a heavy library at module level"
    assert set(result["dags"]) == GOOD_DAG_IDS | SERVED_DAG_IDS
    assert result["errors"] == [REPORTER]


@pytest.mark.slow
def test_import_errors_reach_the_metadata_db_and_good_dags_stay_listed(project: Path, tmp_path: Path) -> None:
    """The real CLI code paths on a fresh SQLite DB: db migrate, dags reserialize (parse + DB sync), then what
    a user sees with `airflow dags list-import-errors` and `airflow dags list`."""
    home = tmp_path / "airflow_home"
    home.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", _CLI_PROBE],
        env=_airflow_env(project, home),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = _last_json_line(probe.stdout)

    assert result["errors_code"] == 1  # list-import-errors fails a CI step when a spec is broken
    (error,) = result["errors"]
    assert (error["bundle_name"], error["filepath"]) == ("dags-folder", REPORTER)
    reported = {
        (Path(f).name, int(line), int(col)) for f, line, col, _ in _ISSUE_LINE.findall(error["error"])
    }
    expected = {
        (name, int(line), int(col))
        for name in BAD
        for line, col, _ in _EXPECT.findall((SPECS / "bad" / name).read_text())
    }
    assert reported == expected
    assert {d["dag_id"] for d in result["dags"]} == GOOD_DAG_IDS
    owners = {d["dag_id"]: d["owners"] for d in result["dags"]}
    assert owners["breast_cancer"] == ["ml-platform"]


def test_a_dag_whose_build_fails_half_way_is_not_loaded(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's __init__ raising (a factory bug on one spec) must not leave a half-built DAG in Airflow,
    which Airflow's DAG auto-registration would otherwise pick up with the tasks made so far."""
    from mlops_provider.operators.evaluate import EvaluateModelOperator

    def broken(self: object, **kwargs: object) -> None:
        raise RuntimeError("factory bug")

    monkeypatch.setattr(EvaluateModelOperator, "__init__", broken)
    bag = _bag(project / "dags")
    assert not {"breast_cancer", "minimal_regression", "churn"} & set(bag.dag_ids), sorted(bag.dag_ids)
    assert "breast_cancer_monitor" not in bag.dag_ids  # the whole pipeline is out, not only the broken DAG
    assert list(bag.import_errors) == [REPORTER]
