"""Train stage: fit an estimator (or a user entrypoint) on the train split; log the model to MLflow."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

class TrainModelOperator(MLflowStageOperator):
    """Train on the split written by the ingest task and log the model to the pipeline's MLflow run.

    :param estimator: dotted path of a scikit-learn-API estimator class; its module must be in
        ``[mlops] allowed_modules`` (checked when the task runs).
    :param entrypoint: ``path/to/file.py:function`` under the project root, called as
        ``function(X_train, y_train, params)`` and returning a fitted model. Exactly one of the two.
    :param hyperparams: estimator keyword arguments, or the ``params`` given to the entrypoint
        (named so because ``params`` is Airflow's own operator argument). Templated.
    :param seed: seeds Python's and NumPy's generators, and ``random_state`` when the estimator takes
        one and ``hyperparams`` does not set it.
    :param transform: the spec's ``transform`` section (plain data): the estimator is fitted and logged
        inside one scikit-learn Pipeline with that preprocessing (:mod:`mlops_provider.preprocessing`).
        Without it, a non-numeric feature column fails the task at once, naming the columns.
    :param runner: where training runs: ``{"type": "local"}`` (in the task's process) or
        ``{"type": "docker", "image": ..., "docker_url": ...}`` (in a container, see
        :mod:`mlops_provider.runners.docker`). Templated.
    :param cache: reuse the model of an earlier finished run of this pipeline trained from the same data,
        spec sections, code and library versions (:mod:`mlops_provider.tracking.cache`) instead of
        training again; a DAG run with conf ``{"mlops": {"cache": false}}`` trains regardless.
    :param cache_config_sha256: the hash of the spec sections that decide the model (``ingest``,
        ``transform``, ``train``); without it nothing is cached.
    :param tune_task_id: with ``train.tune``: the search's (mapped) task; the model is fitted on the
        whole training split with the best trial's parameters (plus ``hyperparams``), recorded on the run.
    :param tune_metric: the metric the search optimised.
    :param ingest_task_id: task whose result names the train split.
    """

    template_fields: Sequence[str] = ("hyperparams", "runner")
    template_fields_renderers = {"hyperparams": "json", "runner": "json"}
    ui_color = "#ede3fb"

    def __init__(
        self,
        *,
        estimator: str | None = None,
        entrypoint: str | None = None,
        hyperparams: Mapping[str, Any] | None = None,
        transform: Mapping[str, Any] | None = None,
        seed: int | None = None,
        runner: Mapping[str, Any] | None = None,
        cache: bool = True,
        cache_config_sha256: str | None = None,
        tune_task_id: str | None = None,
        tune_metric: str | None = None,
        ingest_task_id: str = "ingest",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (estimator is None) == (entrypoint is None):
            raise ValueError("give exactly one of estimator and entrypoint")
        self.estimator = estimator
        self.entrypoint = entrypoint
        self.hyperparams = dict(hyperparams or {})
        if transform is not None and entrypoint is not None:
            raise ValueError("transform applies to an estimator, not to an entrypoint")
        self.transform = dict(transform) if transform is not None else None
        self.seed = seed
        self.runner = dict(runner or {"type": "local"})
        self.cache = cache
        self.cache_config_sha256 = cache_config_sha256
        self.tune_task_id = tune_task_id
        self.tune_metric = tune_metric
        self.ingest_task_id = ingest_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        import functools

        from mlops_provider.exceptions import NotAllowedError

        ingested = self.upstream(context, self.ingest_task_id, "train_uri", "target")
        run_id = self.pipeline_run_id(context)
        runner_type = self.runner.get("type", "local")
        runners: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
            "local": self._train_locally,
            "docker": functools.partial(self._train_in_docker, context),
        }
        if runner_type not in runners:
            raise NotAllowedError(
                f"train runner {runner_type!r} is not available in this version of airflow-provider-mlops "
                f"(available: {', '.join(runners)})"
            )
        key = self._cache_key(ingested)
        if key is not None and self._cache_enabled(context):
            reused = self._reuse(key, run_id)
            if reused is not None:
                return reused
        search = self._best_of_search(run_id) if self.tune_task_id else None
        result = runners[runner_type](ingested, run_id)  # NotAllowedError: no retries (the base class)
        if search is not None:
            result["tune"] = search
        self.log.info("Trained %s on %d rows; model %s", result["model_class"], result["train_rows"],
                      result["model_uri"])
        if key is not None:
            from mlops_provider.tracking import cache

            cache.record(self.hook.client, run_id, key=key, result=result, hit=None)
        return {**result, "cached": False}

    def _best_of_search(self, run_id: str) -> dict[str, Any]:
        """The best trial of this DAG run's search; its parameters join ``hyperparams`` for the fit."""
        from mlops_provider.exceptions import StageError
        from mlops_provider.stages import tune

        metric = self.tune_metric or "accuracy"
        experiment_id = self.hook.get_or_create_experiment(self.experiment)
        best = tune.best_trial(self.hook.client, experiment_id, run_id, task=self.ml_task, metric=metric)
        if best is None:
            raise StageError("the hyperparameter search finished no trial: nothing to train with")
        trials = len(tune.finished_trials(self.hook.client, experiment_id, run_id, metric))
        tune.record_best(self.hook.client, run_id, best, trials=trials, metric=metric)
        self.log.info("%s", tune.summary(best, trials, metric))
        self.hyperparams = {**self.hyperparams, **best.params}
        return {"trials": trials, "best_trial": best.number, "best_value": best.value, "metric": metric,
                "best_params": best.params, "best_run_id": best.run_id}

    # ---- skipping unchanged work -------------------------------------------------------------------

    def _cache_enabled(self, context: Context) -> bool:
        conf = (getattr(context.get("dag_run"), "conf", None) or {}).get("mlops") or {}
        if conf.get("cache") is False:
            self.log.info("Cache off for this DAG run (conf mlops.cache = false): training")
            return False
        return self.cache

    def _cache_key(self, ingested: Mapping[str, Any]) -> str | None:
        return training_cache_key(self, ingested, entrypoint=self.entrypoint)

    def _reuse(self, key: str, run_id: str) -> dict[str, Any] | None:
        from mlops_provider.tracking import cache

        hit = cached_model(self, key, run_id)
        if hit is None:
            return None
        cache.record(self.hook.client, run_id, key=key, result=None, hit=hit)
        self.log.info(
            "Cached: reusing %s from MLflow run %s (same data, spec sections, code and library versions); "
            "not training again. Evaluate still compares it with the champion.",
            hit.result.get("model_uri"), hit.source_run_id,
        )
        source = hit.source_run_id
        return {**hit.result, "mlflow_run_id": run_id, "cached": True, "cache_source_run_id": source}

    def _train_locally(self, ingested: Mapping[str, Any], run_id: str) -> dict[str, Any]:
        from mlops_provider.stages.train import train

        with self.hook.activate():
            return train(
                ingested["train_uri"],
                target=ingested["target"],
                features=ingested.get("features"),
                estimator=self.estimator,
                entrypoint=self.entrypoint,
                params=self.hyperparams,
                seed=self.seed,
                client=self.hook.client,
                mlflow_run_id=run_id,
                transform=self.transform,
            )

    def _train_in_docker(self, context: Context, ingested: Mapping[str, Any], run_id: str) -> dict[str, Any]:
        from mlops_provider.runners.docker import DockerTrainRunner

        self._docker = DockerTrainRunner(self.runner, log=self.log)
        return self._docker.train(context, hook=self.hook, ingested=ingested, run_id=run_id,
                                  estimator=self.estimator, entrypoint=self.entrypoint,
                                  params=self.hyperparams, seed=self.seed, transform=self.transform)

    def on_kill(self) -> None:
        docker = getattr(self, "_docker", None)
        if docker is not None:
            docker.kill()


def training_cache_key(task: Any, ingested: Mapping[str, Any], *, entrypoint: str | None) -> str | None:
    """The cache key of a train (or tune) task's model (:mod:`mlops_provider.tracking.cache`)."""
    if not task.cache_config_sha256 or not ingested.get("data_sha256"):
        return None
    import hashlib

    from mlops_provider.storage import workspace
    from mlops_provider.tracking import cache

    entrypoint_sha = None
    if entrypoint:
        path = workspace.project_path(entrypoint.partition(":")[0], what="train entrypoint")
        entrypoint_sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return cache.cache_key(
        config_sha256=task.cache_config_sha256, data_sha256=str(ingested["data_sha256"]),
        entrypoint_sha256=entrypoint_sha, libraries=cache.library_versions(task.estimator),
    )


def cached_model(task: MLflowStageOperator, key: str, run_id: str) -> Any:
    """The earlier finished run's model with this key, or None (see ``tracking.cache.find_cached``)."""
    from mlops_provider.tracking import cache

    experiment_id = task.hook.get_or_create_experiment(task.experiment)
    with task.hook.activate():
        return cache.find_cached(task.hook.client, experiment_id, key=key, exclude_run=run_id)
