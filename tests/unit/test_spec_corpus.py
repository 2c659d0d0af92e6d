"""The bad-spec corpus: every spec in tests/specs/bad declares the issues lint must report.

Each file's header lists ``# expect: LINE:COL CODE`` lines (a folder is one lint run over all its files,
for the cross-file checks). The test runs ``mlops lint --format json`` on each and compares the exact
multiset of (file, line, column, code): a missed error, an extra error or a wrong position all fail.
"""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlops_provider import cli
from mlops_provider.spec.load import load_spec

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "tests" / "specs"
BAD = SPECS / "bad"
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) ([a-z-]+)\s*$", re.M)

UNITS = sorted(BAD.glob("*.yaml")) + sorted(p for p in BAD.iterdir() if p.is_dir())
GOOD = sorted((SPECS / "good").glob("*.yaml")) + sorted((REPO / "dags" / "pipelines").glob("*.yaml"))


def _expected(unit: Path) -> Counter[tuple[str, int, int, str]]:
    files = [unit] if unit.is_file() else sorted(unit.glob("*.yaml"))
    found: Counter[tuple[str, int, int, str]] = Counter()
    for file in files:
        text = file.read_bytes().decode("utf-8", "replace")
        for line, col, code in _EXPECT.findall(text):
            found[(file.name, int(line), int(col), code)] += 1
    return found


def _lint_json(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli.app, ["lint", "--format", "json", "--project-root", str(SPECS), *args])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_bad_spec_reports_exactly_the_declared_issues(unit: Path) -> None:
    expected = _expected(unit)
    assert expected, f"{unit} declares no '# expect: LINE:COL CODE' line"
    code, report = _lint_json(str(unit))
    got = Counter((Path(i["file"]).name, i["line"], i["column"], i["code"]) for i in report["issues"])
    assert code == 1
    assert got == expected, "\n".join(
        f"{i['file']}:{i['line']}:{i['column']}: {i['code']}: {i['message']}" for i in report["issues"]
    )
    assert all(i["message"] for i in report["issues"])


def test_corpus_covers_every_class_of_mistake() -> None:
    """Guards the corpus itself: deleting a file (or a check) must not go unnoticed."""
    codes = {code for unit in UNITS for (_, _, _, code) in _expected(unit)}
    required = {
        "yaml-syntax",
        "tab",
        "duplicate-key",
        "yaml-tag",
        "alias-bomb",
        "unknown-key",
        "wrong-type",
        "bad-enum",
        "bad-schedule",
        "bad-duration",
        "bad-date",
        "bad-metric",
        "out-of-range",
        "estimator-or-entrypoint",
        "file-not-found",
        "module-not-allowed",
        "path-escape",
        "duplicate-name",
        "unsupported-version",
        "literal-secret",
        "missing-key",
        "unknown-expectation",
        "merge-key",
    }
    assert required <= codes, f"no bad spec exercises {sorted(required - codes)}"


def test_all_bad_specs_in_one_run_report_every_error_of_every_file() -> None:
    code, report = _lint_json(str(BAD))
    expected = sum((_expected(unit) for unit in UNITS), Counter())
    got = Counter((Path(i["file"]).name, i["line"], i["column"], i["code"]) for i in report["issues"])
    assert code == 1
    assert got == expected
    assert report["summary"]["errors"] == sum(expected.values())
    # duplicate_names/first.yaml keeps its name; duplicate_models/first.yaml its model, and
    # third_other_server.yaml names the same model in another MLflow
    assert report["summary"]["valid"] == 3


@pytest.mark.parametrize("spec", GOOD, ids=lambda p: p.name)
def test_good_spec_passes(spec: Path) -> None:
    result = CliRunner().invoke(cli.app, ["lint", "--project-root", str(SPECS), str(spec)])
    assert result.exit_code == 0, result.stdout
    assert result.stdout == ""


def test_good_specs_pass_together() -> None:
    """The good specs and the example can share one Airflow: no duplicate DAG ids."""
    code, report = _lint_json(*map(str, GOOD))
    assert code == 0, report
    assert report["summary"] == {"files": len(GOOD), "valid": len(GOOD), "invalid": 0, "errors": 0}


def test_python_tags_are_rejected_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BAD / "python_tags.yaml"
    payload_files = ("mlops_tag_executed_os_system", "mlops_tag_executed_open")

    # Control: the payload is live. PyYAML's unsafe loader really runs it (in a scratch directory).
    control = tmp_path / "control"
    control.mkdir()
    monkeypatch.chdir(control)
    with pytest.raises(yaml.constructor.ConstructorError):  # the !custom tag stops it, after the damage
        yaml.unsafe_load(spec.read_text())
    assert all((control / name).exists() for name in payload_files)

    linted = tmp_path / "lint"
    linted.mkdir()
    monkeypatch.chdir(linted)
    code, report = _lint_json(str(spec))
    assert code == 1
    assert {i["code"] for i in report["issues"]} == {"yaml-tag"}
    assert list(linted.iterdir()) == []


def test_alias_bomb_costs_bounded_time_and_memory() -> None:
    spec = BAD / "alias_bomb.yaml"
    tracemalloc.start()
    started = time.process_time()  # CPU time: a busy 2-core machine does not stretch it
    loaded = load_spec(spec, project_root=SPECS, allowed_modules=None)
    cpu = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [i.code for i in loaded.issues] == ["alias-bomb"]
    assert loaded.spec is None
    # Expanded, the document would hold 9**9 (~387 million) strings: many GB and minutes of CPU.
    assert cpu < 2.0, cpu
    assert peak < 20 * 1024 * 1024


def test_deeply_nested_yaml_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text("version: 1\nname: deep\ntrain:\n  params:\n    x: " + "[" * 900 + "]" * 900 + "\n")
    loaded = load_spec(spec, project_root=tmp_path, allowed_modules=None)
    assert [(i.line, i.code) for i in loaded.issues] == [(5, "too-deep")]
