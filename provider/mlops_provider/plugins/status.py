"""What the "ML pipelines" page shows for each spec file: lint status, champion, last drift, last run.

Plain data, no web framework: :func:`collect` reads the specs, asks MLflow (one hook per connection,
one health check each) and Airflow's metadata DB. MLflow being down is a value of the row
(``mlflow_error``), never an exception: the page must render without it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.links.mlflow import artifact_url, model_version_url, run_url, ui_base_url

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.spec.load import LoadedSpec
    from mlops_provider.spec.schema import PipelineSpec

HEALTH_TIMEOUT = 3.0


@dataclass
class Link:
    text: str
    url: str


@dataclass
class Champion:
    version: str
    alias: str
    metrics: dict[str, float | None]
    verdict: str | None
    links: list[Link]


@dataclass
class DriftStatus:
    status: str  # the MLflow run's status (FINISHED, FAILED, RUNNING)
    dataset_drift: bool | None
    drift_share: float | None
    started: dt.datetime | None
    links: list[Link]


@dataclass
class LastRun:
    dag_id: str
    run_id: str
    state: str | None
    started: dt.datetime | None


@dataclass
class PipelineRow:
    spec_file: str
    issues: list[str] = field(default_factory=list)
    name: str | None = None
    dag_ids: dict[str, str] = field(default_factory=dict)  # dag id -> kind (training, monitor, batch)
    model_name: str | None = None
    tracking_uri: str | None = None
    mlflow_error: str | None = None
    champion: Champion | None = None
    champion_note: str | None = None
    drift: DriftStatus | None = None
    last_run: LastRun | None = None
    links: list[Link] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.issues


def load_rows(folder: Path | None = None, project_root: Path | None = None) -> list[tuple[PipelineRow, Any]]:
    """Each spec file of the pipelines folder → (row with lint status and DAG ids, the spec or None)."""
    from mlops_provider.loader import load_specs

    folder = folder if folder is not None else config.pipelines_folder()
    root = project_root if project_root is not None else config.project_root()
    out: list[tuple[PipelineRow, Any]] = []
    for item in load_specs(folder, project_root=root):
        out.append((_row(item), item.spec))
    return out


def _row(item: LoadedSpec) -> PipelineRow:
    row = PipelineRow(spec_file=item.display_path, issues=[issue.format() for issue in item.issues])
    spec = item.spec
    if spec is not None:
        row.name = spec.name
        row.dag_ids = dict(spec.dag_ids)
        row.model_name = spec.model_name
    return row


def collect(
    *,
    readable_dag_ids: Callable[[str], bool],
    session: Session | None,
    folder: Path | None = None,
    project_root: Path | None = None,
) -> list[PipelineRow]:
    """The page's rows: every invalid spec, and every valid one whose training DAG the user may read."""
    rows: list[PipelineRow] = []
    hooks: dict[str | None, MLflowHook] = {}
    down: dict[str, str] = {}
    for row, spec in load_rows(folder, project_root):
        if spec is None:
            rows.append(row)
            continue
        if not readable_dag_ids(spec.name):
            continue
        rows.append(row)
        if session is not None:
            row.last_run = last_run(session, spec.name)
        hook = hooks.get(spec.mlflow.conn_id)
        if hook is None:
            hook = hooks[spec.mlflow.conn_id] = _hook(spec.mlflow.conn_id)
        _fill_from_mlflow(row, spec, hook, down)
    return rows


def _hook(conn_id: str | None) -> MLflowHook:
    from mlops_provider.hooks.mlflow import MLflowHook

    return MLflowHook(mlflow_conn_id=conn_id)


def _fill_from_mlflow(row: PipelineRow, spec: PipelineSpec, hook: MLflowHook, down: dict[str, str]) -> None:
    from mlops_provider.exceptions import ServiceUnavailableError

    try:
        uri = hook.tracking_uri
    except Exception as exc:  # a missing connection, a connection without host
        row.mlflow_error = f"MLflow connection {spec.mlflow.conn_id!r}: {exc}"
        return
    row.tracking_uri = uri
    if uri in down:
        row.mlflow_error = down[uri]
        return
    try:
        hook.check_available(timeout=HEALTH_TIMEOUT)
        ui = ui_base_url(uri)
        client = hook.client
        row.links.append(Link("MLflow model", f"{ui}/#/models/{_quote(spec.model_name)}"))
        row.champion, row.champion_note = champion(client, spec, ui)
        row.drift = last_drift(client, spec, ui)
    except ServiceUnavailableError:
        down[uri] = row.mlflow_error = f"MLflow unreachable: {uri}"
    except Exception as exc:  # one broken pipeline must not take the page down
        row.mlflow_error = f"MLflow error at {uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def champion(client: Any, spec: PipelineSpec, ui: str) -> tuple[Champion | None, str | None]:
    """The version holding ``@<deploy.alias>`` and the test metrics its pipeline run recorded."""
    from mlflow.exceptions import MlflowException

    alias = spec.deploy.alias
    try:
        version = client.get_model_version_by_alias(spec.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None, f"no version holds @{alias} yet"
        raise
    links = [Link(f"v{version.version}", model_version_url(ui, spec.model_name, version.version))]
    metrics: dict[str, float | None] = {}
    verdict = None
    if version.run_id:
        run = client.get_run(version.run_id)
        metrics = {name: run.data.metrics.get(f"test_{name}") for name in spec.metrics}
        verdict = run.data.tags.get("mlops.verdict")
        links.append(Link("training run", run_url(ui, run.info.experiment_id, version.run_id)))
    return Champion(str(version.version), alias, metrics, verdict, links), None


def last_drift(client: Any, spec: PipelineSpec, ui: str) -> DriftStatus | None:
    """The latest monitoring run of the pipeline's experiment (tag ``mlops.run_type = monitor``)."""
    from mlops_provider.stages.monitor import REPORT_ARTIFACT, RUN_TYPE_MONITOR, TAG_RUN_TYPE

    if spec.monitor is None:
        return None
    experiment = client.get_experiment_by_name(spec.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_RUN_TYPE}` = '{RUN_TYPE_MONITOR}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    drift_tag = run.data.tags.get("mlops.dataset_drift")
    links = [Link("monitoring run", run_url(ui, run.info.experiment_id, run.info.run_id))]
    if drift_tag is not None:
        report = artifact_url(ui, run.info.experiment_id, run.info.run_id, REPORT_ARTIFACT)
        links.append(Link("report", report))
    started = None
    if run.info.start_time:
        started = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.timezone.utc)
    return DriftStatus(
        status=str(run.info.status),
        dataset_drift=None if drift_tag is None else drift_tag == "true",
        drift_share=run.data.metrics.get("drift.share_of_drifted_columns"),
        started=started,
        links=links,
    )


def last_run(session: Session, dag_id: str) -> LastRun | None:
    """The newest DAG run of ``dag_id`` in Airflow's metadata DB."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    run = session.scalars(
        select(DagRun)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.run_after.desc(), DagRun.id.desc())
        .limit(1)
    ).first()
    if run is None:
        return None
    state = getattr(run.state, "value", run.state)
    return LastRun(dag_id, run.run_id, None if state is None else str(state), run.start_date)
