"""The stages of a pipeline spec as one plain Python script — no Airflow — to measure orchestration overhead.

    python bench/plain_pipeline.py dags/pipelines/breast_cancer.yaml [--project-root .]

Calls the same stage functions the operators call (``mlops_provider.stages.*``), in the same order,
with the spec's settings, on the same data, against the same MLflow store (``MLFLOW_TRACKING_URI`` or
the embedded ``.mlops/`` store). So that it never moves the Airflow pipeline's champion, it logs to
the experiment ``<experiment>_plain`` and registers ``<model>_plain``. ``make demo`` runs it in its own
process after the Airflow runs and compares the wall times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

SUFFIX = "_plain"


def _tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / '.mlops' / 'mlflow.db'}"


def run(spec_path: str | Path, *, project_root: Path | None = None) -> dict[str, Any]:
    """Run ingest → validate → train → evaluate → register → deploy once; returns timings and outcome."""
    from mlops_provider import config
    from mlops_provider.run import load

    spec_path = Path(spec_path)
    root = (project_root or config.project_root(spec_path)).resolve()
    os.environ.setdefault("AIRFLOW__MLOPS__PROJECT_ROOT", str(root))
    spec = load(spec_path, root).spec
    assert spec is not None
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(stage: str, started_at: float) -> None:
        timings[stage] = round(time.perf_counter() - started_at, 3)

    import mlflow
    from mlflow import MlflowClient

    from mlops_provider.stages import deploy, evaluate, ingest, register, train, validate
    from mlops_provider.storage import workspace

    uri = _tracking_uri(root)
    (root / ".mlops").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri)
    experiment_name, model_name = spec.experiment + SUFFIX, spec.model_name + SUFFIX
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(
            experiment_name,
            artifact_location=(root / ".mlops" / "artifacts").as_uri() if uri.startswith("sqlite:") else None,
        )
    )
    run_key = "plain__" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    mlflow_run_id = client.create_run(
        experiment_id, run_name=run_key, tags={"mlops.pipeline": spec.name, "mlops.runner": "plain-script"}
    ).info.run_id

    t = time.perf_counter()
    ingested = ingest.ingest(
        spec.ingest.source,
        dag_id=spec.name + SUFFIX,
        run_id=run_key,
        target=spec.ingest.target,
        features=spec.ingest.features,
        file_format=spec.ingest.format,
        source_conn_id=spec.ingest.conn_id,
        test_size=spec.ingest.split.test_size,
        seed=spec.ingest.split.seed,
        stratify=spec.stratify,
        client=client,
        mlflow_run_id=mlflow_run_id,
        dataset_name=spec.name,
    )
    timed("ingest", t)

    t = time.perf_counter()
    validate.validate(
        ingested["snapshot_uri"],
        expectations=spec.validate_.expectations,
        suite=spec.validate_.suite,
        on_failure=spec.validate_.on_failure,
        client=client,
        mlflow_run_id=mlflow_run_id,
    )
    timed("validate", t)

    t = time.perf_counter()
    trained = train.train(
        ingested["train_uri"],
        target=ingested["target"],
        features=ingested["features"],
        estimator=spec.train.estimator,
        entrypoint=spec.train.entrypoint,
        params=spec.train.params,
        client=client,
        mlflow_run_id=mlflow_run_id,
    )
    timed("train", t)

    t = time.perf_counter()
    champion = spec.evaluate.champion
    test = workspace.read_table(ingested["test_uri"], None, "parquet")
    verdict = evaluate.evaluate(
        client,
        model_uri=trained["model_uri"],
        test=test,
        target=ingested["target"],
        features=ingested["features"],
        task=spec.task,
        metrics=spec.metrics,
        model_name=model_name,
        thresholds={m: b.model_dump(exclude_none=True) for m, b in spec.evaluate.thresholds.items()},
        champion_metric=spec.champion_metric if champion.enabled else None,
        champion_alias=spec.deploy.alias,
        champion_min_delta=champion.min_delta,
        run_id=mlflow_run_id,
    )
    evaluate.record(client, mlflow_run_id, verdict)
    print(verdict.table())
    timed("evaluate", t)

    version = promotion = None
    if verdict.passed:
        t = time.perf_counter()
        registered, _ = register.register(
            client,
            model_name=model_name,
            model_uri=trained["model_uri"],
            run_id=mlflow_run_id,
            aliases=spec.register_.aliases,
            tags={**spec.register_.tags, "mlops.verdict": verdict.status},
        )
        version = str(registered.version)
        timed("register", t)

        t = time.perf_counter()
        promotion = deploy.promote(
            client,
            model_name=model_name,
            version=version,
            alias=spec.deploy.alias,
            verdict=verdict.as_dict(),
            promoted_by=getpass.getuser() + " (plain script)",
            mlflow_run_id=mlflow_run_id,
        )
        timed("deploy", t)
    client.set_terminated(mlflow_run_id, "FINISHED" if verdict.passed else "FAILED")
    return {
        "seconds": time.perf_counter() - started,
        "stages": timings,
        "verdict": verdict.status,
        "metrics": verdict.metrics,
        "model_name": model_name,
        "version": version,
        "previous_version": promotion.previous_version if promotion else None,
        "mlflow_run_id": mlflow_run_id,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--project-root", type=Path)
    parser.add_argument("--json-out", type=Path, help="also write the result JSON to this file")
    args = parser.parse_args(argv)
    process_started = time.perf_counter()
    result = run(args.spec, project_root=args.project_root)
    result["process_seconds"] = time.perf_counter() - process_started
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    return 0 if result["verdict"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
