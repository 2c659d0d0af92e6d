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
from mlops_provider.tracking import tags as T

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
    failed_task: str | None = None  # the first task that failed for good, from Airflow's metadata DB
    failure: str | None = None  # the first line of its error, from the pipeline's MLflow run
    links: list[Link] = field(default_factory=list)


#: what Airflow does with a DAG of the spec: scheduled, paused, deactivated by the dag processor, or not
#: (yet) stored by it (a new spec before its first parse, or a DAG the loader failed to build)
DAG_STATES = ("active", "paused", "deactivated", "not loaded")


@dataclass
class PipelineRow:
    spec_file: str
    issues: list[str] = field(default_factory=list)
    name: str | None = None
    #: the DAG whose readers may see this row: the pipeline's own; for an invalid spec the one its
    #: ``name:`` line names (else the file's stem), so its owners see their broken spec and others do not
    dag_id: str = ""
    dag_ids: dict[str, str] = field(default_factory=dict)  # dag id -> kind (training, monitor, batch)
    dag_states: dict[str, str] = field(default_factory=dict)  # dag id -> one of DAG_STATES
    monitored: bool = False  # the spec has a monitor section
    model_registered: bool | None = None  # None: MLflow not asked (down, or the spec invalid)
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
    from mlops_provider.loader import declared_name

    row = PipelineRow(spec_file=item.display_path, issues=[issue.format() for issue in item.issues])
    row.dag_id = declared_name(item.text.encode()) or item.path.stem
    spec = item.spec
    if spec is not None:
        row.name = row.dag_id = spec.name
        row.dag_ids = dict(spec.dag_ids)
        row.model_name = spec.model_name
        row.monitored = spec.monitor is not None
    return row


def collect(
    *,
    readable_dag_ids: Callable[[str], bool],
    session: Session | None,
    folder: Path | None = None,
    project_root: Path | None = None,
) -> list[PipelineRow]:
    """The page's rows: each spec whose training DAG the user may read (:attr:`PipelineRow.dag_id`: an
    invalid spec counts as the DAG it names, which a user with access to every DAG may read too)."""
    rows: list[PipelineRow] = []
    hooks: dict[str | None, MLflowHook] = {}
    down: dict[str, str] = {}
    for row, spec in load_rows(folder, project_root):
        if not readable_dag_ids(row.dag_id):
            continue
        rows.append(row)
        if spec is None:
            continue
        if session is not None:
            row.dag_states = dag_states(session, list(row.dag_ids))
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
        row.model_registered = model_registered(client, spec.model_name)
        if row.model_registered:
            row.links.append(Link("MLflow model", f"{ui}/#/models/{_quote(spec.model_name)}"))
            row.champion, row.champion_note = champion(client, spec, ui)
        else:
            row.champion_note = f"model {spec.model_name!r} not registered yet"
        row.drift = last_drift(client, spec, ui)
        if row.last_run is not None:
            _fill_failure(row.last_run, client, spec, ui)
    except ServiceUnavailableError:
        down[uri] = row.mlflow_error = f"MLflow unreachable: {uri}"
    except Exception as exc:  # one broken pipeline must not take the page down
        row.mlflow_error = f"MLflow error at {uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def model_registered(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return False
        raise
    return True


def _fill_failure(run: LastRun, client: Any, spec: PipelineSpec, ui: str) -> None:
    """The pipeline's MLflow run of that DAG run: a link, and (failed) the first line of the error."""
    from mlops_provider.tracking.runs import run_key

    experiment = client.get_experiment_by_name(spec.experiment)
    if experiment is None:
        return
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{T.RUN_KEY}` = '{run_key(run.dag_id, run.run_id)}'",
        max_results=1,
    )
    if not found:
        return
    mlflow_run = found[0]
    run.links.append(Link("MLflow run", run_url(ui, mlflow_run.info.experiment_id, mlflow_run.info.run_id)))
    if run.state == "failed":
        run.failure = mlflow_run.data.tags.get(T.FAILURE)
        run.failed_task = run.failed_task or mlflow_run.data.tags.get(T.FAILED_TASK)


def champion(client: Any, spec: PipelineSpec, ui: str) -> tuple[Champion | None, str | None]:
    """The version holding ``@<deploy.alias>`` and the test metrics its pipeline run recorded."""
    from mlops_provider.tracking.models import resolve_alias

    alias = spec.deploy.alias
    version = resolve_alias(client, spec.model_name, alias)
    if version is None:
        return None, f"no version holds @{alias} yet"
    links = [Link(f"v{version.version}", model_version_url(ui, spec.model_name, version.version))]
    metrics: dict[str, float | None] = {}
    verdict = None
    if version.run_id:
        run = client.get_run(version.run_id)
        metrics = {name: run.data.metrics.get(f"test_{name}") for name in spec.metrics}
        verdict = run.data.tags.get(T.VERDICT)
        links.append(Link("training run", run_url(ui, run.info.experiment_id, version.run_id)))
    return Champion(str(version.version), alias, metrics, verdict, links), None


def last_drift(client: Any, spec: PipelineSpec, ui: str) -> DriftStatus | None:
    """The latest monitoring run of the pipeline's experiment (tag ``mlops.run_type = monitor``)."""
    from mlops_provider.stages.monitor import REPORT_ARTIFACT

    if spec.monitor is None:
        return None
    experiment = client.get_experiment_by_name(spec.experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{T.RUN_TYPE}` = '{T.RUN_TYPE_MONITOR}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    drift_tag = run.data.tags.get(T.DATASET_DRIFT)
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
    failed_task = None
    if state == "failed":
        from airflow.models.taskinstance import TaskInstance

        failed_task = session.scalars(
            select(TaskInstance.task_id)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id,
                   TaskInstance.state == "failed")
            .order_by(TaskInstance.end_date)
            .limit(1)
        ).first()
    return LastRun(dag_id, run.run_id, None if state is None else str(state), run.start_date, failed_task)


def dag_states(session: Session, dag_ids: list[str]) -> dict[str, str]:
    """Each DAG id → ``active``, ``paused``, ``deactivated`` (stale) or ``not loaded`` (metadata DB)."""
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    found = {
        dag_id: "deactivated" if stale else "paused" if paused else "active"
        for dag_id, paused, stale in session.execute(
            select(DagModel.dag_id, DagModel.is_paused, DagModel.is_stale).where(DagModel.dag_id.in_(dag_ids))
        )
    }
    return {dag_id: found.get(dag_id, "not loaded") for dag_id in dag_ids}
