"""Ingest stage: snapshot a CSV/parquet source (project path or ``s3://``), split it, log it to MLflow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class IngestDatasetOperator(MLflowStageOperator):
    """Read ``source``, write an immutable parquet snapshot and a train/test split to the run workspace.

    The splits are logged as dataset inputs of the pipeline's MLflow run, which is tagged with the data's
    content hash (``mlops.data_sha256``). Only URIs and small metadata go to XCom (see the return value).

    :param source: path under the project root, or ``s3://bucket/key``. Templated.
    :param source_conn_id: Airflow connection (type aws) for ``s3://`` sources.
    :param file_format: ``csv`` or ``parquet``; default: from the suffix.
    :param target: the label column.
    :param features: feature columns; default: every other column.
    :param test_size: share of rows held out for evaluation.
    :param seed: seed of the split.
    :param stratify: keep class proportions in both splits (classification).
    :param wait_timeout: if set, wait up to this many seconds for the source to appear, deferred to the
        triggerer (no worker slot is held while waiting).
    :param wait_poke_interval: seconds between checks while waiting.
    """

    template_fields: Sequence[str] = ("source", "source_conn_id")
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        source: str,
        source_conn_id: str | None = None,
        file_format: str | None = None,
        target: str = "target",
        features: Sequence[str] | None = None,
        test_size: float = 0.25,
        seed: int = 42,
        stratify: bool = False,
        wait_timeout: float | None = None,
        wait_poke_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < test_size < 1:
            raise ValueError(f"test_size must be between 0 and 1, not {test_size}")
        if file_format not in (None, "csv", "parquet"):
            raise ValueError(f"file_format must be csv or parquet, not {file_format!r}")
        self.source = source
        self.source_conn_id = source_conn_id
        self.file_format = file_format
        self.target = target
        self.features = list(features) if features is not None else None
        self.test_size = test_size
        self.seed = seed
        self.stratify = stratify
        self.wait_timeout = wait_timeout
        self.wait_poke_interval = wait_poke_interval if wait_poke_interval is not None else 60.0

    def execute(self, context: Context) -> dict[str, Any]:
        if self.wait_timeout is not None:
            self._defer_until_source_exists()
        return self._ingest(context)

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        self.log.info("Source %s is available", self.source)
        return self._ingest(context)

    def _defer_until_source_exists(self) -> None:
        from mlops_provider.stages.ingest import source_uri
        from mlops_provider.storage import workspace

        uri = source_uri(self.source)
        if workspace.exists(uri, self.source_conn_id):
            return
        timeout = dt.timedelta(seconds=self.wait_timeout or 0)
        self.log.info("Waiting up to %s for %s (checking every %ss)", timeout, uri, self.wait_poke_interval)
        if workspace.is_s3(uri):
            from mlops_provider.triggers.s3 import S3ObjectTrigger

            trigger: Any = S3ObjectTrigger(uri, self.source_conn_id, self.wait_poke_interval)
        else:
            from airflow.providers.standard.triggers.file import FileTrigger

            trigger = FileTrigger(filepath=uri, poke_interval=self.wait_poke_interval)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)

    def _ingest(self, context: Context) -> dict[str, Any]:
        from mlops_provider.stages.ingest import ingest

        ti = context["ti"]
        run_id = self.pipeline_run_id(context)
        result = ingest(
            self.source,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            target=self.target,
            features=self.features,
            file_format=self.file_format,
            source_conn_id=self.source_conn_id,
            test_size=self.test_size,
            seed=self.seed,
            stratify=self.stratify,
            client=self.hook.client,
            mlflow_run_id=run_id,
            dataset_name=self.pipeline,
        )
        self.log.info(
            "Snapshot of %s: %d rows x %d columns (sha256 %s); train %d rows, test %d rows, in %s",
            result["source"], result["rows"], len(result["columns"]), result["data_sha256"][:12],
            result["train_rows"], result["test_rows"], result["snapshot_uri"].rsplit("/", 1)[0],
        )
        return result
