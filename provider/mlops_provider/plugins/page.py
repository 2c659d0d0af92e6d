"""The "ML pipelines" page: a FastAPI app mounted by the api-server under ``/mlops``.

Airflow does not authenticate plugin apps (a mounted app inherits none of the core API's dependencies),
so the page asks for the Airflow user itself (``GetUserDep``: the UI's session cookie or a bearer token)
and shows only pipelines whose training DAG that user may read. A browser without a session is sent to
the login page; any other caller gets 401.

Server-rendered HTML, every value escaped. Imported only on the first request (see the package); the
route's annotations are resolved by FastAPI from this module's globals, hence the module-level imports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import GetUserDep, get_user
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops_provider.plugins import URL_PREFIX
from mlops_provider.plugins.status import Link, PipelineRow, collect

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser


def create_app() -> FastAPI:
    app = FastAPI(title="ML pipelines", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def login_first(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(airflow_base(request) + login.lstrip("/"), status_code=303)
        return await http_exception_handler(request, exc)

    @app.get("/", response_class=HTMLResponse)
    def pipelines(request: Request, user: GetUserDep) -> HTMLResponse:
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = collect(readable_dag_ids=_can_read(user), session=session)
        return HTMLResponse(render(rows, airflow_url=airflow_base(request), user=user.get_name()))

    @app.get("/mlflow", dependencies=[Depends(get_user)])
    def mlflow_ui() -> RedirectResponse:
        """The nav entry "MLflow UI": the UI of the default MLflow connection (or [mlops] mlflow_ui_url)."""
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.links.mlflow import ui_base_url

        try:
            tracking_uri = MLflowHook().tracking_uri
        except Exception as exc:  # no mlflow_default connection, one without host
            raise HTTPException(503, f"No MLflow to open: {exc}") from exc
        return RedirectResponse(ui_base_url(tracking_uri) + "/", status_code=307)

    return app


def _can_read(user: BaseUser) -> Callable[[str], bool]:
    """Asked per DAG id: a spec whose DAG the dag processor has not stored yet still gets its row."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    return lambda dag_id: manager.is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user)


def airflow_base(request: Request) -> str:
    """The Airflow UI's base path as the browser sees it (``/`` or ``/airflow/``), from the mount point."""
    root = request.scope.get("root_path", "")
    if root.endswith(URL_PREFIX):
        root = root[: -len(URL_PREFIX)]
    return root.rstrip("/") + "/"


