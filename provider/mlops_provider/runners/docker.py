"""Train in a Docker container: ``train.runner: {type: docker, image: ..., docker_url: ...}``.

The container runs the same training step as the local runner (:func:`mlops_provider.stages.train.train`)
through :func:`main` (``python -m mlops_provider.runners.docker``), so the image needs a Python with
``airflow-provider-mlops[ml]`` installed (plus the ``amazon`` extra when the workspace is on S3). It gets
only what it needs:

* on its command line, nothing secret: the train split's URI, target and features, the estimator or
  entrypoint, the seed and the MLflow run to log to;
* in its environment: the MLflow tracking URI and credentials, S3 credentials when the split is on S3,
  the hyper-parameters (templated secrets may hide in them), the ``[mlops]`` allow-list and project root,
  and the runner's own ``environment`` (which may override ``MLFLOW_*``, e.g. a tracking URI the container
  reaches by another name). Every credential is registered with Airflow's secrets masker;
* bind mounts at the same path as on the worker, and only of what the run reads or writes on local disk:
  the split's folder (read-only), the project root for an entrypoint (read-only), the folder of an
  embedded MLflow store and a local artifact location (read-write), plus the runner's ``mounts``.

The container writes the model to MLflow itself and leaves its result (the train XCom) in a JSON file,
copied out through the engine's API, so a remote engine works too and nothing is unpickled. Its output
streams into the task log; a non-zero exit fails the task with the last log lines in the message. The
container is removed (``auto_remove``, default true) whatever the outcome, killed at the task's
``execution_timeout`` or when the task is killed, and a container that a crashed worker left behind in an
earlier try is removed before the next try starts. An unreachable engine raises
:class:`~mlops_provider.exceptions.ServiceUnavailableError` naming it, so the task retries.

Mounts follow the policy of :mod:`mlops_provider.docker_engine` (the project root and
``[mlops] docker_allowed_mounts`` only), shared with the docker serving target. The container's lifecycle
is driven here rather than by a nested
``DockerOperator`` because training needs what it lacks: a result that is neither a log line nor a pickle,
a hard CPU limit (its ``cpus`` are relative shares), log streaming that survives a long silent fit (its
``attach`` stream keeps the API read timeout) with a bounded tail, and cleanup keyed to the task instance.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.docker_engine import (
    DEFAULT_DOCKER_URL,
    LABEL_PREFIX,
    LOG_TAIL_LINES,
    MountSpec,
    allowed_mount_roots,
    container_name,
    engine_client,
    ensure_image,
    local_path,
    parse_mount,
    remove_container,
    same_path_mounts,
)
from mlops_provider.exceptions import MlopsError, NotAllowedError, ServiceUnavailableError, StageError

if TYPE_CHECKING:

    from airflow.sdk import Context
    from docker import APIClient

    from mlops_provider.hooks.mlflow import MLflowHook

#: ``python -m`` this module inside the container.
CONTAINER_MODULE = "mlops_provider.runners.docker"
#: The container leaves its result (the train XCom) here; the worker copies it out.
RESULT_PATH = "/tmp/mlops-train-result.json"
#: Hyper-parameters travel in the environment: templated secrets must not show on a command line.
PARAMS_ENV = "MLOPS_TRAIN_PARAMS"
#: Exit code of :func:`main` for a refused estimator/entrypoint: the task fails without retrying.
EXIT_NOT_ALLOWED = 3
MAX_RESULT_BYTES = 1 << 20
_RESERVED_ENV_PREFIXES = ("AIRFLOW__MLOPS__", PARAMS_ENV)


class DockerTrainRunner:
    """Runs one training in a container; :meth:`kill` stops it from ``on_kill``.

    :param runner: the ``train.runner`` mapping (``type: docker``), validated like a spec's.
    :param log: the task's logger; the container's output goes there line by line.
    """

    def __init__(self, runner: Mapping[str, Any], *, log: Any) -> None:
        from pydantic import ValidationError

        from mlops_provider.spec.schema import DockerRunner

        # a misconfigured runner fails the task at once (errors of this package that retrying cannot help)
        try:
            self.config = DockerRunner.model_validate(dict(runner))
        except ValidationError as exc:
            raise NotAllowedError(f"invalid train runner: {exc}") from exc
        self.extra_mounts = [parse_mount(m) for m in self.config.mounts]
        self.docker_url = self.config.docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
        self.log = log
        self._cli: APIClient | None = None
        self._container_id: str | None = None

    # ---- engine ----------------------------------------------------------------------------------------

    def client(self) -> APIClient:
        """The engine's API client from the Docker provider's hook (registry login: ``docker_conn_id``)."""
        if self._cli is None:
            self._cli = engine_client(self.config.docker_conn_id, self.docker_url)
        return self._cli

    def _ensure_image(self, cli: APIClient) -> None:
        ensure_image(cli, self.config.image, self.log)

    def _remove_leftovers(self, cli: APIClient, labels: Mapping[str, str]) -> None:
        """Containers of this task instance from earlier tries (a worker that died cannot clean up)."""
        keys = ("dag_id", "run_id", "task_id", "map_index")
        filters = {"label": [f"{LABEL_PREFIX}{k}={labels[LABEL_PREFIX + k]}" for k in keys]}
        for container in cli.containers(all=True, filters=filters):
            self.log.warning("Removing container %s left by an earlier try", container["Id"][:12])
            self._remove(cli, container["Id"])

    # ---- what the container gets -----------------------------------------------------------------------

    def _environment(
        self,
        hook: MLflowHook,
        *,
        experiment_id: str,
        train_uri: str,
        params: Mapping[str, Any],
        home_in_tmp: bool,
    ) -> dict[str, str]:
        from airflow.sdk.log import mask_secret

        from mlops_provider.spec.secrets import is_secret_key
        from mlops_provider.storage import workspace

        # the pipeline's experiment is the active one: whatever an entrypoint logs itself lands there too
        env: dict[str, str] = {"PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": hook.tracking_uri,
                               "MLFLOW_EXPERIMENT_ID": experiment_id,
                               "GIT_PYTHON_REFRESH": "quiet"}  # an image without git: no banner  # fmt: skip
        if hook.registry_uri != hook.tracking_uri:
            env["MLFLOW_REGISTRY_URI"] = hook.registry_uri
        env.update(hook._environment)  # credentials of the MLflow connection, masked by the hook
        if workspace.is_s3(train_uri):
            env.update(s3_environment(workspace.workspace_conn_id()))
        if home_in_tmp:
            env["HOME"] = "/tmp"  # the worker's uid has no home in the image
        for key, value in self.config.environment.items():
            if key.startswith(_RESERVED_ENV_PREFIXES):
                raise NotAllowedError(f"the train runner's environment may not set {key}")
            if is_secret_key(key) and value:
                mask_secret(value)
            env[key] = str(value)
        env.update({
            "AIRFLOW__MLOPS__PROJECT_ROOT": str(config.project_root()),
            "AIRFLOW__MLOPS__ALLOWED_MODULES": ",".join(config.allowed_modules()),
            "AIRFLOW__MLOPS__WORKSPACE_CONN_ID": "",  # S3 credentials, if any, are in the environment
            PARAMS_ENV: json.dumps(dict(params), default=str),
        })  # fmt: skip
        return env

    def _mounts(
        self, hook: MLflowHook, *, train_uri: str, entrypoint: str | None, artifact_location: str | None
    ) -> list[MountSpec]:
        from mlops_provider.storage import workspace

        needed: list[tuple[Path, bool]] = []
        split = local_path(train_uri)
        if split is not None:
            folder = split.resolve().parent
            roots = [*allowed_mount_roots(), Path(workspace.workspace_root()).resolve()]
            if not any(folder.is_relative_to(root) for root in roots):
                raise NotAllowedError(
                    f"train split {train_uri} is outside the project root and the workspace"
                )
            needed.append((folder, False))
        if entrypoint is not None:
            needed.append((config.project_root().resolve(), False))
        if hook.tracking_uri.startswith("sqlite:///"):
            needed.append((Path(hook.tracking_uri.removeprefix("sqlite:///")).resolve().parent, True))
        artifacts = local_path(artifact_location or "")
        if artifacts is not None:
            artifacts.mkdir(parents=True, exist_ok=True)  # else the engine would create it, owned by root
            needed.append((artifacts.resolve(), True))
        return same_path_mounts(needed) + self.extra_mounts

    def command(
        self,
        *,
        train_uri: str,
        target: str,
        features: Sequence[str] | None,
        estimator: str | None,
        entrypoint: str | None,
        seed: int | None,
        run_id: str,
        transform: Mapping[str, Any] | None = None,
    ) -> list[str]:
        command = [self.config.python, "-m", CONTAINER_MODULE, "--train-uri", train_uri, "--target", target,
                   "--run-id", run_id, "--output", RESULT_PATH]  # fmt: skip
        command += ["--estimator", estimator] if estimator is not None else ["--entrypoint", str(entrypoint)]
        if features is not None:
            command += ["--features", json.dumps(list(features))]
        if transform is not None:
            command += ["--transform", json.dumps(dict(transform))]
        if seed is not None:
            command += ["--seed", str(seed)]
        return command

    # ---- the run -----------------------------------------------------------------------------------------

    def train(
        self,
        context: Context,
        *,
        hook: MLflowHook,
        ingested: Mapping[str, Any],
        run_id: str,
        estimator: str | None,
        entrypoint: str | None,
        params: Mapping[str, Any],
        seed: int | None,
        transform: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run the training container to its end; returns the train XCom the container wrote."""
        import requests
        from docker.types import Mount

        ti = context["ti"]
        labels = {
            f"{LABEL_PREFIX}dag_id": str(ti.dag_id),
            f"{LABEL_PREFIX}run_id": str(ti.run_id),
            f"{LABEL_PREFIX}task_id": str(ti.task_id),
            f"{LABEL_PREFIX}map_index": str(getattr(ti, "map_index", -1)),
            f"{LABEL_PREFIX}try_number": str(ti.try_number),
        }
        train_uri = str(ingested["train_uri"])
        experiment_id = str(hook.client.get_run(run_id).info.experiment_id)
        artifact_location = hook.client.get_experiment(experiment_id).artifact_location
        mounts = self._mounts(
            hook, train_uri=train_uri, entrypoint=entrypoint, artifact_location=artifact_location
        )
        # files the container writes into the worker's folders stay the worker's
        as_worker = (self.config.user is None and os.getuid() != 0
                     and any(m.type == "bind" and not m.read_only for m in mounts))  # fmt: skip
        user = f"{os.getuid()}:{os.getgid()}" if as_worker else self.config.user
        environment = self._environment(
            hook, experiment_id=experiment_id, train_uri=train_uri, params=params, home_in_tmp=as_worker
        )
        command = self.command(train_uri=train_uri, target=str(ingested["target"]),
                               features=ingested.get("features"), estimator=estimator, entrypoint=entrypoint,
                               seed=seed, run_id=run_id, transform=transform)  # fmt: skip

        cli = self.client()
        if self.config.auto_remove:
            self._remove_leftovers(cli, labels)
        self._ensure_image(cli)
        name = container_name("mlops", ti.dag_id, ti.task_id, ti.try_number)
        host_config = cli.create_host_config(
            mounts=[Mount(m.target, m.source, type=m.type, read_only=m.read_only) for m in mounts],
            network_mode=self.config.network_mode,
            mem_limit=self.config.mem_limit,
            nano_cpus=int(self.config.cpus * 1e9) if self.config.cpus else None,
            auto_remove=False,  # removed below, after the result is copied out
        )
        self.log.info(
            "Training in container %s from image %s on %s (network %s, memory %s, cpus %s); mounts: %s; "
            "environment: %s; command: %s",
            name, self.config.image, self.docker_url, self.config.network_mode or "default",
            self.config.mem_limit or "unlimited", self.config.cpus or "unlimited",
            ", ".join(m.describe() for m in mounts) or "none", ", ".join(sorted(environment)),
            " ".join(command),
        )  # fmt: skip
        container = cli.create_container(
            self.config.image, command=command, environment=environment, host_config=host_config,
            labels=labels, name=name, user=user,
        )  # fmt: skip
        self._container_id = container_id = container["Id"]
        stream = None
        try:
            cli.start(container_id)
            stream = cli.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
            tail = self._stream_logs(stream)
            status = cli.wait(container_id)
            code = int(status.get("StatusCode", -1))
            if code != 0:
                raise self._failure(cli, container_id, name, code, tail)
            return self._result(cli, container_id, name)
        except requests.exceptions.ConnectionError as exc:
            raise ServiceUnavailableError(f"Docker engine at {self.docker_url} went away: {exc}") from exc
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            self.kill()

    def _stream_logs(self, stream: Iterator[bytes]) -> list[str]:
        """Log the container's output line by line as it comes; keep the last lines for an error message."""
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        buffer = ""
        for chunk in stream:
            buffer += chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else str(chunk)
            *lines, buffer = buffer.split("\n")
            for line in lines:
                self.log.info("%s", line.rstrip())
                tail.append(line.rstrip())
        if buffer.strip():
            self.log.info("%s", buffer.rstrip())
            tail.append(buffer.rstrip())
        return list(tail)

    def _failure(
        self, cli: APIClient, container_id: str, name: str, code: int, tail: list[str]
    ) -> MlopsError:
        state: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            state = cli.inspect_container(container_id).get("State") or {}
        if code == EXIT_NOT_ALLOWED:
            return NotAllowedError(tail[-1] if tail else f"training container {name} refused the estimator")
        if state.get("OOMKilled"):
            what = f"was killed for running out of memory (mem_limit {self.config.mem_limit})"
        else:
            what = f"exited with code {code}"
        lines = "\n".join(tail) if tail else "(no output)"
        return StageError(
            f"training container {name} (image {self.config.image}) {what}; "
            f"its last {len(tail)} log lines:\n{lines}"
        )

    def _result(self, cli: APIClient, container_id: str, name: str) -> dict[str, Any]:
        from docker.errors import NotFound

        try:
            chunks, stat = cli.get_archive(container_id, RESULT_PATH)
            if int(stat.get("size", 0)) > MAX_RESULT_BYTES:
                raise StageError(f"training container {name} wrote a result of {stat['size']} bytes")
            archive = b"".join(chunks)
        except NotFound as exc:
            raise StageError(
                f"training container {name} exited 0 but wrote no result to {RESULT_PATH}"
            ) from exc
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            if handle is None:
                raise StageError(f"training container {name}: {RESULT_PATH} is not a file")
            result = json.loads(handle.read())
        if not isinstance(result, dict) or "model_uri" not in result:
            raise StageError(f"training container {name} wrote an unexpected result: {str(result)[:300]}")
        return result

    # ---- cleanup -----------------------------------------------------------------------------------------

    def _remove(self, cli: APIClient, container_id: str) -> None:
        remove_container(cli, container_id, self.log)

    def kill(self) -> None:
        """Stop the container and remove it (unless ``auto_remove`` is false); safe to call twice."""
        container_id, self._container_id = self._container_id, None
        if container_id is None or self._cli is None:
            return
        if self.config.auto_remove:
            self._remove(self._cli, container_id)
            return
        from docker.errors import APIError

        with contextlib.suppress(APIError):
            if self._cli.inspect_container(container_id)["State"].get("Running"):
                self._cli.kill(container_id)
        self.log.info("Kept container %s (auto_remove is false)", container_id[:12])


