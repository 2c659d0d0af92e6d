"""MLflow hook: where the tracking server is and how to authenticate; the client, built once.

What the provider does with MLflow (tags, the pipeline run, model versions) is in
:mod:`mlops_provider.tracking`, which takes this hook's :attr:`MLflowHook.client`.

The connection (type ``mlflow``) holds the tracking URI in *host*, a bearer token in *password* (or
basic auth in *login* + *password*) and optional extras (``registry_uri``, ``insecure_tls``,
``s3_endpoint_url``). Nothing touches the network until :attr:`MLflowHook.client` is used or
:meth:`MLflowHook.activate` is entered.

Which tracking server a hook talks to, first match wins:

1. the connection named by ``mlflow_conn_id``;
2. the connection ``mlflow_default``, if it exists;
3. the environment variable ``MLFLOW_TRACKING_URI``;
4. an embedded store: ``sqlite:///<project_root>/.mlops/mlflow.db`` with artifacts in
   ``<project_root>/.mlops/artifacts`` (browse it with ``mlflow ui --backend-store-uri ...``).

The model registry is the connection's ``registry_uri`` extra or its tracking server; without a
connection, ``MLFLOW_REGISTRY_URI`` or the tracking URI.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from mlops_provider import config
from mlops_provider.exceptions import ServiceUnavailableError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from mlflow import MlflowClient

_ENV_LOCK = threading.RLock()
_CONNECTION_ERROR_MARKERS = (
    "Max retries exceeded",
    "Connection refused",
    "Failed to establish a new connection",
    "Name or service not known",
    "Read timed out",
    "RemoteDisconnected",
)


def embedded_tracking_uri(root: Path | None = None) -> str:
    root = root or config.project_root()
    return f"sqlite:///{root / '.mlops' / 'mlflow.db'}"


def _is_connection_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "MaxRetryError"):
            return True
        if any(marker in str(current) for marker in _CONNECTION_ERROR_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


class _ScopedClient:
    """An ``MlflowClient`` whose every call runs with the hook's credentials and error translation."""

    def __init__(self, client: MlflowClient, scope: Callable[[], contextlib.AbstractContextManager[None]]):
        self._client = client
        self._scope = scope

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._scope():
                return attribute(*args, **kwargs)

        call.__name__ = name
        call.__doc__ = attribute.__doc__
        return call

    def __repr__(self) -> str:
        return f"<MlflowClient via MLflowHook {self._client.tracking_uri}>"


