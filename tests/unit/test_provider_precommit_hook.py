"""The pre-commit hook a data-science repo uses: valid manifest, right command, right files."""

from __future__ import annotations

import re
import shlex
import sys
from importlib.metadata import entry_points
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _hook() -> dict:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hooks, list)
    (hook,) = (h for h in hooks if h["id"] == "mlops-lint")
    return hook


def test_manifest_has_the_keys_pre_commit_requires() -> None:
    hook = _hook()
    assert {"id", "name", "entry", "language"} <= hook.keys()
    assert hook["language"] == "python"
    assert hook["require_serial"] is True


def test_entry_is_the_installed_console_script() -> None:
    command, *args = shlex.split(_hook()["entry"])
    (script,) = entry_points(group="console_scripts", name=command)
    assert script.value == "mlops_provider.cli:main"
    assert args == ["lint"]
    assert Path(sys.executable).with_name(command).exists()


def test_files_pattern_selects_pipeline_specs_only() -> None:
    files = re.compile(_hook()["files"])
    for path in ("dags/pipelines/churn.yaml", "dags/pipelines/team/a.yml", "pipelines/x.yaml"):
        assert files.search(path), path
    others = ("dags/ml_pipelines.py", "dags/pipelines/README.md", "config/settings.yaml", "mine/x.yaml")
    for path in others:
        assert not files.search(path), path
