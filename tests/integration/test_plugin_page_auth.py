"""The ML pipelines page under an auth manager with per-DAG permissions (Airflow's FAB auth manager).

A real api-server with ``FabAuthManager``; the DAGs stored by ``airflow dags reserialize``, their permissions
by ``airflow sync-perm --include-dags``, roles and users made with the FAB CLI, as an admin would. The page
must list only the pipelines whose DAG the user may read, and show an invalid spec only to the users who
may read the DAG it names.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.airflow import (
    AirflowAPI,
    _airflow_server_env,
    _migrated_db_template,
    new_airflow_project,
    start_api_server,
)
from tests.fixtures.mlflow import MLflowServer
from tests.fixtures.processes import REPO_ROOT, service_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
PIPELINES = ("alpha", "beta", "gamma")


@dataclass
class FabServer:
    url: str
    passwords: dict[str, str]
    pipelines_folder: Path

    def as_user(self, username: str) -> AirflowAPI:
        return AirflowAPI(url=self.url, username=username, password=self.passwords[username])


def _airflow(env: dict[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=300, check=False)  # fmt: skip
    output = f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"airflow {' '.join(args)}:\n{output}"
    return result.stdout


@pytest.fixture(scope="module")
def fab_server(
    mlflow_server_local: MLflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FabServer]:
    try:
        import airflow.providers.fab  # noqa: F401
    except ImportError:
        service_missing("apache-airflow-providers-fab is not installed (a dev requirement)")
    base = tmp_path_factory.mktemp("fab-server")
    home, project, pipelines = new_airflow_project(base)
    example = (REPO_ROOT / "dags" / "pipelines" / "breast_cancer.yaml").read_text()
    for name in PIPELINES:
        (pipelines / f"{name}.yaml").write_text(
            example.replace("name: breast_cancer", f"name: {name}", 1)
            .replace("model: breast_cancer_classifier", f"model: {name}_model", 1)
        )
    shutil.copyfile(_migrated_db_template(), home / "airflow.db")

    def fab_env(port: int) -> dict[str, str]:
        env = _airflow_server_env(home, project, port, home / "unused.json", mlflow_server_local)
        env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB
        return {k: v for k, v in env.items() if not k.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER")}

    env = fab_env(0)
    _airflow(env, project, "db", "migrate")  # adds FAB's tables (users, roles, permissions)
    _airflow(env, project, "dags", "reserialize")  # the dag processor's parse, stored in the metadata DB
    _airflow(env, project, "sync-perm", "--include-dags")  # a DAG:<id> permission per stored DAG
    _airflow(env, project, "roles", "create", "alpha_readers")
    _airflow(env, project, "roles", "add-perms", "alpha_readers", "-r", "DAG:alpha", "DAG:gamma",
             "-a", "can_read")  # fmt: skip
    passwords = {user: secrets.token_urlsafe(12) for user in ("admin", "alice", "victor")}
    for user, role in (("admin", "Admin"), ("alice", "alpha_readers"), ("victor", "Viewer")):
        _airflow(env, project, "users", "create", "--username", user, "--password", passwords[user],
                 "--role", role, "--firstname", user, "--lastname", "test",
                 "--email", f"{user}@example.com")  # fmt: skip
    # after the parse: gamma's owner breaks it; delta never was a DAG
    gamma = pipelines / "gamma.yaml"
    gamma.write_text(gamma.read_text().replace("\ntrain:", "\ntrian:", 1))
    (pipelines / "delta.yaml").write_text("version: 1\nname: delta\ntask: classification\n")
    service, port, _ = start_api_server(base, fab_env, cwd=project)
    try:
        yield FabServer(url=f"http://127.0.0.1:{port}", passwords=passwords, pipelines_folder=pipelines)
    finally:
        service.stop()


def _rows(api: AirflowAPI) -> dict[str, str]:
    """The page's rows for ``api``'s user: spec file -> the row's HTML."""
    status, page = api.request("GET", "/mlops/", accept="text/html")
    assert status == 200, page
    assert f"signed in as {api.username}" in page
    rows = re.findall(r"<tr data-pipeline=\"[^\"]*\">(.*?)</tr>", page, re.S)
    by_file = {}
    for row in rows:
        spec_file = re.search(r"dags/pipelines/(\w+\.yaml)", row)
        assert spec_file, row
        by_file[spec_file.group(1)] = row
    return by_file


def test_the_auth_manager_grants_what_the_test_expects(fab_server: FabServer) -> None:
    """The setup itself, through Airflow's own REST API: alice reads alpha and not beta."""
    alice = fab_server.as_user("alice")
    token = alice.token()
    assert alice.request("GET", "/api/v2/dags/alpha", token=token)[0] == 200
    assert alice.request("GET", "/api/v2/dags/beta", token=token)[0] == 403
    _, dags = alice.request("GET", "/api/v2/dags", token=token)
    assert sorted(d["dag_id"] for d in dags["dags"] if d["dag_id"] in PIPELINES) == ["alpha", "gamma"]


def test_a_user_with_one_dag_sees_only_that_pipeline_and_the_broken_spec_it_names(
    fab_server: FabServer,
) -> None:
    rows = _rows(fab_server.as_user("alice"))
    assert sorted(rows) == ["alpha.yaml", "gamma.yaml"], rows.keys()
    assert ">valid<" in rows["alpha.yaml"]
    assert "error(s)" in rows["gamma.yaml"] and re.search(r"gamma\.yaml:\d+:\d+: ", rows["gamma.yaml"])


@pytest.mark.parametrize("user", ["admin", "victor"])
def test_users_who_read_every_dag_see_every_spec(fab_server: FabServer, user: str) -> None:
    """The Admin and Viewer roles read every DAG: every row, valid or not (delta never was a DAG)."""
    rows = _rows(fab_server.as_user(user))
    assert sorted(rows) == ["alpha.yaml", "beta.yaml", "delta.yaml", "gamma.yaml"], rows.keys()
    assert ">valid<" in rows["beta.yaml"] and "error(s)" in rows["delta.yaml"]
