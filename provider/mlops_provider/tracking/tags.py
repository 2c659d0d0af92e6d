"""Every MLflow tag and metadata key this provider writes: the lineage contract.

What a user can query in MLflow (``tags.`mlops.pipeline` = 'churn'`` in the runs search box, or
``MlflowClient.search_runs``/``search_model_versions``) to get from any Airflow run to the model and
the data, and back:

**The pipeline run** (one MLflow run per training DAG run; every stage logs to it)::

    airflow.dag_id, airflow.run_id, airflow.try_number   the DAG run (and the try) that wrote it
    mlops.run_key          sha256 of dag_id + run_id, how a task finds the run of its DAG run
    mlops.pipeline         the pipeline (spec) name
    mlops.spec_sha256      the spec file's content hash
    mlops.git_sha          the commit checked out in the project root, when it is a git checkout
    mlops.data_sha256      the ingested snapshot's content hash
    mlops.data_source      the source ingest read (path or s3:// URI, rendered)
    mlops.snapshot_uri, mlops.train_uri   the immutable snapshot and train split (the drift reference)
    mlops.validation       passed | failed (fail) | failed (warn)
    mlops.verdict, mlops.verdict_reason   passed | rejected, and why (evaluate)
    mlops.champion_version the @champion version the candidate was compared with
    mlops.failed_task, mlops.failure      on a FAILED run: the task that failed for good, its error
    mlops.approval, mlops.approval_by, mlops.approval_reason   with deploy.approval
    mlops.<alias>_version, mlops.previous_<alias>_version     what deploy moved the alias to, and from
    mlops.cache.key        what the model was made from (data, spec sections, code, library versions)
    mlops.cache.hit, mlops.cache.source_run_id   a reused model, and the run that trained it
    mlops.train.result     what train produced (model URI, class, params), for a later cache hit
    mlops.tune.best        with train.tune: the best trial (its number, CV value, parameters, run);
                           each trial is a child run (mlops.tune.trial, mlops.tune.shard, mlops.tune.params,
                           metric cv_<metric>, duration_seconds)

**Batch and monitoring runs** carry ``mlops.run_type`` (``batch`` | ``monitor``), the model they used
(``mlops.model_name``, ``mlops.model_version``, ``mlops.model_alias``) and their data
(``mlops.batch.input_uri``/``output_uri``, ``mlops.reference_data_uri``/``current_data_uri``,
``mlops.dataset_drift``, ``mlops.drifted_columns``).

**A model version** carries the lineage tags of the run that made it, the verdict, and after a
promotion ``mlops.previous_<alias>``, ``mlops.promoted_to_<alias>_at``/``_by``; the last batch and
monitoring runs that used it (``mlops.batch.last_run_id``, ``mlops.monitor.last_run_id``,
``mlops.monitor.dataset_drift``).

**The registered model** keeps the alias history (``mlops.<alias>.move.<UTC time>.<random>``: one JSON
record per move, never overwritten by a concurrent one; ``mlops.<alias>.last_promotion``) and where
serving targets serve it (``mlops.serving.<target>.url`` / ``.version``).

**A batch output file** (parquet key-value metadata): ``mlops.model_name``, ``mlops.model_version``,
``mlops.model_uri``, ``mlops.scored_at``, ``mlops.input``.
"""

from __future__ import annotations

# the DAG run behind a run or version
DAG_ID = "airflow.dag_id"
RUN_ID = "airflow.run_id"
TRY_NUMBER = "airflow.try_number"
#: sha256 of dag_id + run_id: a run id may contain quotes, which MLflow's filter syntax cannot escape
RUN_KEY = "mlops.run_key"
PIPELINE = "mlops.pipeline"
SPEC_SHA = "mlops.spec_sha256"
GIT_SHA = "mlops.git_sha"

# the data
DATA_SHA = "mlops.data_sha256"
DATA_SOURCE = "mlops.data_source"
SNAPSHOT_URI = "mlops.snapshot_uri"
TRAIN_URI = "mlops.train_uri"
VALIDATION = "mlops.validation"

