"""Spec checks whose outcome depends on settings or the file system (the corpus covers the rest)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlops_provider import config
from mlops_provider.exceptions import SpecError, SpecIssue
from mlops_provider.spec.load import check_unique_names, load_spec
from mlops_provider.spec.secrets import is_secret_key

BASE = """\
version: 1
name: {name}
task: regression
ingest:
  source: {source}
train:
  estimator: {estimator}
"""


def _write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _load(path: Path, root: Path, allowed: tuple[str, ...] | None = None):
    return load_spec(path, project_root=root, allowed_modules=allowed or config.allowed_modules())


def test_allowed_modules_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _write(tmp_path, BASE.format(name="own", source="d.csv", estimator="acme.models.Forest"))
    monkeypatch.delenv("AIRFLOW__MLOPS__ALLOWED_MODULES", raising=False)
    refused = _load(spec, tmp_path)
    assert [(i.line, i.column, i.code) for i in refused.issues] == [(7, 14, "module-not-allowed")]
    assert "acme.models.Forest" in refused.issues[0].message

    monkeypatch.setenv("AIRFLOW__MLOPS__ALLOWED_MODULES", "sklearn, acme.models")
    assert config.allowed_modules() == ("sklearn", "acme.models")
    assert _load(spec, tmp_path).ok


@pytest.mark.parametrize("estimator", ["acme.modelsX.Forest", "acme", "sklearn_evil.Forest"])
def test_allow_list_matches_whole_module_names(tmp_path: Path, estimator: str) -> None:
    spec = _write(tmp_path, BASE.format(name="own", source="d.csv", estimator=estimator))
    loaded = _load(spec, tmp_path, ("sklearn", "acme.models"))
    assert [i.code for i in loaded.issues] in (["module-not-allowed"], ["bad-import-path"])


def test_symlink_out_of_the_project_root_is_an_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "project", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "data").symlink_to(outside, target_is_directory=True)
    spec = _write(
        root, BASE.format(name="linked", source="data/x.csv", estimator="sklearn.linear_model.Ridge")
    )
    loaded = _load(spec, root)
    assert [(i.line, i.code) for i in loaded.issues] == [(5, "path-escape")]


def test_urls_and_templates_are_not_paths(tmp_path: Path) -> None:
    for source in ("s3://bucket/x.csv", "'data/{{ ds }}.csv'"):
        spec = _write(
            tmp_path, BASE.format(name="remote", source=source, estimator="sklearn.linear_model.Ridge")
        )
        assert _load(spec, tmp_path).ok, source


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("DB_PASSWD", True),
        ("apiKey", True),
        ("api_key", True),
        ("API-KEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("aws_access_key_id", True),
        ("client_secret", True),
        ("token", True),
        ("MLFLOW_TRACKING_TOKEN", True),
        ("privateKey", True),
        ("credentials", True),
        ("max_tokens", False),
        ("tokenizer", False),
        ("key", False),
        ("monkey", False),
        ("primary_key", False),
        ("n_estimators", False),
        ("keyword", False),
        ("passenger_count", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_literal_secret_message_never_echoes_the_value(tmp_path: Path) -> None:
    spec = _write(
        tmp_path,
        BASE.format(name="s", source="d.csv", estimator="sklearn.linear_model.Ridge")
        + "  params:\n    api_token: s3cr3t-value-42\n",
    )
    (issue,) = _load(spec, tmp_path).issues
    assert issue.code == "literal-secret"
    assert "s3cr3t" not in issue.format()
    assert "{{ var.value." in (issue.hint or "")


def test_issue_format_is_file_line_col_path_message_hint(tmp_path: Path) -> None:
    spec = _write(
        tmp_path,
        BASE.format(name="fmt", source="d.csv", estimator="sklearn.linear_model.Ridge")
        + "evaluate:\n  metrics: [rmse, maee]\n",
    )
    (issue,) = _load(spec, tmp_path).issues
    assert issue.format() == (
        f"{spec}:9:19: evaluate.metrics[1]: unknown metric 'maee' (hint: did you mean `mae`?)"
    )


def test_duplicate_names_flag_the_later_file_only(tmp_path: Path) -> None:
    first = _write(
        tmp_path, BASE.format(name="dup", source="a.csv", estimator="sklearn.linear_model.Ridge"), "a.yaml"
    )
    second = _write(
        tmp_path,
        "# comment\n" + BASE.format(name="dup", source="b.csv", estimator="sklearn.linear_model.Ridge"),
        "b.yaml",
    )
    loaded = [_load(first, tmp_path), _load(second, tmp_path)]
    check_unique_names(loaded)
    assert loaded[0].ok
    assert not loaded[1].ok and loaded[1].spec is None
    assert [(i.line, i.column, i.code) for i in loaded[1].issues] == [(3, 7, "duplicate-name")]
    assert str(first) in loaded[1].issues[0].message


def test_spec_error_lists_every_issue_one_per_line() -> None:
    issues = [
        SpecIssue("a.yaml", 3, 5, "bad", ("x",), "fix it", "invalid"),
        SpecIssue("b.yaml", 1, 1, "worse"),
    ]
    text = str(SpecError(issues))
    assert text.splitlines() == [
        "2 invalid pipeline spec files: a.yaml (1 error), b.yaml (1 error)",
        "a.yaml:3:5: x: bad (hint: fix it)",
        "b.yaml:1:1: worse",
    ]
    counted = str(SpecError([*issues, SpecIssue("a.yaml", 4, 1, "also")], specs_checked=5))
    assert counted.splitlines()[0] == (
        "2 of 5 pipeline specs invalid, their DAGs not loaded (the other pipelines are unaffected): "
        "a.yaml (2 errors), b.yaml (1 error)"
    )


def test_the_invalid_specs_dag_id_is_reserved(tmp_path: Path) -> None:
    text = BASE.format(name="mlops_invalid_specs", source="d.csv", estimator="sklearn.svm.SVR")
    spec = _write(tmp_path, text)
    assert [(i.line, i.column, i.code) for i in _load(spec, tmp_path).issues] == [(2, 7, "bad-name")]


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    spec = _write(tmp_path, "version: 1\ndescription: '" + "x" * 2_000_000 + "'\n")
    assert [(i.line, i.column, i.code) for i in _load(spec, tmp_path).issues] == [(1, 1, "too-large")]
