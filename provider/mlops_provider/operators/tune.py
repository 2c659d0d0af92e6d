"""Tune stage: one shard of the hyperparameter search, as a mapped task (``train.tune.parallel`` of them).

Each shard runs its share of ``trials``, cross-validated on the training split, every trial an MLflow child
run of the pipeline run (:mod:`mlops_provider.stages.tune`; MLflow is the study's shared storage, so the
shards may run on different workers and a retried shard finishes only what it still owes). The train task
then fits the final model with the best parameters. A parameter the estimator does not take fails the
shard before any trial starts (no retries). With a cache hit (the same data, spec and libraries as an
earlier run) there is nothing to search: the shard is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.links.mlflow import MLflowRunLink
from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class TuneModelOperator(MLflowStageOperator):
    """Run one shard of an Optuna search of ``estimator``'s parameters (see the module docstring).

    :param estimator: dotted path of the estimator class (an allowed module).
    :param hyperparams: fixed parameters (the spec's ``train.params``).
    :param tune: the spec's ``train.tune`` section (plain data: trials, parallel, metric, cv, timeout,
        seed, space).
    :param metric: the metric the search optimises (in its direction).
    :param shard: which shard this task is (``expand``-ed over ``range(parallel)``).
    :param transform: the spec's ``transform`` section: the whole pipeline is cross-validated.
    :param positive_class: binary classification: the positive label of the metric.
    :param seed: the search's seed (per shard: derived from it).
    :param cache: with ``cache_config_sha256``, skip when the train task will reuse a cached model.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e3e8fb"
    operator_extra_links = (MLflowRunLink(),)

    def __init__(
        self,
        *,
        estimator: str,
        tune: Mapping[str, Any],
        metric: str,
        shard: int = 0,
        hyperparams: Mapping[str, Any] | None = None,
        transform: Mapping[str, Any] | None = None,
        positive_class: str | int | bool | None = None,
        seed: int = 42,
        cache: bool = True,
        cache_config_sha256: str | None = None,
        ingest_task_id: str = "ingest",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.estimator = estimator
        self.tune = dict(tune)
        self.metric = metric
        self.shard = int(shard)
        self.hyperparams = dict(hyperparams or {})
        self.transform = dict(transform) if transform is not None else None
        self.positive_class = positive_class
        search_seed = self.tune.get("seed")
        self.seed = int(search_seed) if search_seed is not None else int(seed)
        self.cache = cache
        self.cache_config_sha256 = cache_config_sha256
        self.ingest_task_id = ingest_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.compat import AirflowSkipException
        from mlops_provider.operators.train import cached_model, training_cache_key
        from mlops_provider.preprocessing import prepare_features
        from mlops_provider.stages import tune
        from mlops_provider.stages.train import load_split

        ingested = self.upstream(context, self.ingest_task_id, "train_uri", "target")
        run_id = self.pipeline_run_id(context)
        tune.check_space(self.estimator, self.tune["space"], self.hyperparams)  # before any trial
        key = training_cache_key(self, ingested, entrypoint=None)
        if key is not None and self.cache and cached_model(self, key, run_id) is not None:
            raise AirflowSkipException("cached: the train task reuses an identical earlier model; no search")
        x, y = load_split(str(ingested["train_uri"]), target=str(ingested["target"]),
                          features=ingested.get("features"))
        x, columns = prepare_features(x, self.transform)
        timeout = self.tune.get("timeout")
        result = tune.run_shard(
            self.hook.client,
            experiment_id=self.hook.get_or_create_experiment(self.experiment),
            parent_run_id=run_id,
            shard=self.shard,
            parallel=int(self.tune.get("parallel", 1)),
            trials=int(self.tune.get("trials", 20)),
            space=self.tune["space"],
            estimator=self.estimator,
            params=self.hyperparams,
            x=x,
            y=y,
            columns=columns,
            transform=self.transform,
            task=self.ml_task,
            metric=self.metric,
            cv=int(self.tune.get("cv", 3)),
            seed=self.seed,
            timeout=None if timeout is None else float(timeout),
            positive_class=self.positive_class,
        )
        self.log.info("tune shard %d: %d trial(s) run, %d failed (%d owed)", self.shard, result["trials"],
                      result["failed"], result["owed"])
        return result
