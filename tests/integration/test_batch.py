"""Batch scoring through the factory's ``<name>_batch`` DAG (``dag.test()``): a champion recorded the way the
training DAG records it (real embedded MLflow store), real files (CSV, parquet; local and SeaweedFS S3),
and ``mlops run --dag batch`` as a user runs it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration._e2e_helpers import fluent_uris
from tests.integration._monitor_helpers import embedded_client, seed_champion, spec_dags
from tests.integration._stage_helpers import make_project, states, try_number, unique, xcom

pytestmark = pytest.mark.integration

SPEC = """\
version: 1
name: {name}
task: classification
schedule: null
defaults: {{retries: 1, retry_delay: 1s, execution_timeout: 10m}}
mlflow: {{experiment: {name}, model: {model}}}
ingest:
  source: data/breast_cancer.csv
  target: target
train:
  estimator: sklearn.ensemble.RandomForestClassifier
deploy:
  alias: champion
  batch:
    schedule: "@daily"
    input: "{input}"
    output: "{output}"
    chunk_rows: 200
{extra}"""
DAY = dt.datetime(2026, 6, 1, 6, tzinfo=dt.timezone.utc)


def _spec(
    name: str,
    *,
    model: str | None = None,
    input: str = "data/incoming/{{ ds }}.csv",
    output: str = "predictions/{{ ds }}.parquet",
    extra: str = "",
) -> str:
    return SPEC.format(name=name, model=model or f"{name}_model", input=input, output=output, extra=extra)


def _incoming(project: Path) -> Any:
    """New data to score: the breast cancer table (569 rows) with an id column and without labels."""
    import pandas as pd

    frame = pd.read_csv(project / "data" / "breast_cancer.csv").drop(columns="target")
    frame.insert(0, "patient_id", [f"p{i:04d}" for i in range(len(frame))])
    return frame


def _model(project: Path, model: str, version: str) -> Any:
    import mlflow.sklearn

    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    with fluent_uris(embedded_tracking_uri(project)):
        return mlflow.sklearn.load_model(f"models:/{model}/{version}")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def test_scores_with_the_alias_version_and_records_it(airflow_home, project: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    name = unique("scored")
    model = f"{name}_model"
    dag = spec_dags(project, name, _spec(name))[f"{name}_batch"]
    champion = seed_champion(project, model_name=model, experiment=name, dag_id=name)
    incoming = _incoming(project)
    (project / "data" / "incoming").mkdir()
    incoming.to_csv(project / "data" / "incoming" / "2026-06-01.csv", index=False)

    run = airflow_home.dag_test(dag, logical_date=DAY)

    assert states(run) == {"score": "success"}
    result = xcom(run, "score")
    output = project / "predictions" / "2026-06-01.parquet"  # the template was rendered
    assert result["output_uri"] == str(output) and result["rows"] == 569 and result["chunks"] == 3
    assert (result["model_version"], result["flavor"]) == (champion["version"], "sklearn")
    scored = pd.read_parquet(output)
    assert list(scored.columns) == [
        "row_number",
        "patient_id",
        "prediction",
        "probability",
        "model_name",
        "model_version",
        "scored_at",
    ]
    assert scored["patient_id"].tolist() == incoming["patient_id"].tolist()  # the key travels along
    assert scored["row_number"].tolist() == list(range(569))
    forest = _model(project, model, champion["version"])
    features = incoming.drop(columns="patient_id")
    assert scored["prediction"].tolist() == forest.predict(features).tolist()
    assert scored["probability"].to_numpy() == pytest.approx(forest.predict_proba(features).max(axis=1))
    assert set(scored["model_version"]) == {champion["version"]} and set(scored["model_name"]) == {model}
    metadata = pq.read_schema(output).metadata
    assert metadata[b"mlops.model_version"].decode() == champion["version"]
    assert metadata[b"mlops.model_uri"].decode() == f"models:/{model}/{champion['version']}"
    assert not [p for p in output.parent.iterdir() if p != output]  # no temporary file left behind

    client = embedded_client(project)
    batch_run = client.get_run(result["mlflow_run_id"])
    assert batch_run.info.status == "FINISHED"
    assert batch_run.info.experiment_id == client.get_experiment_by_name(name).experiment_id
    tags = batch_run.data.tags
    assert (tags["airflow.dag_id"], tags["airflow.run_id"]) == (f"{name}_batch", run.run_id)
    assert tags["mlops.run_type"] == "batch" and tags["mlops.model_version"] == champion["version"]
    assert tags["mlops.batch.input_uri"] == str(project / "data" / "incoming" / "2026-06-01.csv")
    assert tags["mlops.batch.output_uri"] == str(output)
    metrics = batch_run.data.metrics
    assert metrics["rows"] == 569 and metrics["chunks"] == 3 and metrics["rows_per_second"] > 0
    assert 0 < metrics["chunk_latency_ms_p50"] <= metrics["chunk_latency_ms_p95"]
    assert len(client.get_metric_history(batch_run.info.run_id, "chunk_latency_ms")) == 3
    assert client.get_model_version(model, champion["version"]).tags["mlops.batch.last_run_id"] == (
        batch_run.info.run_id
    )
    assert xcom(run, "score", "mlflow_model_version")["version"] == champion["version"]  # the extra link

    # a new champion; the same day scored again: the output is replaced whole, by the new version only
    second = client.create_model_version(
        model, source=f"models:/{model}/{champion['version']}", run_id=champion["run_id"]
    )
    client.set_registered_model_alias(model, "champion", second.version)
    again = airflow_home.dag_test(dag, logical_date=DAY + dt.timedelta(minutes=1))
    assert states(again) == {"score": "success"}
    rescored = pd.read_parquet(project / "predictions" / "2026-06-01.parquet")
    assert len(rescored) == 569 and set(rescored["model_version"]) == {str(second.version)}


def test_no_model_holding_the_alias_fails_at_once_and_says_why(airflow_home, project: Path) -> None:
    from mlops_provider.inprocess.airflow import recording_failures

    name = unique("unscored")
    dag = spec_dags(project, name, _spec(name, model="never_trained"))[f"{name}_batch"]
    (project / "data" / "incoming").mkdir()
    _incoming(project).to_csv(project / "data" / "incoming" / "2026-06-01.csv", index=False)

    with recording_failures() as errors:
        run = airflow_home.dag_test(dag, logical_date=DAY)

    assert states(run) == {"score": "failed"}
    assert try_number(run, "score") == 1  # retries: 1 in the spec, but no retry can make a champion appear
    assert "'never_trained'" in errors["score"] and "@champion" in errors["score"]
    assert "train and promote first" in errors["score"]
    assert not (project / "predictions").exists()
    (batch_run,) = embedded_client(project).search_runs(
        [embedded_client(project).get_experiment_by_name(name).experiment_id]
    )
    assert batch_run.info.status == "FAILED"


@pytest.mark.slow
def test_s3_input_and_output(airflow_home, s3_server, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import pyarrow.parquet as pq

    for key, value in s3_server.airflow_conn_env("seaweed").items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.create_bucket()
    s3 = s3_server.client()
    incoming = _incoming(project)
    buffer = io.BytesIO()
    incoming.to_parquet(buffer, index=False, row_group_size=100)
    s3.put_object(Bucket=bucket, Key="incoming/2026-06-01.parquet", Body=buffer.getvalue())

    name = unique("s3scored")
    text = _spec(
        name,
        input=f"s3://{bucket}/incoming/{{{{ ds }}}}.parquet",
        output=f"s3://{bucket}/predictions/{{{{ ds }}}}.parquet",
        extra="    conn_id: seaweed\n",
    )
    dag = spec_dags(project, name, text)[f"{name}_batch"]
    champion = seed_champion(project, model_name=f"{name}_model", experiment=name, dag_id=name)

    run = airflow_home.dag_test(dag, logical_date=DAY)

    assert states(run) == {"score": "success"}
    result = xcom(run, "score")
    assert result["output_uri"] == f"s3://{bucket}/predictions/2026-06-01.parquet"
    body = s3.get_object(Bucket=bucket, Key="predictions/2026-06-01.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.schema.metadata[b"mlops.model_version"].decode() == champion["version"]
    scored = table.to_pandas()
    forest = _model(project, f"{name}_model", champion["version"])
    assert scored["prediction"].tolist() == forest.predict(incoming.drop(columns="patient_id")).tolist()
    assert scored["patient_id"].tolist() == incoming["patient_id"].tolist()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="predictions/")["Contents"]
    assert [o["Key"] for o in listed] == ["predictions/2026-06-01.parquet"]


def test_mlops_run_dag_batch(airflow_home, project: Path) -> None:
    """``mlops run SPEC --dag batch`` in a fresh process, with the session's Airflow home."""
    name = unique("cli")
    spec = project / "dags" / "pipelines" / f"{name}.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(_spec(name, input="data/incoming/latest.csv", output="predictions/latest.parquet"))
    champion = seed_champion(project, model_name=f"{name}_model", experiment=name, dag_id=name)
    (project / "data" / "incoming").mkdir()
    _incoming(project).to_csv(project / "data" / "incoming" / "latest.csv", index=False)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env.update(airflow_home.env, AIRFLOW__MLOPS__PROJECT_ROOT=str(project))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlops"), "run", str(spec), "--dag", "batch"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout[done.stdout.rindex(f"DAG run {name}_batch") :]
    assert "SUCCESS" in summary.splitlines()[0]
    assert f"scored: 569 rows with {name}_model v{champion['version']} (@champion)" in summary
    assert (project / "predictions" / "latest.parquet").is_file()


