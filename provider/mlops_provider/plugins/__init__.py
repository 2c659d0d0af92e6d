"""Airflow plugin: an "ML pipelines" page in the Airflow UI (``<airflow>/mlops/``).

Registered by the ``airflow.plugins`` entry point of this package, so installing the provider is enough.
Every Airflow process loads plugins (the scheduler, the dag processor, each task), so this module stays
cheap: the FastAPI app (and MLflow, when a request needs it) is built on the first request to the page,
in the api-server only. See :mod:`mlops_provider.plugins.page`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

URL_PREFIX = "/mlops"


class LazyPipelinesApp:
    """An ASGI app that builds the page's FastAPI app when the first request arrives."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from mlops_provider.plugins.page import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    fastapi_apps: list[Any] = [{"app": LazyPipelinesApp(), "url_prefix": URL_PREFIX, "name": "ML pipelines"}]
    # Without url_route a nav entry opens the page itself (a new tab), not an iframe: Airflow's iframe
    # sandbox forbids the page's links to leave the frame (MLflow UI, the DAG pages).
    # Two entries, not top-level: Airflow 3.3's UI renders a single (or top-level) external entry as a
    # <button href=...> that a click does nothing with; two or more go in its "Plugins" menu as real links.
    # hrefs are relative to the UI's <base href>, so a sub-path deployment (/airflow/) works too.
    external_views: list[Any] = [
        {"name": "ML pipelines", "href": URL_PREFIX.lstrip("/") + "/", "destination": "nav"},
        {"name": "MLflow UI", "href": URL_PREFIX.lstrip("/") + "/mlflow", "destination": "nav"},
    ]