class MLflowHook(BaseHook):
    """Talk to an MLflow tracking server and model registry.

    :param mlflow_conn_id: connection of type ``mlflow``. ``None`` follows the fallbacks in the module
        docstring; a named connection that does not exist is an error.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self._experiment_ids: dict[str, str] = {}

    # ---- connection form (also declared in get_provider_info for Airflow >= 3.2) ----------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extras' form fields for Airflow < 3.2 (3.2+ reads the provider info's ``conn-fields``)."""
        from wtforms import BooleanField, StringField

        from mlops_provider.hooks.connection_form import EXTRA_FIELDS

        return {
            name: BooleanField(label, default=False, description=description) if kind == "boolean"
            else StringField(label, description=description)
            for name, (label, kind, description) in EXTRA_FIELDS.items()
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from mlops_provider.hooks.connection_form import ui_field_behaviour

        return ui_field_behaviour()

    # ---- where, and as whom --------------------------------------------------------------------------

    @cached_property
    def connection(self) -> Connection | None:
        """The Airflow connection in use, or ``None`` when falling back to the environment/embedded store."""
        if self.mlflow_conn_id:
            return self.get_connection(self.mlflow_conn_id)
        from airflow.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.default_conn_name)
        except AirflowNotFoundException:
            return None

    @cached_property
    def _extras(self) -> dict[str, Any]:
        return dict(self.connection.extra_dejson) if self.connection is not None else {}

    @cached_property
    def tracking_uri(self) -> str:
        conn = self.connection
        if conn is not None:
            uri = self._extras.get("tracking_uri") or _uri_from_connection(conn)
            if not uri:
                raise ValueError(f"MLflow connection {conn.conn_id!r} has no host (the tracking URI)")
            return uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return embedded_tracking_uri()

    @property
    def tracking_uri_source(self) -> str:
        """Where :attr:`tracking_uri` came from, for messages."""
        if self.connection is not None:
            return f"the Airflow connection {self.connection.conn_id!r}"
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return "MLFLOW_TRACKING_URI"
        return "the embedded store: no mlflow_default connection"

    @cached_property
    def registry_uri(self) -> str:
        """The model registry: the connection's ``registry_uri`` extra, else its tracking server.

        ``MLFLOW_REGISTRY_URI`` applies only when no connection is used: a connection describes its server
        whole, so a variable left in a worker's environment (MLflow's fluent ``set_registry_uri`` sets it and
        never unsets it) cannot send one task's registrations to another registry than the rest of the run's.
        """
        if self.connection is not None:
            return self._extras.get("registry_uri") or self.tracking_uri
        return os.environ.get("MLFLOW_REGISTRY_URI") or self.tracking_uri

    @property
    def is_embedded(self) -> bool:
        """True for a database or file store this process writes to directly (no server, no UI URL)."""
        return not self.tracking_uri.startswith(("http://", "https://", "databricks"))

    @cached_property
    def artifact_root(self) -> str | None:
        """Where new experiments keep artifacts: next to a SQLite store; a server decides for itself."""
        if self.tracking_uri.startswith("sqlite:///"):
            return (self._sqlite_path.parent / "artifacts").as_uri()
        return None

    @property
    def store_exists(self) -> bool:
        """False only for an embedded SQLite store that was never created (a server: assumed to exist)."""
        return not self.tracking_uri.startswith("sqlite:///") or self._sqlite_path.exists()

    @property
    def _sqlite_path(self) -> Path:
        return Path(self.tracking_uri.removeprefix("sqlite:///"))

    @cached_property
    def _environment(self) -> dict[str, str]:
        """MLflow's own credential variables for this connection; secrets registered with the masker."""
        env: dict[str, str] = {}
        conn = self.connection
        if conn is not None:
            if conn.password and conn.login:
                env["MLFLOW_TRACKING_USERNAME"] = conn.login
                env["MLFLOW_TRACKING_PASSWORD"] = conn.password
            elif conn.password:
                env["MLFLOW_TRACKING_TOKEN"] = conn.password
            if str(self._extras.get("insecure_tls", "")).lower() in ("1", "true", "yes"):
                env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
            if self._extras.get("s3_endpoint_url"):
                env["MLFLOW_S3_ENDPOINT_URL"] = str(self._extras["s3_endpoint_url"])
        if conn is not None and conn.password:
            from airflow.sdk.log import mask_secret

            mask_secret(conn.password)
        return env

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """Credentials in the environment for the duration of one use; connection errors made explicit."""
        with _ENV_LOCK:
            saved = {key: os.environ.get(key) for key in self._environment}
            os.environ.update(self._environment)
            try:
                yield
            except ServiceUnavailableError:
                raise
            except Exception as exc:
                if _is_connection_error(exc):
                    raise self._unavailable(exc) from exc
                raise
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def _unavailable(self, exc: BaseException | str) -> ServiceUnavailableError:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return ServiceUnavailableError(
            f"MLflow tracking server at {self.tracking_uri} is unreachable: {reason}"
        )

    def check_available(self, timeout: float = 10.0) -> None:
        """One quick request to the server's ``/health``; raises :class:`ServiceUnavailableError`."""
        if self.is_embedded:
            return
        import requests

        try:
            response = requests.get(
                self.tracking_uri.rstrip("/") + "/health",
                timeout=timeout,
                verify="MLFLOW_TRACKING_INSECURE_TLS" not in self._environment,
            )
        except requests.RequestException as exc:
            raise self._unavailable(exc) from exc
        if response.status_code >= 500:
            raise self._unavailable(f"HTTP {response.status_code} from /health")

    @cached_property
    def _available(self) -> bool:
        self.check_available()
        if self.tracking_uri.startswith("sqlite:///"):
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return True

    def _ensure_available(self) -> None:
        if not self._available:  # pragma: no cover - _available raises instead
            raise self._unavailable("not available")

    @cached_property
    def client(self) -> MlflowClient:
        """The MLflow client, built on first use; every call runs with this connection's credentials."""
        from mlflow import MlflowClient

        self._ensure_available()
        return _ScopedClient(  # type: ignore[return-value]
            MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri), self._scope
        )

    def get_conn(self) -> MlflowClient:
        return self.client

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Point MLflow's module-level (fluent) API, e.g. ``mlflow.sklearn.log_model``, at this server.

        Restores the previous tracking/registry URI and credentials afterwards.
        """
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        self._ensure_available()
        with _ENV_LOCK:
            previous_tracking = tracking_utils._tracking_uri
            previous_registry = registry_utils._registry_uri
            saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.registry_uri)
            try:
                with self._scope():
                    yield
            finally:
                # None (unset) is accepted at run time, though not by the type hints
                mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]
                mlflow.set_registry_uri(previous_registry)  # type: ignore[arg-type]
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to MLflow at {self.tracking_uri}"

    # ---- experiments -------------------------------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> str:
        """The experiment's id (cached); created in this connection's artifact root when missing."""
        if name not in self._experiment_ids:
            from mlops_provider.tracking.runs import get_or_create_experiment

            self._experiment_ids[name] = get_or_create_experiment(
                self.client, name, artifact_location=self.artifact_root
            )
        return self._experiment_ids[name]


def _uri_from_connection(conn: Connection) -> str:
    host = (conn.host or "").strip()
    if not host:
        return ""
    if "://" in host:
        if conn.port and host.count(":") == 1:
            return f"{host.rstrip('/')}:{conn.port}"
        return host.rstrip("/")
    scheme = conn.schema or "http"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"