def s3_environment(conn_id: str | None) -> dict[str, str]:
    """AWS's standard variables for the workspace's S3 connection; the container needs no Airflow one."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk.log import mask_secret

    hook = S3Hook(aws_conn_id=conn_id)
    credentials = hook.get_credentials()
    env: dict[str, str] = {}
    if credentials.access_key:
        env["AWS_ACCESS_KEY_ID"] = credentials.access_key
    if credentials.secret_key:
        mask_secret(credentials.secret_key)
        env["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key
    if credentials.token:
        mask_secret(credentials.token)
        env["AWS_SESSION_TOKEN"] = credentials.token
    if hook.conn_region_name:
        env["AWS_DEFAULT_REGION"] = hook.conn_region_name
    if hook.conn_config.endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = hook.conn_config.endpoint_url
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Inside the container: :func:`mlops_provider.stages.train.main`, with the hyper-parameters read from
    the environment; a refused estimator/entrypoint exits with :data:`EXIT_NOT_ALLOWED`."""
    from mlops_provider.stages import train

    args = list(sys.argv[1:] if argv is None else argv)
    params = os.environ.pop(PARAMS_ENV, None)
    if params is not None:
        args += ["--params", params]
    try:
        return train.main(args)
    except NotAllowedError as exc:
        print(f"NotAllowedError: {exc}", file=sys.stderr, flush=True)
        return EXIT_NOT_ALLOWED


if __name__ == "__main__":
    raise SystemExit(main())
