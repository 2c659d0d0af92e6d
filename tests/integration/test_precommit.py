"""The ``mlops-lint`` pre-commit hook, run by pre-commit itself in a data-science repo, as README shows.

pre-commit (installed in a venv of the test's own) clones this provider's repo at a commit, builds the
hook's environment from ``.pre-commit-hooks.yaml`` (``pip install`` of the provider) and runs it on
``git commit``. The provider's repo is a snapshot of this checkout (tracked and untracked files, committed
in a throw-away git repo), so uncommitted work is what gets tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = REPO_ROOT / "tests" / "specs"


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "ds", "GIT_AUTHOR_EMAIL": "ds@example.com",
                "GIT_COMMITTER_NAME": "ds", "GIT_COMMITTER_EMAIL": "ds@example.com"}  # fmt: skip


def _git(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_IDENTITY, **(env or {})},
                          capture_output=True, text=True, check=check, timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def pre_commit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``pre-commit`` command, in a venv of its own (it is a developer tool, not a dependency)."""
    if shutil.which("git") is None:
        from tests.fixtures.processes import service_missing

        service_missing("git is not installed")
    venv = tmp_path_factory.mktemp("pre-commit") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "pre-commit>=3,<5"], check=True, timeout=600)  # fmt: skip
    return venv / "bin" / "pre-commit"


@pytest.fixture(scope="module")
def provider_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout's files as a git repo of one commit (what ``repo:`` / ``rev:`` point at)."""
    repo = tmp_path_factory.mktemp("provider-repo")
    listed = _git(REPO_ROOT, "ls-files", "-co", "--exclude-standard", "-z").stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "snapshot")
    return repo, _git(repo, "rev-parse", "HEAD").stdout.strip()


def test_a_commit_with_a_bad_spec_is_refused_with_every_error_and_goes_through_once_fixed(
    pre_commit: Path, provider_repo: tuple[Path, str], tmp_path: Path
) -> None:
    repo, rev = provider_repo
    ds = tmp_path / "ds-repo"
    (ds / "dags" / "pipelines").mkdir(parents=True)
    (ds / "config").mkdir()
    _git(ds, "init", "-q")
    (ds / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {repo}\n    rev: {rev}\n    hooks: [{{id: mlops-lint}}]\n"
    )
    shutil.copy(SPECS / "good" / "minimal_regression.yaml", ds / "dags" / "pipelines" / "regression.yaml")
    shutil.copy(SPECS / "bad" / "unknown_keys.yaml", ds / "dags" / "pipelines" / "churn.yaml")
    # a YAML file that is not a pipeline spec: the hook's `files` pattern leaves it alone
    shutil.copy(SPECS / "bad" / "unknown_keys.yaml", ds / "config" / "settings.yaml")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    subprocess.run([str(pre_commit), "install"], cwd=ds, env=env, check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    _git(ds, "add", "-A")

    refused = _git(ds, "commit", "-m", "add churn pipeline", check=False, env=env)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "mlops lint (pipeline specs)" in output and "Failed" in output, output
    for line in (
        "dags/pipelines/churn.yaml:12:1: shedule: unknown key 'shedule' (hint: did you mean `schedule`?)",
        "dags/pipelines/churn.yaml:15:3: ingest.targt: unknown key 'targt' (hint: did you mean `target`?)",
        "dags/pipelines/churn.yaml:28:3: monitor.frobnicate: unknown key 'frobnicate'",
    ):
        assert line in output, output
    assert "7 error(s) in 1 of 2 spec file(s)" in output, output
    assert "config/settings.yaml" not in output and "regression.yaml:" not in output, output
    assert _git(ds, "rev-parse", "--verify", "HEAD", check=False).returncode != 0, "nothing was committed"

    # the data scientist puts a valid spec in its place; the same commit now goes through
    shutil.copy(SPECS / "good" / "monitored_classifier.yaml", ds / "dags" / "pipelines" / "churn.yaml")
    _git(ds, "add", "-A")
    committed = _git(ds, "commit", "-m", "add churn pipeline", check=False, env=env)
    output = committed.stdout + committed.stderr
    assert committed.returncode == 0, output
    assert "mlops lint (pipeline specs)" in output and "Passed" in output, output
    assert _git(ds, "ls-files").stdout.split() == [
        ".pre-commit-config.yaml", "config/settings.yaml", "dags/pipelines/churn.yaml",
        "dags/pipelines/regression.yaml",
    ]
