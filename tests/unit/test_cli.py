"""The ``mlops`` command line: lint, schema, show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from mlops_provider import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dags" / "pipelines" / "breast_cancer.yaml"
SCHEMA_FILE = REPO / "provider" / "mlops_provider" / "spec" / "pipeline.schema.json"
GOOD = REPO / "tests" / "specs" / "good"
HEAVY = (
    "airflow",
    "mlflow",
    "great_expectations",
    "evidently",
    "sklearn",
    "pandas",
    "numpy",
    "boto3",
    "docker",
)

SPEC = """\
version: 1
name: {name}
task: regression
ingest:
  source: include/data.csv
train:
  {train}
"""


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(cli.app, list(args))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An Airflow-style project: dags/pipelines/*.yaml, include/train.py."""
    (tmp_path / "dags" / "pipelines").mkdir(parents=True)
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "train.py").write_text("def fit(X, y, params):\n    return None\n")
    return tmp_path


def _spec(
    folder: Path, name: str, train: str = "estimator: sklearn.linear_model.Ridge", file: str = ""
) -> Path:
    path = folder / (file or f"{name}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SPEC.format(name=name, train=train))
    return path


# --------------------------------------------------------------------------------------------------
# lint
# --------------------------------------------------------------------------------------------------
def test_lint_reports_every_error_of_every_file_as_file_line_col(project: Path, monkeypatch) -> None:
    monkeypatch.chdir(project)
    pipelines = Path("dags/pipelines")
    _spec(pipelines, "ok")
    bad = pipelines / "bad.yaml"
    bad.write_text(
        SPEC.format(name="bad", train="estimator: os.system").replace("task: regression", "task: regresion")
    )
    other = pipelines / "nested" / "other.yml"
    other.parent.mkdir()
    other.write_text("version: 1\nname: other\ntask: regression\ningest: {source: x.csv, targt: y}\n")

    result = run("lint", "dags")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "dags/pipelines/bad.yaml:3:7: task: Input should be 'classification' or 'regression' "
        "(hint: did you mean `regression`?)",
        "dags/pipelines/bad.yaml:7:14: train.estimator: module of 'os.system' is not in the allow-list "
        "(sklearn, xgboost, lightgbm, catboost); an operator can extend it with [mlops] allowed_modules",
        "dags/pipelines/nested/other.yml:1:1: missing required key 'train' (hint: add `train:`)",
        "dags/pipelines/nested/other.yml:4:25: ingest.targt: unknown key 'targt' "
        "(hint: did you mean `target`?)",
    ]
    assert result.stderr == "4 error(s) in 2 of 3 spec file(s)\n"


def test_lint_json_for_ci_bots(project: Path, monkeypatch) -> None:
    monkeypatch.chdir(project)
    _spec(Path("dags/pipelines"), "one", train="entrypoint: include/missing.py:fit")
    result = run("lint", "--format", "json", "dags/pipelines")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report == {
        "issues": [
            {
                "file": "dags/pipelines/one.yaml",
                "line": 7,
                "column": 15,
                "path": "train.entrypoint",
                "message": f"file 'include/missing.py' does not exist (looked in {project.resolve()})",
                "hint": None,
                "code": "file-not-found",
            }
        ],
        "summary": {"files": 1, "valid": 0, "invalid": 1, "errors": 1},
    }


def test_lint_exit_0_when_all_valid(project: Path) -> None:
    _spec(project / "dags" / "pipelines", "fine", train="entrypoint: include/train.py:fit")
    result = run("lint", str(project / "dags"), str(EXAMPLE))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "2 spec file(s) OK\n")


def test_lint_skips_hidden_and_non_yaml_files(project: Path) -> None:
    pipelines = project / "dags" / "pipelines"
    (pipelines / ".drafts").mkdir()
    (pipelines / ".drafts" / "wip.yaml").write_text("this: [is not valid")
    (pipelines / "README.md").write_text("# not a spec")
    _spec(pipelines, "visible")
    result = run("lint", "--format", "json", str(pipelines))
    assert json.loads(result.stdout)["summary"]["files"] == 1
    assert result.exit_code == 0


