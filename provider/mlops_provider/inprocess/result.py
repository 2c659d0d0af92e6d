"""What one in-process DAG run did, as a user would read it off the Airflow and MLflow UIs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskOutcome:
    task_id: str
    state: str
    tries: int
    error: str | None = None
    #: how long the task's last try ran (Airflow's ``duration``), None if it never ran
    seconds: float | None = None


@dataclass
class RunResult:
    """What one DAG run did, as a user would read it off the Airflow and MLflow UIs."""

    dag_id: str
    run_id: str
    state: str
    seconds: float
    tasks: list[TaskOutcome] = field(default_factory=list)
    xcom: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    tracking_uri: str | None = None
    verdict: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def task(self, task_id: str) -> TaskOutcome | None:
        return next((t for t in self.tasks if t.task_id == task_id), None)

    @property
    def failure(self) -> str | None:
        """The first failed task and its error, in one line."""
        for outcome in self.tasks:
            if outcome.state == "failed":
                return f"task {outcome.task_id!r} failed: {outcome.error or 'see its log'}"
        return None if self.ok else f"DAG run ended {self.state}"

    @property
    def rejected(self) -> bool:
        """The run did its work and the evaluation gate said no: nothing registered, the alias stays."""
        return bool(self.verdict) and self.verdict.get("status") == "rejected"  # type: ignore[union-attr]

    @property
    def model_version(self) -> str | None:
        registered = self.xcom.get("register") or {}
        return registered.get("version")

    @property
    def model_name(self) -> str | None:
        registered = self.xcom.get("register") or self.xcom.get("deploy") or {}
        return registered.get("model_name")

    @property
    def promotion(self) -> dict[str, Any] | None:
        return self.xcom.get("deploy")

    @property
    def scored(self) -> dict[str, Any] | None:
        """What a batch DAG's ``score`` task did (rows, output, model version)."""
        return self.xcom.get("score")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "state": self.state,
            "seconds": round(self.seconds, 2),
            "tasks": [t.__dict__ for t in self.tasks],
            "mlflow_run_id": self.mlflow_run_id,
            "mlflow_run_url": self.mlflow_run_url,
            "tracking_uri": self.tracking_uri,
            "verdict": self.verdict,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "promotion": self.promotion,
            "scored": self.scored,
            "failure": self.failure,
            "rejected": self.rejected,
            "cached": bool((self.xcom.get("train") or {}).get("cached")),
        }

    def summary(self) -> str:
        lines = [f"DAG run {self.dag_id} / {self.run_id}: {self.state.upper()} in {self.seconds:.1f} s"]
        lines.append(
            "  tasks:   "
            + ", ".join(
                f"{t.task_id}={t.state}" + (f" (tries: {t.tries})" if t.tries > 1 else "") for t in self.tasks
            )
        )
        if self.mlflow_run_id:
            lines.append(
                f"  MLflow run: {self.mlflow_run_id}"
                + (f"  {self.mlflow_run_url}" if self.mlflow_run_url else "")
            )
        if self.verdict:
            lines.append(
                f"  verdict: {str(self.verdict.get('status', '?')).upper()} - {self.verdict.get('reason')}"
            )
            metrics = self.verdict.get("metrics") or {}
            if metrics:
                lines.append("  metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        trained = self.xcom.get("train") or {}
        if trained.get("cached"):
            lines.append(f"  model:   cached, reused from MLflow run {trained.get('cache_source_run_id')} "
                         "(same data, spec sections, code and library versions): not trained again")
        if self.model_version:
            lines.append(f"  model version: {self.model_name} v{self.model_version}")
        if self.promotion:
            previous = self.promotion.get("previous_version")
            lines.append(
                f"  alias: @{self.promotion['alias']} -> v{self.promotion['version']}"
                + (f" (was v{previous})" if previous else " (first champion)")
            )
        if self.rejected and self.verdict:
            alias = self.verdict.get("champion_alias") or "champion"
            holder = self.verdict.get("champion_version")
            stays = f"@{alias} stays on v{holder}" if holder else f"no version holds @{alias} yet"
            lines.append(f"  promotion: none, the candidate was rejected; {stays}")
        if self.scored:
            s = self.scored
            lines.append(f"  scored: {s['rows']} rows with {s['model_name']} v{s['model_version']} "
                         f"(@{s['model_alias']}), {s['rows_per_second']:,.0f} rows/s -> {s['output_uri']}")
        if self.failure:
            lines.append(f"  failure: {self.failure}")
        return "\n".join(lines)
