"""The Docker engine as the training runner and the serving target both use it.

The client comes from the Docker provider's :class:`~airflow.providers.docker.hooks.docker.DockerHook`
(``docker_conn_id`` logs in to a registry, as for ``DockerOperator``); an engine that cannot be reached
raises :class:`~mlops_provider.exceptions.ServiceUnavailableError` naming it. Images are pulled only when
missing; containers carry labels that tie them to their task (``mlops.*``).

**The mount policy.** Bind-mount sources from a spec must lie inside the project root or inside a folder
listed in ``[mlops] docker_allowed_mounts`` (set by whoever runs Airflow, never by a spec): the engine runs
as root, so a spec could otherwise mount any host path.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlops_provider import config
from mlops_provider.exceptions import NotAllowedError, ServiceUnavailableError, StageError

if TYPE_CHECKING:

    from docker import APIClient

#: Labels that tie a container to its task instance (``docker ps --filter label=mlops.dag_id=...``).
LABEL_PREFIX = "mlops."
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class MountSpec:
    """One mount: a host folder (``bind``, same-path or from the runner) or a named ``volume``."""

    source: str
    target: str
    read_only: bool
    type: str = "bind"

    def describe(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


def allowed_mount_roots() -> list[Path]:
    """The project root and the folders of ``[mlops] docker_allowed_mounts``, resolved."""
    extra = (config.get("docker_allowed_mounts") or "").split(",")
    return [
        config.project_root().resolve(),
        *(Path(p.strip()).expanduser().resolve() for p in extra if p.strip()),
    ]


def host_path(source: str, *, what: str) -> Path:
    """``source`` (relative to the project root) resolved; it must stay inside an allowed mount root."""
    roots = allowed_mount_roots()
    path = (roots[0] / source).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise NotAllowedError(
            f"{what} {source!r} resolves to {path}, outside the project root {roots[0]} and "
            f"[mlops] docker_allowed_mounts ({', '.join(str(r) for r in roots[1:]) or 'not set'})"
        )
    return path


def parse_mount(text: str) -> MountSpec:
    """``source:/target[:ro|rw]`` as in ``docker run -v``; a source with a ``/`` or a leading ``.`` is a host
    folder (relative to the project root), anything else a named volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise StageError(f"runner mount {text!r} is not of the form source:/target[:ro|rw]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise StageError(f"runner mount {text!r}: the mode must be ro or rw, not {mode!r}")
    source, target = parts[0], parts[1]
    if "/" in source or source.startswith("."):
        return MountSpec(str(host_path(source, what="runner mount source")), target, mode == "ro")
    return MountSpec(source, target, mode == "ro", type="volume")


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI or an absolute path; ``None`` for anything remote."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme and uri.startswith("/"):
        return Path(uri)
    return None


def same_path_mounts(needed: Iterable[tuple[Path, bool]]) -> list[MountSpec]:
    """Same-path bind mounts for ``(folder, writable)`` pairs, minus folders a wider mount already gives."""
    chosen: list[tuple[Path, bool]] = []
    # parents first; for one folder the writable request first, so it covers the read-only one
    for path, writable in sorted(set(needed), key=lambda item: (len(item[0].parts), not item[1])):
        if any(
            path.is_relative_to(done) and (done_writable or not writable) for done, done_writable in chosen
        ):
            continue
        chosen.append((path, writable))
    return [MountSpec(str(path), str(path), read_only=not writable) for path, writable in chosen]


def engine_client(docker_conn_id: str | None, docker_url: str) -> APIClient:
    """The engine's API client from the Docker provider's hook (registry login: ``docker_conn_id``); an
    unreachable engine raises :class:`ServiceUnavailableError` naming it."""
    from airflow.providers.docker.hooks.docker import DockerHook
    from docker.errors import APIError

    hook = DockerHook(docker_conn_id=docker_conn_id, base_url=docker_url, version="auto")
    try:
        return hook.api_client
    except APIError:  # the engine answered: a refused registry login, say
        raise
    # the hook's "Failed to establish connection to any given Docker hosts", requests' errors, ...
    except Exception as exc:
        raise ServiceUnavailableError(
            f"Docker engine at {docker_url} is unreachable: {str(exc).splitlines()[0][:300]}"
        ) from exc


def ensure_image(cli: APIClient, image: str, log: Any) -> None:
    """Pull ``image`` unless the engine has it; a failed pull raises :class:`ServiceUnavailableError`
    (retried: a registry that is down or rate-limits comes back; a wrong name fails every try)."""
    from docker.errors import APIError, ImageNotFound, NotFound

    with contextlib.suppress(ImageNotFound, NotFound):
        cli.inspect_image(image)
        return
    log.info("Pulling image %s", image)
    try:
        for event in cli.pull(image, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise ServiceUnavailableError(f"cannot pull image {image}: {event['error']}")
    except APIError as exc:
        raise ServiceUnavailableError(f"cannot pull image {image}: {exc.explanation or exc}") from exc


def remove_container(cli: APIClient, container_id: str, log: Any) -> None:
    """Force-remove a container; one already gone (or being removed) is fine."""
    from docker.errors import APIError, NotFound

    try:
        cli.remove_container(container_id, force=True)
    except NotFound:
        pass
    except APIError as exc:
        if "already in progress" not in str(exc):
            log.warning("Could not remove container %s: %s", container_id[:12], exc)


def container_name(*parts: object) -> str:
    text = "-".join(str(p) for p in parts)
    return re.sub(r"[^a-zA-Z0-9_.-]+", "_", text).strip("_.-")[:110] + f"-{uuid.uuid4().hex[:6]}"