# ------------------------------------------------------------------------------------------------- HTML
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #e2e8f0;padding:.45rem .6rem;
vertical-align:top;text-align:left;font-size:.92rem}th{background:#f7fafc}
.ok{color:#276749}.bad{color:#c53030}.muted{color:#718096}code{font-size:.85rem}
ul{margin:0;padding-left:1.1rem}a{color:#2b6cb0}
"""


def _a(link: Link, *, external: bool = True) -> str:
    target = ' target="_blank" rel="noopener noreferrer"' if external else ""
    return f'<a href="{escape(link.url)}"{target}>{escape(link.text)}</a>'


def _when(value: dt.datetime | None) -> str:
    return f' <span class="muted">{escape(value.strftime("%Y-%m-%d %H:%M"))} UTC</span>' if value else ""


def _lint(row: PipelineRow) -> str:
    if row.valid:
        return '<span class="ok">valid</span>'
    items = "".join(f"<li><code>{escape(issue)}</code></li>" for issue in row.issues)
    return f'<span class="bad">{len(row.issues)} error(s)</span><ul>{items}</ul>'


def _dag_url(airflow_url: str, dag_id: str) -> str:
    return f"{airflow_url}dags/{quote(dag_id, safe='')}"


def _pipeline(row: PipelineRow, airflow_url: str) -> str:
    if row.name is None:
        return '<span class="muted">-</span>'
    dags = "".join(
        f"<li>{_a(Link(dag_id, _dag_url(airflow_url, dag_id)), external=False)} "
        f'<span class="muted">{escape(kind)}</span>{_dag_state(row.dag_states.get(dag_id))}</li>'
        for dag_id, kind in row.dag_ids.items()
    )
    return f"<strong>{escape(row.name)}</strong><ul>{dags}</ul>"


def _dag_state(state: str | None) -> str:
    if state is None or state == "active":
        return ""
    css = "muted" if state == "paused" else "bad"
    return f' <span class="{css} dag-state">{escape(state)}</span>'


def _champion(row: PipelineRow) -> str:
    if row.mlflow_error:
        return f'<span class="bad">{escape(row.mlflow_error)}</span>'
    champion = row.champion
    if champion is None:
        return f'<span class="muted">{escape(row.champion_note or "-")}</span>'
    metrics = ", ".join(
        f"{escape(name)} {'-' if value is None else f'{value:.4g}'}"
        for name, value in champion.metrics.items()
    )
    verdict = f' <span class="muted">({escape(champion.verdict)})</span>' if champion.verdict else ""
    links = " · ".join(_a(link) for link in champion.links)
    return (
        f'<span class="champion">@{escape(champion.alias)}: '
        f"<strong>v{escape(champion.version)}</strong></span>{verdict}<br>{metrics}<br>{links}"
    )


def _drift(row: PipelineRow) -> str:
    if row.mlflow_error:
        return '<span class="muted">-</span>'
    drift = row.drift
    if not row.monitored:
        return '<span class="muted">not monitored (no monitor section)</span>' if row.name else "-"
    if drift is None:
        return '<span class="muted">no monitoring run yet</span>'
    if drift.dataset_drift is None:
        verdict = f'<span class="muted">{escape(drift.status.lower())}, no verdict</span>'
    elif drift.dataset_drift:
        verdict = '<span class="bad">drift</span>'
    else:
        verdict = '<span class="ok">no drift</span>'
    share = f", {drift.drift_share:.0%} of columns drifted" if drift.drift_share is not None else ""
    links = " · ".join(_a(link) for link in drift.links)
    return f"{verdict}{share}{_when(drift.started)}<br>{links}"


def _last_run(row: PipelineRow, airflow_url: str) -> str:
    run = row.last_run
    if row.name is None:
        return '<span class="muted">-</span>'
    if run is None:
        return '<span class="muted">never ran</span>'
    state = run.state or "none"
    css = {"success": "ok", "failed": "bad"}.get(state, "muted")
    url = f"{_dag_url(airflow_url, run.dag_id)}/runs/{quote(run.run_id, safe='')}"
    failure = ""
    if state == "failed":
        task = f"task <code>{escape(run.failed_task)}</code>" if run.failed_task else "a task"
        error = f": <code class=\"failure\">{escape(run.failure)}</code>" if run.failure else ""
        failure = f'<br><span class="bad">{task} failed</span>{error}'
    links = "".join(f" · {_a(link)}" for link in run.links)
    return (f'<span class="{css}">{escape(state)}</span>{_when(run.started)}{failure}<br>'
            + _a(Link(run.run_id, url), external=False) + links)


def render(rows: list[PipelineRow], *, airflow_url: str, user: str) -> str:
    body = "".join(
        f'<tr data-pipeline="{escape(row.name or "")}">'
        f"<td><code>{escape(row.spec_file)}</code></td><td>{_lint(row)}</td>"
        f"<td>{_pipeline(row, airflow_url)}</td><td>{_champion(row)}</td><td>{_drift(row)}</td>"
        f"<td>{_last_run(row, airflow_url)}</td>"
        f"<td>{' · '.join(_a(link) for link in row.links) or '-'}</td></tr>"
        for row in rows
    )
    if not rows:
        body = '<tr><td colspan="7" class="muted">No pipeline specs (or none you may read).</td></tr>'
    invalid = sum(1 for row in rows if not row.valid)
    css = "bad" if invalid else "ok"
    summary = (f'<p class="summary">{len(rows)} pipeline spec{"s" if len(rows) != 1 else ""}: '
               f'{len(rows) - invalid} valid, <span class="{css}">{invalid} invalid</span>'
               + (" (their DAGs are not loaded; Airflow shows the errors as the import error of "
                  "<code>ml_pipelines_spec_errors.py</code>)" if invalid else "") + "</p>")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ML pipelines</title>'
        f"<style>{_STYLE}</style></head><body>"
        f'<p><a href="{escape(airflow_url)}">Airflow</a> · signed in as {escape(user)}</p>'
        f"<h1>ML pipelines</h1>{summary}"
        "<table><thead><tr><th>Spec file</th><th>Lint</th><th>Pipeline / DAGs</th>"
        "<th>Champion</th><th>Last drift check</th><th>Last training run</th><th>MLflow</th></tr></thead>"
        f"<tbody>{body}</tbody></table></body></html>"
    )