def test_lint_missing_path_is_an_error(tmp_path: Path) -> None:
    result = run("lint", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{tmp_path / 'nope.yaml'}:1:1: cannot read: No such file or directory")


def test_lint_empty_folder_says_so(tmp_path: Path) -> None:
    result = run("lint", str(tmp_path))
    assert result.exit_code == 0
    assert "no spec files" in result.stderr


def test_project_root_defaults_to_the_parent_of_dags(project: Path, tmp_path_factory, monkeypatch) -> None:
    """Relative paths resolve against the project (dags/..), not the current directory."""
    monkeypatch.delenv("AIRFLOW__MLOPS__PROJECT_ROOT", raising=False)
    spec = _spec(project / "dags" / "pipelines", "rooted", train="entrypoint: include/train.py:fit")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert run("lint", str(spec)).exit_code == 0

    other_root = tmp_path_factory.mktemp("other_root")
    by_option = run("lint", "--format", "json", "--project-root", str(other_root), str(spec))
    by_env = run("lint", "--format", "json", str(spec), env={"AIRFLOW__MLOPS__PROJECT_ROOT": str(other_root)})
    for result in (by_option, by_env):
        assert result.exit_code == 1
        (issue,) = json.loads(result.stdout)["issues"]
        assert issue["code"] == "file-not-found"
        assert str(other_root) in issue["message"]


def test_duplicate_names_across_files_and_folders(project: Path) -> None:
    _spec(project / "dags" / "pipelines", "twin")
    _spec(project / "team_b", "twin")
    result = run("lint", "--format", "json", str(project / "dags"), str(project / "team_b"))
    (issue,) = json.loads(result.stdout)["issues"]
    assert (issue["file"], issue["line"], issue["column"], issue["code"]) == (
        str(project / "team_b" / "twin.yaml"),
        2,
        7,
        "duplicate-name",
    )


# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------
def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == cli.schema_text(), (
        "run: mlops schema --output provider/mlops_provider/spec/pipeline.schema.json"
    )


def test_example_spec_points_editors_at_the_schema() -> None:
    first_line = EXAMPLE.read_text().splitlines()[0]
    assert first_line.startswith("# yaml-language-server: $schema=")
    target = (EXAMPLE.parent / first_line.split("$schema=", 1)[1]).resolve()
    assert target == SCHEMA_FILE


def test_schema_command_prints_and_writes(tmp_path: Path) -> None:
    printed = run("schema")
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == json.loads(SCHEMA_FILE.read_text())
    out = tmp_path / "schema.json"
    assert run("schema", "--output", str(out)).exit_code == 0
    assert out.read_text() == SCHEMA_FILE.read_text()


def test_schema_accepts_good_specs_and_flags_typos_like_an_editor_would() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    def as_json(path: Path):
        return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))

    for spec in [EXAMPLE, *sorted(GOOD.glob("*.yaml"))]:
        assert list(validator.iter_errors(as_json(spec))) == [], spec
    typo = as_json(EXAMPLE) | {"shedule": "@daily"}
    assert any("'shedule' was unexpected" in e.message for e in validator.iter_errors(typo))


# --------------------------------------------------------------------------------------------------
# show
# --------------------------------------------------------------------------------------------------
def test_show_text_lists_dags_tasks_dependencies_and_schedules() -> None:
    result = run("show", str(EXAMPLE), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "DAG breast_cancer (training)" in out
    assert "DAG breast_cancer_monitor (monitor)" in out
    assert "schedule: @weekly or asset x-mlops://breast_cancer/drift" in out
    assert "schedule: @daily" in out
    assert "validate  ValidateDatasetOperator  ← ingest" in out
    assert "deploy  PromoteModelOperator  ← register" in out
    assert "request_retrain  RequestRetrainOperator  ← detect_drift  → emits x-mlops://breast_cancer/drift" \
        in out


def test_show_json_is_the_plan() -> None:
    result = run("show", "--format", "json", str(EXAMPLE))
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    training, monitor, batch = plan["dags"]
    assert [t["task_id"] for t in batch["tasks"]] == ["score"]
    # the monitor watches what the batch DAG scores
    assert monitor["tasks"][0]["kwargs"]["current"] == batch["tasks"][0]["kwargs"]["source"]
    assert [t["task_id"] for t in training["tasks"]] == [
        "ingest", "validate", "train", "evaluate", "register", "deploy",
    ]  # fmt: skip
    assert [t["upstream"] for t in training["tasks"]] == [
        [], ["ingest"], ["validate"], ["train"], ["evaluate"], ["register"],
    ]  # fmt: skip
    assert training["schedule"] == "@weekly"
    assert (
        training["schedule_on_assets"]
        == monitor["outlets"]["request_retrain"]
        == ["x-mlops://breast_cancer/drift"]
    )
    assert training["default_args"]["retry_delay"] == 300
    assert training["tasks"][2]["kwargs"]["estimator"] == "sklearn.ensemble.RandomForestClassifier"


def test_show_refuses_an_invalid_spec(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "broken", train="estimator: os.system")
    result = run("show", str(spec))
    assert result.exit_code == 2  # an invalid spec: 2, as for run, history and rollback
    assert result.stdout == ""
    assert f"{spec}:7:14: train.estimator: module of 'os.system'" in result.stderr


# --------------------------------------------------------------------------------------------------
# the real console script, in a fresh process: fast, and never imports Airflow
# --------------------------------------------------------------------------------------------------
def test_mlops_lint_is_fast_and_imports_nothing_heavy(tmp_path: Path) -> None:
    """A pre-commit hook in a data-science repo: airflow.cfg is read as a file, Airflow is not imported."""
    home = tmp_path / "airflow_home"
    home.mkdir()
    (home / "airflow.cfg").write_text("[mlops]\nallowed_modules = sklearn, acme.models\n")
    acme = _spec(tmp_path / "specs", "acme", train="estimator: acme.models.Forest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(home)
    code = (
        "import json, sys\n"
        "from mlops_provider.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        f"print(json.dumps([status, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})]))\n"
    )
    args = ["lint", "--project-root", str(REPO / "tests" / "specs"), str(acme), str(GOOD), str(EXAMPLE)]
    probe = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    status, heavy = json.loads(probe.stdout.splitlines()[-1])
    assert (status, heavy) == (0, []), probe.stderr

    import resource

    script = Path(sys.executable).with_name("mlops")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    real = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert real.returncode == 0, real.stdout + real.stderr
    assert real.stderr == "5 spec file(s) OK\n"
    # the pre-commit promise, as CPU time (a loaded machine stretches wall time, not this): ~0.7 s here;
    # importing Airflow alone would cost ~2 s more
    assert cpu < 2.0, cpu


def test_main_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("lint", "schema", "show"):
        assert command in result.stdout