def test_a_reader_never_sees_half_an_output(airflow_home, project: Path) -> None:
    """While the day is scored again, a reader polling the output finds the whole previous file or the whole
    new one, never a partial or unreadable one: the stage writes a scratch file next to it and renames it."""
    import threading

    import pandas as pd
    import pyarrow.parquet as pq

    name = unique("atomic")
    model = f"{name}_model"
    dag = spec_dags(project, name, _spec(name))[f"{name}_batch"]
    champion = seed_champion(project, model_name=model, experiment=name, dag_id=name)
    incoming = pd.concat([_incoming(project)] * 60, ignore_index=True)  # 34,140 rows, 171 chunks
    (project / "data" / "incoming").mkdir()
    incoming.to_csv(project / "data" / "incoming" / "2026-06-01.csv", index=False)
    output = project / "predictions" / "2026-06-01.parquet"
    assert states(airflow_home.dag_test(dag, logical_date=DAY)) == {"score": "success"}

    client = embedded_client(project)
    second = client.create_model_version(
        model, source=f"models:/{model}/{champion['version']}", run_id=champion["run_id"]
    )
    client.set_registered_model_alias(model, "champion", second.version)
    seen: list[tuple[int, frozenset[str]]] = []
    broken: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                table = pq.read_table(output, columns=["model_version"])
            except Exception as exc:  # a reader must never meet a file it cannot read
                broken.append(repr(exc))
            else:
                seen.append((table.num_rows, frozenset(table.column("model_version").to_pylist())))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        again = airflow_home.dag_test(dag, logical_date=DAY + dt.timedelta(minutes=1))
    finally:
        done.set()
        reader.join(timeout=30)
    assert states(again) == {"score": "success"}
    assert broken == [], broken[:3]
    assert {rows for rows, _ in seen} == {len(incoming)}, "a reader saw part of a file"
    versions = [versions for _, versions in seen]
    old, new = frozenset({champion["version"]}), frozenset({str(second.version)})
    assert set(versions) == {old, new} and versions[-1] == new, set(versions)
    assert versions.index(new) > 0 and old not in versions[versions.index(new):], "not one switch"
