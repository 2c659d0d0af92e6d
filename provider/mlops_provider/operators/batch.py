"""Batch scoring stage: score a file with ``models:/<model>@<alias>`` into parquet, recorded in MLflow."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops_provider.links.mlflow import MLflowModelVersionLink, MLflowRunLink
from mlops_provider.operators.base import MLflowStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class BatchScoreOperator(MLflowStageOperator):
    """Score ``source`` with the model version holding ``@alias``; write the predictions to ``destination``.

    The alias is resolved to a concrete version before anything is loaded, so one output is always scored
    by one version, which is written in every row (``model_version``) and in the parquet file's metadata.
    The input is read ``chunk_rows`` rows at a time; the output is replaced whole (a retry overwrites it).
    Rows, seconds, rows/s and the per-chunk latency (p50/p95) are logged to a batch run in the pipeline's
    MLflow experiment (tag ``mlops.run_type=batch``). Fails without retrying when no version holds the
    alias. See :mod:`mlops_provider.stages.batch` for the output's columns.

    Returns (XCom) ``{"input_uri", "output_uri", "model_name", "model_alias", "model_version",
    "model_uri", "rows", "chunks", "seconds", "rows_per_second", "chunk_latency_ms_p50",
    "chunk_latency_ms_p95", "scored_at", "flavor", "load_model_seconds", "mlflow_run_id"}``.

    :param source: the data to score (the spec's ``deploy.batch.input``): a path under the project root
        or ``s3://bucket/key``, CSV or parquet.
        Templated (e.g. ``data/incoming/{{ ds }}.parquet``).
    :param destination: where the predictions go (parquet; the spec's ``deploy.batch.output``): a path
        under the project root or ``s3://``.
        Templated (e.g. ``predictions/{{ ds }}.parquet``).
    :param conn_id: Airflow connection (type aws) for ``s3://`` input and output.
    :param file_format: ``csv`` or ``parquet``; default: from the input's suffix.
    :param chunk_rows: rows scored at a time (bounds memory).
    :param alias: the registered model's alias to score with.
    """

    # (not ``input``/``output``: ``BaseOperator.output`` is the task's XComArg)
    template_fields: Sequence[str] = ("source", "destination", "conn_id")
    ui_color = "#e6e0f8"
    operator_extra_links = (MLflowRunLink(), MLflowModelVersionLink())

    def __init__(
        self,
        *,
        source: str,
        destination: str,
        conn_id: str | None = None,
        file_format: str | None = None,
        chunk_rows: int = 100_000,
        alias: str = "champion",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if file_format not in (None, "csv", "parquet"):
            raise ValueError(f"file_format must be csv or parquet, not {file_format!r}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        self.source = source
        self.destination = destination
        self.conn_id = conn_id
        self.file_format = file_format
        self.chunk_rows = chunk_rows
        self.alias = alias

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.stages import batch
        from mlops_provider.tracking.models import load_model, require_alias

        client = self.hook.client
        run_id = self.pipeline_run_id(context)  # the base operator marks it FAILED if this task fails
        model_ref = require_alias(client, self.model_name, self.alias,
                                  hint="nothing to score with; train and promote first (run the training "
                                       "DAG, or `mlops run SPEC`)")
        self.persist_model_version_link(context, name=model_ref.name, version=model_ref.version)
        self.log.info("Scoring with %s at the start of this run", model_ref)
        started = time.perf_counter()
        with self.hook.activate():
            model = load_model(model_ref.uri)
        load_seconds = time.perf_counter() - started
        self.log.info("Loaded %s (%s flavor) in %.2f s", model_ref.uri, model.flavor, load_seconds)

        result = batch.score_file(
            self.source,
            self.destination,
            model=model,
            model_ref=model_ref,
            ml_task=self.ml_task,
            conn_id=self.conn_id,
            file_format=self.file_format,
            chunk_rows=self.chunk_rows,
            load_seconds=load_seconds,
        )
        self.log.info("%s", result.summary())
        batch.log_batch_run(client, run_id, result)
        self.end_pipeline_run(run_id)
        return {**result.as_dict(), "load_model_seconds": round(load_seconds, 4), "mlflow_run_id": run_id}
