"""Skipping unchanged training, through Airflow (``dag.test``) on the embedded MLflow store: an identical
rerun reuses the model and registers nothing new; ``--no-cache`` and a changed ``train`` section train
again; a cache entry whose model artifacts are gone is a miss, not an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import edit_spec, embedded_client, make_project, versions

pytestmark = pytest.mark.integration


def test_an_identical_rerun_is_a_cache_hit_and_registers_nothing(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.run import run_spec

    root = make_project(tmp_path, monkeypatch, "wine_classifier.yaml")
    spec = root / "dags" / "pipelines" / "wine_classifier.yaml"
    client = embedded_client(root)

    first = run_spec(spec)
    assert first.ok and first.xcom["train"]["cached"] is False, first.summary()
    (v1,) = versions(client, "wine_cultivar")

    again = run_spec(spec)
    assert again.ok, again.summary()
    train = again.xcom["train"]
    assert train["cached"] is True and train["cache_source_run_id"] == first.mlflow_run_id
    assert train["model_uri"] == first.xcom["train"]["model_uri"]  # the very same logged model
    assert "cached, reused from MLflow run " + first.mlflow_run_id in again.summary()
    run = client.get_run(again.mlflow_run_id)
    assert run.data.tags["mlops.cache.hit"] == "true"
    assert run.data.tags["mlops.cache.source_run_id"] == first.mlflow_run_id
    first_key = client.get_run(first.mlflow_run_id).data.tags["mlops.cache.key"]
    assert run.data.tags["mlops.cache.key"] == first_key
    assert again.verdict["cached_from"] == first.mlflow_run_id  # the verdict says so too
    assert [str(v.version) for v in versions(client, "wine_cultivar")] == [str(v1.version)]  # none added

    fresh = run_spec(spec, cache=False)  # mlops run --no-cache
    assert fresh.ok and fresh.xcom["train"]["cached"] is False
    assert fresh.xcom["train"]["model_uri"] != first.xcom["train"]["model_uri"]
    assert client.get_run(fresh.mlflow_run_id).data.tags["mlops.cache.hit"] == "false"

    edit_spec(spec, train={"params": {"n_estimators": 31, "max_depth": 4, "random_state": 7}})
    changed = run_spec(spec)
    assert changed.ok and changed.xcom["train"]["cached"] is False  # a changed train section trains


def test_a_cache_entry_whose_model_is_gone_is_a_miss(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.run import run_spec

    root = make_project(tmp_path, monkeypatch, "wine_classifier.yaml")
    spec = root / "dags" / "pipelines" / "wine_classifier.yaml"
    edit_spec(spec, evaluate={"thresholds": {"f1": {"min": 0.99999}}})  # rejected: nothing registered
    first = run_spec(spec)
    assert first.ok and first.rejected
    shutil.rmtree(root / ".mlops" / "artifacts")  # someone cleaned the artifact store
    again = run_spec(spec)
    assert again.state == "success" and again.xcom["train"]["cached"] is False, again.summary()
