"""The ``<name>_batch`` DAG: planned only when the spec has ``deploy.batch``; rendered with the batch scoring
operator; parsed without importing anything heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_provider.plan.build import build_plan
from mlops_provider.spec.load import load_spec

SPEC = """\
version: 1
name: churn
task: classification
start_date: 2026-01-01
defaults: {retries: 1}
mlflow: {experiment: churn, model: churn_model}
ingest: {source: data/train.csv, target: churned}
train: {estimator: sklearn.ensemble.RandomForestClassifier}
deploy:
  alias: production
"""
BATCH = """\
  batch:
    schedule: "0 6 * * *"
    input: "incoming/{{ ds }}.csv"
    output: "predictions/{{ ds }}.parquet"
    chunk_rows: 5000
"""


def _plan(root: Path, text: str):
    path = root / "dags" / "pipelines" / "churn.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    loaded = load_spec(
        path, project_root=root, allowed_modules=None, display_path="dags/pipelines/churn.yaml"
    )
    assert loaded.ok and loaded.spec is not None, loaded.issues
    return build_plan(loaded.spec, source=loaded.display_path, text=loaded.text, spec_sha256=loaded.sha256)


def test_no_batch_section_no_batch_dag(tmp_path: Path) -> None:
    plan = _plan(tmp_path, SPEC)
    assert [d.kind for d in plan.dags] == ["training"]
    assert plan.dag("churn_batch") is None


def test_batch_section_plans_a_scoring_dag(tmp_path: Path) -> None:
    plan = _plan(tmp_path, SPEC + BATCH)
    assert [(d.dag_id, d.kind) for d in plan.dags] == [("churn", "training"), ("churn_batch", "batch")]
    dag = plan.dag("churn_batch")
    assert dag is not None
    assert dag.schedule == "0 6 * * *" and dag.catchup is False
    assert "mlops:batch" in dag.tags and "mlops" in dag.tags
    (task,) = dag.tasks
    assert task.task_id == "score" and task.operator == "mlops_provider.operators.batch.BatchScoreOperator"
    assert task.kwargs["source"] == "incoming/{{ ds }}.csv"
    assert task.kwargs["destination"] == "predictions/{{ ds }}.parquet"
    assert task.kwargs["alias"] == "production"  # deploy.alias: what the training DAG promotes
    assert task.kwargs["chunk_rows"] == 5000 and task.kwargs["model_name"] == "churn_model"
    assert task.kwargs["experiment"] == "churn"
    assert dag.default_args["retries"] == 1


def test_batch_dag_renders_with_templated_paths(tmp_path: Path) -> None:
    from mlops_provider.operators.batch import BatchScoreOperator
    from mlops_provider.render.dag import render_dag

    plan = _plan(tmp_path, SPEC + BATCH)
    batch_plan = plan.dag("churn_batch")
    assert batch_plan is not None
    dag = render_dag(batch_plan)
    task = dag.get_task("score")
    assert isinstance(task, BatchScoreOperator)
    assert {"source", "destination"} <= set(task.template_fields)
    assert [link.name for link in task.operator_extra_links] == ["MLflow run", "MLflow model version"]
    assert "Batch scoring DAG" in (dag.doc_md or "")


def test_batch_output_outside_the_project_root_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "dags" / "pipelines" / "churn.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(SPEC + BATCH.replace("predictions/{{ ds }}.parquet", "../../elsewhere/out.parquet"))
    loaded = load_spec(path, project_root=tmp_path, allowed_modules=None)
    assert not loaded.ok
    assert [i.dotted_path for i in loaded.issues] == ["deploy.batch.output"], loaded.issues


_PROBE = """
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
dags = Path(sys.argv[1])
bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("mlflow", "sklearn", "pandas", "numpy", "pyarrow", "boto3"))
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors, "heavy": heavy}))
"""


def test_parsing_a_spec_with_batch_imports_nothing_heavy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    repo = Path(__file__).resolve().parents[2]
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    (dags / "ml_pipelines.py").write_text((repo / "dags" / "ml_pipelines.py").read_text())
    (dags / "pipelines" / "churn.yaml").write_text(SPEC + BATCH)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__MLOPS__PROJECT_ROOT=str(tmp_path),
        AIRFLOW__MLOPS__PIPELINES_FOLDER=str(dags / "pipelines"),
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dags)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == ["churn", "churn_batch"]
    assert result["heavy"] == []
