"""Hyperparameter search: Optuna trials, each scored by cross-validation on the training split only (the
test split is never seen), each an MLflow child run of the pipeline run.

The search runs as ``parallel`` mapped Airflow tasks (shards), so a Celery deployment spreads it over its
workers. **The study's storage is MLflow itself**: every finished trial is a child run with its
parameters (tag ``mlops.tune.params``) and its cross-validated value (metric ``cv_<metric>``); before each
trial a shard adds the trials every shard has finished so far to its own Optuna study, so the sampler
learns from the whole search, and a retried shard counts the trials it already finished and runs only the
rest. Nothing else has to be shared between machines (no Optuna database or journal file to provision),
and whatever MLflow server the pipeline logs to already is one. The sampler is Optuna's TPE, seeded per
shard.

:func:`best_trial` reads the winner back for the train task, which fits the final model on the whole
training split with the best parameters (plus the spec's fixed ``params``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlops_provider.estimators import accepted_parameters, build_estimator
from mlops_provider.exceptions import DataValidationError, StageError
from mlops_provider.metrics import direction, score
from mlops_provider.tracking import tags as T

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.preprocessing import FeatureColumns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    number: int
    shard: int
    params: dict[str, Any]
    value: float
    run_id: str


def check_space(estimator: str, space: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Before any trial: every searched name is a parameter of the estimator, none is fixed too."""
    accepted = accepted_parameters(estimator)
    unknown = sorted(name for name in space if name not in accepted)
    if unknown:
        raise DataValidationError(
            f"train.tune.space names {', '.join(map(repr, unknown))}, which {estimator} does not take; "
            f"its parameters: {', '.join(sorted(accepted))}"
        )
    both = sorted(set(space) & set(params))
    if both:
        raise DataValidationError(
            f"{', '.join(map(repr, both))} is searched (train.tune.space) and fixed (train.params): "
            "keep one"
        )