# the decision
VERDICT = "mlops.verdict"
VERDICT_REASON = "mlops.verdict_reason"
CHAMPION_VERSION = "mlops.champion_version"
FAILED_TASK = "mlops.failed_task"
FAILURE = "mlops.failure"
APPROVAL = "mlops.approval"
APPROVAL_BY = "mlops.approval_by"
APPROVAL_REASON = "mlops.approval_reason"

# skipping unchanged training (tracking/cache.py)
CACHE_KEY = "mlops.cache.key"
CACHE_HIT = "mlops.cache.hit"
CACHE_SOURCE_RUN = "mlops.cache.source_run_id"
TRAIN_RESULT = "mlops.train.result"

# hyperparameter search (stages/tune.py): each trial is a child run of the pipeline run
PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests the trial under the pipeline run in the UI
TUNE_TRIAL = "mlops.tune.trial"  # the trial's number in the search
TUNE_SHARD = "mlops.tune.shard"  # which mapped task ran it
TUNE_PARAMS = "mlops.tune.params"  # the sampled parameters, as JSON (MLflow params are strings)
TUNE_BEST = "mlops.tune.best"  # on the pipeline run: the best trial (JSON: number, value, params, run)

# batch and monitoring runs
RUN_TYPE = "mlops.run_type"
RUN_TYPE_BATCH = "batch"
RUN_TYPE_MONITOR = "monitor"
MODEL_NAME = "mlops.model_name"
MODEL_VERSION = "mlops.model_version"
MODEL_ALIAS = "mlops.model_alias"
MODEL_URI = "mlops.model_uri"
MODEL_FLAVOR = "mlops.model_flavor"
BATCH_INPUT_URI = "mlops.batch.input_uri"
BATCH_OUTPUT_URI = "mlops.batch.output_uri"
BATCH_SCORED_AT = "mlops.batch.scored_at"
BATCH_LAST_RUN = "mlops.batch.last_run_id"
REFERENCE_RUN_ID = "mlops.reference_run_id"
REFERENCE_DATA_URI = "mlops.reference_data_uri"
REFERENCE_DATA_SHA = "mlops.reference_data_sha256"
CURRENT_DATA_URI = "mlops.current_data_uri"
DATASET_DRIFT = "mlops.dataset_drift"
DRIFTED_COLUMNS = "mlops.drifted_columns"
MONITOR_LAST_RUN = "mlops.monitor.last_run_id"
MONITOR_DATASET_DRIFT = "mlops.monitor.dataset_drift"

# a batch output file's parquet metadata
META_MODEL_NAME = MODEL_NAME
META_MODEL_VERSION = MODEL_VERSION
META_MODEL_URI = MODEL_URI
META_SCORED_AT = "mlops.scored_at"
META_INPUT = "mlops.input"

#: the value of :data:`previous_tag` when the version was the first to hold the alias
NO_PREVIOUS = "none"


def previous_tag(alias: str) -> str:
    """On a promoted version: the version that held ``@alias`` before it (or :data:`NO_PREVIOUS`)."""
    return f"mlops.previous_{alias}"


def promoted_at_tag(alias: str) -> str:
    return f"mlops.promoted_to_{alias}_at"


def promoted_by_tag(alias: str) -> str:
    return f"mlops.promoted_to_{alias}_by"


def last_promotion_tag(alias: str) -> str:
    """On the registered model: the JSON record of the last move of ``@alias``."""
    return f"mlops.{alias}.last_promotion"


def move_tag_prefix(alias: str) -> str:
    """On the registered model: ``<prefix><UTC time>.<random>`` (earlier: ``<prefix>000001``): every move."""
    return f"mlops.{alias}.move."


def alias_version_run_tag(alias: str) -> str:
    """On the pipeline run that promoted: the version it moved ``@alias`` to."""
    return f"mlops.{alias}_version"


def previous_version_run_tag(alias: str) -> str:
    """On the pipeline run that promoted: the version that held ``@alias`` before."""
    return f"mlops.previous_{alias}_version"


def serving_url_tag(target: str) -> str:
    return f"mlops.serving.{target}.url"


def serving_version_tag(target: str) -> str:
    return f"mlops.serving.{target}.version"
