"""Serve a model version in a Docker container, swapped blue/green: ``deploy.targets: [{type: docker, ...}]``.

The container runs MLflow's model server on the candidate's model files::

    <python> -m mlflow models serve -m /model --env-manager local -h 0.0.0.0 -p <slot> --workers N

The model is copied into the container (``/model``) through the engine's API before it starts, so the
container needs no access to the tracking server, no credentials, and no folder shared with the worker
(a remote engine works too). The image needs a Python with ``mlflow`` and the model's own requirements
(``python``: an absolute path puts its folder first on ``PATH``, since MLflow starts its server by name).

**Blue/green with two slots.** The live container listens on ``port`` or ``port + 1``; a candidate starts
on the other slot, next to the live one, and nothing is switched:

1. ``prepare``: start ``<name>-v<version>-candidate`` on the free slot (leftovers of an earlier, crashed
   try are removed first);
2. ``check``: wait for ``/ping`` (up to ``health.timeout``; a container that exits fails at once, with its
   last log lines), POST the sample rows to ``/invocations`` and compare the answers with the model's own
   predictions (``health.tolerance``);
3. the alias moves (only when every target passed);
4. ``commit``: stop and remove the old container, rename the candidate to ``<name>-v<version>`` and give it
   a restart policy. Its URL is the live one: the deploy records it on the registered model (tag
   ``mlops.serving.<target>.url``) and returns it in the task's XCom.

So the old container stops only after the new one answered correctly, and a failed check (``abort``)
removes the candidate and leaves the live container, and the alias, as they were. The live address
alternates between the two slots: clients (or a reverse proxy) read it from the tag.

Containers carry the labels ``mlops.pipeline``, ``mlops.target``, ``mlops.model_version``,
``mlops.role`` (``model-server``) and ``mlops.port``; the live one is the running container without the
``-candidate`` suffix, and :meth:`DockerServingTarget.live_version` reads its version label.

Image, port, engine (``docker_url``, else ``DOCKER_HOST``; ``docker_conn_id`` for a registry login),
``network_mode``, ``mem_limit``, ``cpus`` (a hard limit), ``environment`` and ``mounts`` come from the spec;
mount sources obey the same policy as the training runner (project root or ``[mlops]
docker_allowed_mounts``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlops_provider.docker_engine import (
    DEFAULT_DOCKER_URL,
    LABEL_PREFIX,
    LOG_TAIL_LINES,
    engine_client,
    ensure_image,
    parse_mount,
    remove_container,
)
from mlops_provider.exceptions import DeploymentCheckError, StageError
from mlops_provider.serving.base import Candidate, Staged, require_same_answers

if TYPE_CHECKING:
    import logging

    from docker import APIClient

MODEL_PATH = "/model"
CANDIDATE_SUFFIX = "-candidate"
ROLE = "model-server"
LABEL_PIPELINE = f"{LABEL_PREFIX}pipeline"
LABEL_TARGET = f"{LABEL_PREFIX}target"
LABEL_VERSION = f"{LABEL_PREFIX}model_version"
LABEL_ROLE = f"{LABEL_PREFIX}role"
LABEL_PORT = f"{LABEL_PREFIX}port"
#: how many differing predictions an error message lists


class DockerServingTarget:
    """One ``type: docker`` entry of ``deploy.targets`` (see the module docstring for the swap).

    :param config: the target mapping (validated here as :class:`~mlops_provider.spec.schema.DockerTarget`).
    :param pipeline: the pipeline's name (default container name ``<pipeline>-serving``, a label).
    :param log: where progress goes (the task's logger, or the CLI's).
    """

    def __init__(self, config: Mapping[str, Any], *, pipeline: str, log: logging.Logger | Any) -> None:
        from pydantic import ValidationError

        from mlops_provider.spec.schema import DockerTarget

        try:
            self.config = DockerTarget.model_validate(dict(config))
        except ValidationError as exc:
            raise StageError(f"invalid docker serving target: {exc}") from exc
        self.pipeline = pipeline
        self.base_name = self.config.name or f"{pipeline}-serving"
        self.name = f"docker:{self.base_name}"
        self.extra_mounts = [parse_mount(m) for m in self.config.mounts]
        self.docker_url = self.config.docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
        self.log = log
        self._cli: APIClient | None = None

    # ---- engine and containers ---------------------------------------------------------------------------

    def client(self) -> APIClient:
        if self._cli is None:
            self._cli = engine_client(self.config.docker_conn_id, self.docker_url)
        return self._cli

    def _containers(self, *, running_only: bool) -> list[dict[str, Any]]:
        filters = {"label": [f"{LABEL_TARGET}={self.base_name}", f"{LABEL_ROLE}={ROLE}"]}
        return list(self.client().containers(all=not running_only, filters=filters))

    @staticmethod
    def _container_name(container: Mapping[str, Any]) -> str:
        names = container.get("Names") or [""]
        return str(names[0]).lstrip("/")

    def _live(self) -> dict[str, Any] | None:
        """The running container that is not a candidate (the newest, should a crash have left two)."""
        live = [
            c
            for c in self._containers(running_only=True)
            if not self._container_name(c).endswith(CANDIDATE_SUFFIX)
        ]
        return max(live, key=lambda c: c.get("Created", 0)) if live else None

    def live_version(self) -> str | None:
        live = self._live()
        return None if live is None else str(live["Labels"].get(LABEL_VERSION))

    def url(self, slot: int) -> str:
        parsed = urlparse(self.docker_url)
        host = (
            parsed.hostname if parsed.scheme in ("tcp", "http", "https") and parsed.hostname else "127.0.0.1"
        )
        return f"http://{host}:{slot}"

    def command(self, slot: int) -> list[str]:
        return [self.config.python, "-m", "mlflow", "models", "serve", "-m", MODEL_PATH,
                "--env-manager", "local", "-h", "0.0.0.0", "-p", str(slot),
                "--workers", str(self.config.workers)]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1", "GIT_PYTHON_REFRESH": "quiet"}
        if os.path.isabs(self.config.python):
            env["PATH"] = f"{os.path.dirname(self.config.python)}:/usr/local/bin:/usr/bin:/bin"
        env.update({k: str(v) for k, v in self.config.environment.items()})
        return env

    # ---- the contract ------------------------------------------------------------------------------------

    def prepare(self, candidate: Candidate) -> Staged:
        """Start the candidate on the free slot, next to the live container; nothing is switched."""
        from docker.errors import APIError
        from docker.types import Mount

        cli = self.client()
        live = self._live()
        version = str(candidate.model.version)
        if live is not None and str(live["Labels"].get(LABEL_VERSION)) == version:
            slot = int(live["Labels"][LABEL_PORT])
            self.log.info(
                "%s: v%s is already live at %s; checking it again", self.name, version, self.url(slot)
            )
            return Staged(self.name, version, self.url(slot), {"container": live["Id"], "already_live": True})
        for container in self._containers(running_only=False):
            if live is None or container["Id"] != live["Id"]:
                self.log.warning(
                    "%s: removing container %s (%s) left by an earlier deploy",
                    self.name, self._container_name(container), container.get("State"),
                )  # fmt: skip
                remove_container(cli, container["Id"], self.log)
        ensure_image(cli, self.config.image, self.log)
        port = self.config.port
        slot = port + 1 if live is not None and int(live["Labels"].get(LABEL_PORT, port)) == port else port
        name = f"{self.base_name}-v{version}{CANDIDATE_SUFFIX}"
        labels = {
            LABEL_PIPELINE: self.pipeline,
            LABEL_TARGET: self.base_name,
            LABEL_VERSION: version,
            LABEL_ROLE: ROLE,
            LABEL_PORT: str(slot),
            f"{LABEL_PREFIX}model_name": candidate.model.name,
        }
        host_mode = self.config.network_mode == "host"
        host_config = cli.create_host_config(
            mounts=[Mount(m.target, m.source, type=m.type, read_only=m.read_only) for m in self.extra_mounts],
            network_mode=self.config.network_mode,
            port_bindings=None if host_mode else {slot: slot},
            mem_limit=self.config.mem_limit,
            nano_cpus=int(self.config.cpus * 1e9) if self.config.cpus else None,
            init=True,  # the server gets SIGTERM (a bare PID 1 ignores it): stop is graceful, not a 10 s kill
        )
        self.log.info(
            "%s: starting %s (v%s, image %s) on %s (network %s, memory %s, cpus %s)",
            self.name, name, version, self.config.image, self.url(slot),
            self.config.network_mode or "default", self.config.mem_limit or "unlimited",
            self.config.cpus or "unlimited",
        )  # fmt: skip
        container = cli.create_container(
            self.config.image,
            command=self.command(slot),
            environment=self.environment(),
            host_config=host_config,
            labels=labels,
            name=name,
            ports=None if host_mode else [slot],
        )
        container_id = container["Id"]
        info = {"container": container_id, "name": name, "previous": live["Id"] if live else None}
        staged = Staged(self.name, version, self.url(slot), info)
        try:
            cli.put_archive(container_id, "/", _model_archive(candidate.local_model_dir))
            cli.start(container_id)
        except APIError as exc:
            remove_container(cli, container_id, self.log)
            raise DeploymentCheckError(
                f"{self.name}: cannot start v{version} ({name}): {exc.explanation or exc}"
            ) from exc
        return staged

    def check(self, staged: Staged, candidate: Candidate) -> None:
        """Wait for ``/ping``, send the sample rows, compare the answers with the model's own predictions."""
        import requests

        deadline = time.monotonic() + self.config.health.timeout.total_seconds()
        what = f"{self.name}: v{staged.version} at {staged.endpoint}"
        while True:
            self._fail_if_exited(staged, what)
            try:
                if requests.get(f"{staged.endpoint}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise DeploymentCheckError(
                    f"{what} did not answer /ping within {self.config.health.timeout}{self._log_tail(staged)}"
                )
            time.sleep(0.5)
        rows = self.config.health.rows
        sample = candidate.sample.head(rows)
        expected = list(candidate.expected)[: len(sample)]
        payload = {"dataframe_split": _split_json(sample)}
        try:
            response = requests.post(
                f"{staged.endpoint}/invocations",
                json=payload,
                timeout=max(5.0, deadline - time.monotonic()),
            )
        except requests.RequestException as exc:
            raise DeploymentCheckError(f"{what}: /invocations failed: {exc}{self._log_tail(staged)}") from exc
        if response.status_code != 200:
            raise DeploymentCheckError(
                f"{what}: /invocations answered HTTP {response.status_code}: {response.text[:500]}"
            )
        require_same_answers(what, response.json(), expected, tolerance=self.config.health.tolerance)
        self.log.info("%s answered %d sample rows like the model itself", what, len(sample))

    def commit(self, staged: Staged) -> None:
        """Retire the old container (the new one passed its check), then name the new one as the live one."""
        if staged.info.get("already_live"):
            return
        cli = self.client()
        previous = staged.info.get("previous")
        if previous:
            with contextlib.suppress(Exception):
                cli.stop(previous, timeout=10)
            remove_container(cli, previous, self.log)
        container_id = staged.info["container"]
        cli.rename(container_id, str(staged.info["name"]).removesuffix(CANDIDATE_SUFFIX))
        cli.update_container(container_id, restart_policy={"Name": "unless-stopped"})

    def abort(self, staged: Staged) -> None:
        """Remove the candidate; the live container is left alone."""
        if staged.info.get("already_live"):
            return
        remove_container(self.client(), staged.info["container"], self.log)

    # ---- failures ----------------------------------------------------------------------------------------

    def _log_tail(self, staged: Staged) -> str:
        try:
            raw = self.client().logs(staged.info["container"], tail=LOG_TAIL_LINES)
        except Exception:
            return ""
        text = raw.decode("utf-8", errors="replace").rstrip() if isinstance(raw, bytes) else str(raw)
        return f"; its last log lines:\n{text}" if text else "; it wrote no log"

    def _fail_if_exited(self, staged: Staged, what: str) -> None:
        from docker.errors import NotFound

        try:
            state = self.client().inspect_container(staged.info["container"]).get("State") or {}
        except NotFound as exc:
            raise DeploymentCheckError(f"{what}: the container is gone") from exc
        if state.get("Running"):
            return
        cause = (
            f"was killed for running out of memory (mem_limit {self.config.mem_limit})"
            if state.get("OOMKilled")
            else f"exited with code {state.get('ExitCode')}"
        )
        raise DeploymentCheckError(f"{what} {cause} before it was healthy{self._log_tail(staged)}")


def _model_archive(local_model_dir: str) -> bytes:
    """A tar of the model folder as ``model/`` (unpacked at ``/`` into :data:`MODEL_PATH`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(local_model_dir, arcname=MODEL_PATH.strip("/"))
    return buffer.getvalue()


def _split_json(frame: Any) -> dict[str, Any]:
    """pandas' ``split`` orientation as plain JSON values (numpy scalars, NaN and timestamps converted)."""
    import json

    data: dict[str, Any] = json.loads(frame.to_json(orient="split", date_format="iso", index=False))
    return data