def distributions(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, param in space.items():
        if "int" in param:
            low, high = param["int"]
            out[name] = IntDistribution(int(low), int(high), log=bool(param.get("log")))
        elif "float" in param:
            low, high = param["float"]
            out[name] = FloatDistribution(float(low), float(high), log=bool(param.get("log")))
        else:
            out[name] = CategoricalDistribution(list(param["choice"]))
    return out


def shard_trials(total: int, parallel: int, shard: int) -> int:
    """How many of ``total`` trials shard ``shard`` of ``parallel`` runs."""
    return total // parallel + (1 if shard < total % parallel else 0)


def finished_trials(client: MlflowClient, experiment_id: str, parent_run_id: str, metric: str) -> list[Trial]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{T.PARENT_RUN}` = '{parent_run_id}' and attributes.status = 'FINISHED'",
        max_results=10_000,
    )
    trials = []
    for run in runs:
        tags = run.data.tags
        value = run.data.metrics.get(f"cv_{metric}")
        if T.TUNE_TRIAL not in tags or value is None:
            continue
        trials.append(Trial(int(tags[T.TUNE_TRIAL]), int(tags.get(T.TUNE_SHARD, 0)),
                            json.loads(tags.get(T.TUNE_PARAMS, "{}")), float(value), run.info.run_id))
    return sorted(trials, key=lambda t: t.number)


def cross_validate(
    x: pd.DataFrame, y: pd.Series, *, estimator: str, params: Mapping[str, Any], seed: int,
    columns: FeatureColumns | None, transform: Mapping[str, Any] | None, task: str, metric: str, cv: int,
    positive_class: Any = None,
) -> float:
    """The mean of ``metric`` over ``cv`` folds of (x, y): the whole pipeline (transform included) is
    fitted on each training fold, so the transform is part of what is tuned."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from mlops_provider.preprocessing import model_pipeline

    folds: Any = (StratifiedKFold(cv, shuffle=True, random_state=seed) if task == "classification"
                  else KFold(cv, shuffle=True, random_state=seed))
    values = []
    for train_index, held_index in folds.split(x, y):
        model, _ = build_estimator(estimator, params, seed)
        if transform is not None and columns is not None:
            model = model_pipeline(model, columns, transform)
        model.fit(x.iloc[train_index], y.iloc[train_index])
        held = score(model, x.iloc[held_index], y.iloc[held_index], task=task, metrics=[metric],
                     positive_class=positive_class)
        values.append(held[metric])
    return float(sum(values) / len(values))


def run_shard(
    client: MlflowClient,
    *,
    experiment_id: str,
    parent_run_id: str,
    shard: int,
    parallel: int,
    trials: int,
    space: Mapping[str, Mapping[str, Any]],
    estimator: str,
    params: Mapping[str, Any],
    x: pd.DataFrame,
    y: pd.Series,
    columns: FeatureColumns | None,
    transform: Mapping[str, Any] | None,
    task: str,
    metric: str,
    cv: int,
    seed: int,
    timeout: float | None = None,
    positive_class: Any = None,
) -> dict[str, Any]:
    """Run this shard's share of the trials (what a retry still owes), learning from every shard's."""
    import optuna
    from mlflow.entities import Metric, Param, RunTag

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    goal: Literal["maximize", "minimize"] = "maximize" if direction(task, metric) == "max" else "minimize"
    study = optuna.create_study(direction=goal, sampler=optuna.samplers.TPESampler(seed=seed * 1009 + shard))
    space_distributions = distributions(space)
    known: set[str] = set()

    def learn_from_the_others() -> list[Trial]:
        finished = finished_trials(client, experiment_id, parent_run_id, metric)
        for trial in finished:
            if trial.run_id not in known and set(trial.params) == set(space_distributions):
                study.add_trial(optuna.trial.create_trial(
                    params=trial.params, distributions=space_distributions, value=trial.value
                ))
                known.add(trial.run_id)
        return finished

    finished = learn_from_the_others()
    owed = shard_trials(trials, parallel, shard) - sum(1 for t in finished if t.shard == shard)
    started = time.monotonic()
    ran = failed = 0
    for index in range(max(owed, 0)):
        if timeout is not None and time.monotonic() - started > timeout:
            log.warning("tune shard %d: timeout after %d trial(s); %d not started", shard, ran, owed - index)
            break
        if index:
            learn_from_the_others()
        trial = study.ask(space_distributions)
        number = shard + parallel * (shard_trials(trials, parallel, shard) - owed + index)
        run = client.create_run(experiment_id, run_name=f"trial-{number:03d}", tags={
            T.PARENT_RUN: parent_run_id, T.TUNE_TRIAL: str(number), T.TUNE_SHARD: str(shard),
            T.TUNE_PARAMS: json.dumps(trial.params),
        })
        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in trial.params.items()])
        tick = time.perf_counter()
        try:
            value = cross_validate(x, y, estimator=estimator, params={**params, **trial.params}, seed=seed,
                                   columns=columns, transform=transform, task=task, metric=metric, cv=cv,
                                   positive_class=positive_class)
        except Exception as exc:  # these parameters do not work: record it, try others
            failed += 1
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            client.set_tag(run.info.run_id, T.FAILURE, f"{type(exc).__name__}: {exc}"[:500])
            client.set_terminated(run.info.run_id, status="FAILED")
            log.warning("trial %d failed (%s): %s", number, trial.params, exc)
            continue
        seconds = time.perf_counter() - tick
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(f"cv_{metric}", value, now, 0),
                                                   Metric("duration_seconds", seconds, now, 0)],
                         tags=[RunTag("mlops.tune.cv_folds", str(cv))])
        client.set_terminated(run.info.run_id, status="FINISHED")
        study.tell(trial, value)
        ran += 1
        log.info("trial %d: cv %s %.4f in %.1f s  %s", number, metric, value, seconds, trial.params)
    if ran == 0 and failed and owed > 0:
        raise StageError(f"every trial of tune shard {shard} failed; see the failed child runs")
    return {"shard": shard, "trials": ran, "failed": failed, "owed": max(owed, 0)}


def best_trial(client: MlflowClient, experiment_id: str, parent_run_id: str, *, task: str, metric: str) -> (
    Trial | None
):
    trials = finished_trials(client, experiment_id, parent_run_id, metric)
    finite = [t for t in trials if math.isfinite(t.value)]
    if not finite:
        return None
    if direction(task, metric) == "max":  # ties: the earliest trial
        return max(finite, key=lambda t: (t.value, -t.number))
    return min(finite, key=lambda t: (t.value, t.number))


def record_best(client: MlflowClient, run_id: str, trial: Trial, *, trials: int, metric: str) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    best = {"number": trial.number, "value": trial.value, "params": trial.params, "run_id": trial.run_id}
    client.log_batch(run_id, metrics=[Metric(f"tune.best_cv_{metric}", trial.value, now, 0),
                                      Metric("tune.trials", float(trials), now, 0)],
                     tags=[RunTag(T.TUNE_BEST, json.dumps(best, default=str))])


def summary(trial: Trial, trials: Sequence[Trial] | int, metric: str) -> str:
    count = trials if isinstance(trials, int) else len(trials)
    return (f"search: {count} trial(s); best trial {trial.number}: cv {metric} {trial.value:.4f} "
            f"with {json.dumps(trial.params, default=str)}")
