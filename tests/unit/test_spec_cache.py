"""The loader's YAML parse cache (``<pipelines>/__pycache__/``): same DAGs, never stale, never in the way.

Real files, real loader, real Airflow DAG serialization; nothing faked. One test counts calls to the YAML
reader to show that a warm load does not parse the specs again (the point of the cache).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_provider.spec.cache import FILE_NAME

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "tests" / "specs"
DATED = """\
version: 1
name: dated
task: classification
start_date: 2025-03-04
ingest: {source: include/data/x.csv}
train:
  estimator: sklearn.ensemble.RandomForestClassifier
  params:
    cutoff: 2025-01-01T10:00:00.5+05:30
    naive: 2025-01-01 10:00:00
    day: 2024-02-29
    big: 12345678901234567890
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pipelines = tmp_path / "dags" / "pipelines"
    pipelines.mkdir(parents=True)
    shutil.copytree(SPECS / "include", tmp_path / "include")
    for name in ("minimal_regression.yaml", "custom_entrypoint.yaml", "monitored_classifier.yaml"):
        shutil.copy(SPECS / "good" / name, pipelines)
    shutil.copy(REPO / "dags" / "pipelines" / "breast_cancer.yaml", pipelines)
    (pipelines / "dated.yaml").write_text(DATED)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # the cache follows PYTHONDONTWRITEBYTECODE
    monkeypatch.delenv("AIRFLOW__MLOPS__SPEC_CACHE", raising=False)
    monkeypatch.delenv("AIRFLOW__MLOPS__ALLOWED_MODULES", raising=False)
    return tmp_path


def _load(project: Path) -> dict:
    from mlops_provider.loader import load_pipelines

    return load_pipelines(None, folder=project / "dags" / "pipelines", project_root=project)


def _serialized(dags: dict) -> dict[str, str]:
    from airflow.serialization.serialized_objects import DagSerialization

    return {dag_id: json.dumps(DagSerialization.to_dict(dag), sort_keys=True, default=str)
            for dag_id, dag in dags.items()}


def _cache_file(project: Path) -> Path:
    return project / "dags" / "pipelines" / "__pycache__" / FILE_NAME


def _count_yaml_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from mlops_provider.spec import load

    parsed: list[str] = []
    real = load.read_yaml

    def counting(text: str, file: str):
        parsed.append(file)
        return real(text, file)

    monkeypatch.setattr(load, "read_yaml", counting)
    return parsed


def test_a_warm_load_parses_no_yaml_and_builds_the_same_dags(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = _count_yaml_parses(monkeypatch)
    cold = _serialized(_load(project))
    assert len(parsed) == 5 and _cache_file(project).is_file()
    assert "dated" in cold and "mlops_invalid_specs" not in cold

    parsed.clear()
    warm = _serialized(_load(project))
    assert parsed == []
    assert warm == cold  # dates, datetimes with offsets and big ints come back exactly

    monkeypatch.setenv("AIRFLOW__MLOPS__SPEC_CACHE", "False")
    assert _serialized(_load(project)) == cold
    assert len(parsed) == 5


def test_an_edited_spec_is_parsed_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(project)
    spec = project / "dags" / "pipelines" / "minimal_regression.yaml"
    spec.write_text(spec.read_text() + "description: edited after the first parse\n")
    parsed = _count_yaml_parses(monkeypatch)
    dags = _load(project)
    assert parsed == ["dags/pipelines/minimal_regression.yaml"]
    assert dags["minimal_regression"].description == "edited after the first parse"


def test_a_cached_spec_that_became_invalid_reports_the_same_located_issue(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """custom_entrypoint.yaml names include/suite.json; deleting it breaks the spec without changing it."""
    from mlops_provider.loader import report_invalid_specs

    _load(project)
    (project / "include" / "suite.json").unlink()
    warm, warm_report = _load(project), report_invalid_specs(folder=project / "dags" / "pipelines",
                                                             project_root=project)
    monkeypatch.setenv("AIRFLOW__MLOPS__SPEC_CACHE", "False")
    cold, cold_report = _load(project), report_invalid_specs(folder=project / "dags" / "pipelines",
                                                             project_root=project)

    def issues(report: Any) -> list[str]:
        return [issue.format() for issue in report.mlops_error.issues]

    assert "custom_entrypoint" not in warm and "custom_entrypoint" not in cold
    assert issues(warm_report) == issues(cold_report)
    suite_line = "dags/pipelines/custom_entrypoint.yaml:20:"  # validate.suite
    assert any(line.startswith(suite_line) for line in issues(warm_report)), issues(warm_report)


def test_a_corrupt_cache_file_is_ignored_and_replaced(project: Path) -> None:
    reference = _serialized(_load(project))
    _cache_file(project).write_bytes(b"\x00not a cache")
    assert _serialized(_load(project)) == reference
    assert _cache_file(project).read_bytes() != b"\x00not a cache"
    assert _serialized(_load(project)) == reference


def test_entries_of_deleted_specs_are_dropped(project: Path) -> None:
    _load(project)
    size_all = _cache_file(project).stat().st_size
    for name in ("custom_entrypoint.yaml", "monitored_classifier.yaml", "breast_cancer.yaml"):
        (project / "dags" / "pipelines" / name).unlink()
    assert set(_load(project)) == {"minimal_regression", "dated"}
    assert _cache_file(project).stat().st_size < size_all / 2


@pytest.mark.parametrize("switch", ["PYTHONDONTWRITEBYTECODE", "AIRFLOW__MLOPS__SPEC_CACHE=False"])
def test_nothing_is_written_when_switched_off(
    project: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    if switch == "PYTHONDONTWRITEBYTECODE":
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
    else:
        monkeypatch.setenv("AIRFLOW__MLOPS__SPEC_CACHE", "False")
    assert "breast_cancer" in _load(project)
    assert not (project / "dags" / "pipelines" / "__pycache__").exists()


def test_an_unwritable_cache_place_still_loads(project: Path) -> None:
    """A read-only bundle: here ``__pycache__`` is a file, so the cache can be neither read nor written."""
    (project / "dags" / "pipelines" / "__pycache__").write_text("in the way")
    reference = _load(project)
    assert "breast_cancer" in reference and "mlops_invalid_specs" not in reference
    assert (project / "dags" / "pipelines" / "__pycache__").read_text() == "in the way"
