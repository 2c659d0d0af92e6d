"""Evaluate: score the candidate on the held-out test set, check thresholds, compare with the champion.

Plain functions with no Airflow in them: the operator calls them, and so does ``bench/plain_pipeline.py``.
The outcome is a :class:`Verdict` — every check with its values and whether it passed — which is
recorded on the pipeline's MLflow run (metrics, ``evaluation/verdict.json``, tag ``mlops.verdict``),
printed as a table in the task log, and handed to register/deploy through XCom.

The champion check loads the version that holds ``@<champion_alias>`` and scores it on the *same* test
set, so the comparison is fair even when the test set changed since the champion was trained. The
first model of a registered model has no champion and passes that check.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlops_provider.metrics import direction, positive_label, score
from mlops_provider.tracking import models
from mlops_provider.tracking import tags as T

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

VERDICT_ARTIFACT = "evaluation/verdict.json"
PASSED = "passed"
REJECTED = "rejected"
#: scores closer than this are equal (a retrained identical model must not lose to its twin)
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    """One gate: ``value`` compared with ``bound`` by ``op``."""

    name: Literal["threshold", "champion"]
    metric: str
    value: float
    op: Literal[">=", "<=", ">", "<"]
    bound: float | None
    passed: bool
    reason: str

    @property
    def label(self) -> str:
        return f"{self.metric} {self.op} {_fmt(self.bound)}"


@dataclass
class Verdict:
    """What evaluate decided, and why. ``as_dict()`` is what goes to XCom and to ``verdict.json``."""

    model_name: str
    metrics: dict[str, float]
    checks: list[Check] = field(default_factory=list)
    champion_alias: str | None = None
    champion_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    champion_metric: str | None = None
    test_rows: int = 0
    #: binary classification: the label the binary metrics are about (stated in the table)
    positive_class: Any = None
    #: a cache hit: the MLflow run that trained the (reused) candidate
    cached_from: str | None = None
    #: the version that held ``@champion_alias`` when evaluate looked (None: no holder), and whether it
    #: looked: deploy moves the alias only if it still points there (compare-and-swap)
    holder_version: str | None = None
    holder_checked: bool = False

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def status(self) -> str:
        return PASSED if self.passed else REJECTED

    @property
    def champion_value(self) -> float | None:
        if self.champion_metric is None:
            return None
        return self.champion_metrics.get(self.champion_metric)

    @property
    def reason(self) -> str:
        """One line a data engineer can act on: every failed check, or why it passed."""
        failed = [c.reason for c in self.checks if not c.passed]
        if failed:
            return "; ".join(failed)
        return "; ".join(c.reason for c in self.checks) or "no gates configured"

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "status": self.status,
            "reason": self.reason,
            "model_name": self.model_name,
            "metrics": dict(self.metrics),
            "checks": [asdict(c) for c in self.checks],
            "champion_alias": self.champion_alias,
            "champion_version": self.champion_version,
            "champion_metric": self.champion_metric,
            "champion_value": self.champion_value,
            "champion_metrics": dict(self.champion_metrics),
            "test_rows": self.test_rows,
            "positive_class": self.positive_class,
            "cached_from": self.cached_from,
            "alias_at_evaluation": (
                {"alias": self.champion_alias, "version": self.holder_version}
                if self.holder_checked
                else None
            ),
        }

    def table(self) -> str:
        """The verdict as a fixed-width table for the task log."""
        rows = [("check", "metric", "candidate", "rule", "champion", "result")]
        for check in self.checks:
            champion = ""
            if check.name == "champion" and self.champion_version is not None:
                champion = f"v{self.champion_version}: {_fmt(self.champion_metrics.get(check.metric))}"
            bound = f"{check.bound:g}" if check.name == "threshold" else _fmt(check.bound)
            rule = f"{check.op} {bound}" if check.bound is not None else "(none)"
            rows.append(
                (
                    check.name,
                    check.metric,
                    _fmt(check.value),
                    rule,
                    champion,
                    "PASS" if check.passed else "FAIL",
                )
            )
        for metric, value in self.metrics.items():
            if not any(c.metric == metric for c in self.checks):
                champion = _fmt(self.champion_metrics[metric]) if metric in self.champion_metrics else ""
                rows.append(("(metric)", metric, _fmt(value), "", champion, ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        head = f"Evaluation of {self.model_name} on {self.test_rows} held-out rows"
        if self.positive_class is not None:
            head += f" (positive class: {self.positive_class!r})"
        if self.cached_from:
            head += f"; the candidate is cached (trained by MLflow run {self.cached_from})"
        tail = f"Verdict: {self.status.upper()} - {self.reason}"
        return "\n".join([head, *lines, tail])


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4f}"


# --------------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------
# gates
# --------------------------------------------------------------------------------------------------
def threshold_checks(metrics: dict[str, float], thresholds: dict[str, dict[str, float]]) -> list[Check]:
    checks = []
    for metric, bound in thresholds.items():
        value = metrics[metric]
        if bound.get("min") is not None:
            ok = value >= bound["min"] - TOLERANCE
            checks.append(
                Check(
                    "threshold",
                    metric,
                    value,
                    ">=",
                    float(bound["min"]),
                    ok,
                    f"{metric} {_fmt(value)} {'>=' if ok else '<'} minimum {bound['min']:g}",
                )
            )
        if bound.get("max") is not None:
            ok = value <= bound["max"] + TOLERANCE
            checks.append(
                Check(
                    "threshold",
                    metric,
                    value,
                    "<=",
                    float(bound["max"]),
                    ok,
                    f"{metric} {_fmt(value)} {'<=' if ok else '>'} maximum {bound['max']:g}",
                )
            )
    return checks


def champion_check(
    *,
    task: str,
    metric: str,
    candidate: float,
    champion: float | None,
    champion_version: str | None,
    alias: str,
    min_delta: float,
) -> Check:
    """The candidate must be strictly better than the champion, by ``min_delta`` when it is set.

    A tie keeps the champion: promoting an equal model would churn the alias (and every deployment that
    follows it) for nothing, and hide which version actually earned the place.
    """
    best = direction(task, metric)
    if champion is None:
        return Check("champion", metric, candidate, ">=" if best == "max" else "<=", None, True,
                     f"no @{alias} yet: first model")
    bound = champion + min_delta if best == "max" else champion - min_delta
    gain = candidate - champion if best == "max" else champion - candidate
    strict = min_delta <= TOLERANCE
    op: Literal[">=", "<=", ">", "<"] = (">" if best == "max" else "<") if strict else (
        ">=" if best == "max" else "<=")
    ok = gain > TOLERANCE and gain >= min_delta - TOLERANCE
    shown = 0.0 if abs(gain) < TOLERANCE else gain
    required = "required > 0" if strict else f"required >= {min_delta:g}"
    compared = f"{metric} {_fmt(candidate)} vs @{alias} v{champion_version} {_fmt(champion)}"
    if abs(gain) < TOLERANCE:
        reason = f"{compared}: a tie ({required}): @{alias} stays on v{champion_version}"
    else:
        reason = f"{compared}: improvement {shown:+.4f}, {required}"
    return Check("champion", metric, candidate, op, bound, ok, reason)


def evaluate(
    client: MlflowClient,
    *,
    model_uri: str,
    test: pd.DataFrame,
    target: str,
    features: list[str] | None,
    task: str,
    metrics: list[str],
    model_name: str,
    thresholds: dict[str, dict[str, float]] | None = None,
    champion_metric: str | None = None,
    champion_alias: str = "champion",
    champion_min_delta: float = 0.0,
    run_id: str | None = None,
    positive_class: Any = None,
) -> Verdict:
    """Score the candidate and decide. Needs MLflow's fluent URIs set (``MLflowHook.activate()``).

    ``run_id`` is the candidate's pipeline run: if the champion came from that same run (a cleared and
    re-run DAG run), it is not compared with itself.
    """
    thresholds = thresholds or {}
    wanted = list(dict.fromkeys([*metrics, *thresholds, *([champion_metric] if champion_metric else [])]))
    available = test.drop(columns=[target])
    if features is not None:
        available = available[[c for c in available.columns if c in set(features)]]
    y_test = test[target]
    positive = None
    if task == "classification" and y_test.nunique() <= 2:
        positive = positive_label(list(y_test.dropna().unique()), positive_class)

    def scored(uri: str) -> dict[str, float]:
        loaded = models.load_model(uri)  # each model gets the raw columns it was trained on
        x_test = available[models.model_inputs(loaded, list(available.columns))]
        return score(loaded.model, x_test, y_test, task=task, metrics=wanted, positive_class=positive)

    candidate = scored(model_uri)
    verdict = Verdict(
        model_name=model_name,
        metrics=candidate,
        champion_alias=champion_alias,
        champion_metric=champion_metric,
        test_rows=len(test),
        positive_class=positive,
    )
    verdict.checks.extend(threshold_checks(candidate, thresholds))
    if champion_metric is None:
        return verdict

    holder = models.resolve_alias(client, model_name, champion_alias)
    verdict.holder_version, verdict.holder_checked = (holder.version if holder else None), True
    if holder is not None and run_id is not None and holder.run_id == run_id:
        holder = None  # the champion is this very run's model: nothing to compare against
    if holder is not None:
        verdict.champion_version = holder.version
        try:
            verdict.champion_metrics = scored(models.model_uri(model_name, holder.version))
        except Exception as exc:
            verdict.checks.append(
                Check(
                    "champion",
                    champion_metric,
                    candidate[champion_metric],
                    ">=",
                    None,
                    False,
                    f"@{champion_alias} (v{holder.version}) could not be scored on this test set: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} "
                    "(disable evaluate.champion to promote regardless)",
                )
            )
            return verdict
    verdict.checks.append(
        champion_check(
            task=task,
            metric=champion_metric,
            candidate=candidate[champion_metric],
            champion=verdict.champion_value,
            champion_version=verdict.champion_version,
            alias=champion_alias,
            min_delta=champion_min_delta,
        )
    )
    return verdict


def record(client: MlflowClient, run_id: str, verdict: Verdict) -> None:
    """Put the verdict on the pipeline run: metrics, the JSON artifact and the ``mlops.verdict`` tag."""
    import time

    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    values = [Metric(f"test_{k}", v, now, 0) for k, v in verdict.metrics.items() if math.isfinite(v)]
    values += [
        Metric(f"champion_{k}", v, now, 0) for k, v in verdict.champion_metrics.items() if math.isfinite(v)
    ]
    values.append(Metric("gates_passed", 1.0 if verdict.passed else 0.0, now, 0))
    tags = [RunTag(T.VERDICT, verdict.status), RunTag(T.VERDICT_REASON, verdict.reason[:4000])]
    if verdict.champion_version is not None:
        tags.append(RunTag(T.CHAMPION_VERSION, verdict.champion_version))
    client.log_batch(run_id, metrics=values, tags=tags)
    client.log_text(run_id, json.dumps(verdict.as_dict(), indent=2, default=str), VERDICT_ARTIFACT)
