"""Monitor stage: Evidently drift of live data against the @champion's training data, through the factory's
monitor DAG (``dag.test()``), recorded in a real MLflow store; and the stage's verdicts against Evidently's
own ``DataDriftPreset``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration._monitor_helpers import (
    asset_events,
    embedded_client,
    monitor_conf,
    queued_for,
    seed_champion,
    spec_dags,
    unpause,
    write_live_data,
)
from tests.integration._stage_helpers import make_project, states, try_number, unique, xcom

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


@pytest.fixture
def pipeline(airflow_home, project: Path) -> dict[str, Any]:
    """A spec with a monitor section, its two DAGs in the metadata DB (training DAG unpaused), a champion
    recorded the way the training DAG records it, and live data with and without drift."""
    from mlops_provider.plan.build import retrain_asset_uri

    name = unique("monitored")
    dags = spec_dags(project, name)
    for dag in dags.values():
        airflow_home.register_dag(dag)
    unpause(name)
    champion = seed_champion(project, model_name=f"{name}_model", experiment=name, dag_id=name)
    return {"name": name, "model": f"{name}_model", "training": dags[name],
            "monitor": dags[f"{name}_monitor"], "asset": retrain_asset_uri(name), "champion": champion,
            "live": write_live_data(project, champion["test_uri"])}


def _artifact(client: Any, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def test_no_drift_records_the_check_and_requests_no_retrain(airflow_home, project: Path, pipeline) -> None:
    run = airflow_home.dag_test(pipeline["monitor"], **monitor_conf("stable"))

    assert states(run) == {"detect_drift": "success", "request_retrain": "skipped"}
    assert asset_events(pipeline["asset"]) == [] and queued_for(pipeline["asset"]) == []

    verdict = xcom(run, "detect_drift")
    assert verdict["dataset_drift"] is False and verdict["drift_share"] < 0.5
    assert verdict["number_of_columns"] == 30 and verdict["model_version"] == pipeline["champion"]["version"]

    client = embedded_client(project)
    monitoring = client.get_run(verdict["mlflow_run_id"])
    assert monitoring.info.status == "FINISHED"
    assert monitoring.info.experiment_id == client.get_experiment_by_name(pipeline["name"]).experiment_id
    tags = monitoring.data.tags
    assert tags["mlops.run_type"] == "monitor" and tags["mlops.dataset_drift"] == "false"
    assert tags["mlops.model_name"] == pipeline["model"]
    assert tags["mlops.model_version"] == verdict["model_version"]
    assert tags["mlops.reference_run_id"] == pipeline["champion"]["run_id"]
    assert (tags["airflow.dag_id"], tags["airflow.run_id"]) == (f"{pipeline['name']}_monitor", run.run_id)
    assert monitoring.data.params["drift.method"] == "evidently default"
    assert monitoring.data.params["drift.share_threshold"] == "0.5"
    assert tags["mlops.reference_data_uri"] == pipeline["champion"]["train_uri"]
    assert tags["mlops.current_data_uri"] == str(pipeline["live"]["stable"])  # the template was rendered
    metrics = monitoring.data.metrics
    assert metrics["drift.share_of_drifted_columns"] == pytest.approx(verdict["drift_share"])
    assert metrics["drift.dataset_drift"] == 0.0 and metrics["drift.number_of_columns"] == 30
    assert 0 <= metrics["drift.score.mean radius"] <= 1  # K-S p-value per column (small reference)
    assert metrics["performance.accuracy"] > 0.85  # the labels are in the live data: the champion is scored
    assert metrics["quality.rows"] == pipeline["champion"]["test_rows"]
    assert verdict["report_uri"].endswith("/monitor/drift_report.html")
    # the task page's extra links (the real operator's): its monitoring run, the report in it, the version
    from mlops_provider.links.mlflow import model_version_url, ui_base_url

    run_page = (f"{ui_base_url(client.tracking_uri)}/#/experiments/{monitoring.info.experiment_id}/runs/"
                f"{monitoring.info.run_id}")
    assert xcom(run, "detect_drift", "_link_MLflowRunLink") == run_page
    report = "monitor/drift_report.html"
    assert xcom(run, "detect_drift", "_link_DriftReportLink") == f"{run_page}/artifactPath/{report}"
    assert report in [a.path for a in client.list_artifacts(monitoring.info.run_id, "monitor")]
    assert xcom(run, "detect_drift", "_link_MLflowModelVersionLink") == model_version_url(
        ui_base_url(client.tracking_uri), pipeline["model"], verdict["model_version"])

    # the model version points at its latest check
    version = client.get_model_version(pipeline["model"], verdict["model_version"])
    assert version.tags["mlops.monitor.last_run_id"] == monitoring.info.run_id
    assert version.tags["mlops.monitor.dataset_drift"] == "false"


def test_drift_emits_the_retrain_asset_with_its_reasons(airflow_home, project: Path, pipeline) -> None:
    run = airflow_home.dag_test(pipeline["monitor"], **monitor_conf("drifted"))

    assert states(run) == {"detect_drift": "success", "request_retrain": "success"}
    verdict = xcom(run, "detect_drift")
    assert verdict["dataset_drift"] is True and verdict["drift_share"] >= 0.9
    assert "mean radius" in verdict["drifted_columns"]

    (event,) = asset_events(pipeline["asset"])
    assert (event["source_dag_id"], event["source_task_id"], event["source_run_id"]) == (
        f"{pipeline['name']}_monitor", "request_retrain", run.run_id)
    assert event["extra"]["mlflow_run_id"] == verdict["mlflow_run_id"]
    assert event["extra"]["drifted_columns"] == verdict["drifted_columns"]
    assert event["extra"]["model_version"] == pipeline["champion"]["version"]
    # what the scheduler turns into a run of the training DAG
    assert queued_for(pipeline["asset"]) == [pipeline["name"]]

    client = embedded_client(project)
    monitoring = client.get_run(verdict["mlflow_run_id"])
    assert monitoring.data.tags["mlops.dataset_drift"] == "true"
    assert monitoring.data.metrics["drift.dataset_drift"] == 1.0
    assert monitoring.data.metrics["quality.out_of_range_share.mean area"] > 0.03  # scaled beyond the range
    html = _artifact(client, verdict["mlflow_run_id"], "monitor/drift_report.html")
    assert "Drift by column" in html and "Data quality by column" in html and "mean radius" in html
    saved = json.loads(_artifact(client, verdict["mlflow_run_id"], "monitor/verdict.json"))
    assert saved["dataset_drift"] is True and len(saved["columns"]) == 30
    assert {c["column"] for c in saved["columns"] if c["drifted"]} == set(verdict["drifted_columns"])
    assert monitoring.data.metrics["performance.accuracy"] < 0.8  # same labels, scaled inputs: a worse model


def test_no_champion_fails_at_once_with_a_clear_message(airflow_home, project: Path) -> None:
    from mlops_provider.exceptions import NoAliasHolderError
    from mlops_provider.stages.monitor import find_reference

    name = unique("unmonitored")
    dags = spec_dags(project, name)
    run = airflow_home.dag_test(dags[f"{name}_monitor"], **monitor_conf("latest"))
    assert states(run) == {"detect_drift": "failed", "request_retrain": "upstream_failed"}
    assert try_number(run, "detect_drift") == 1  # the spec allows a retry; retrying cannot make a champion

    client = embedded_client(project)
    (monitoring,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert monitoring.info.status == "FAILED"
    message = f"no version of registered model '{name}_model' holds @champion: run the training DAG first"
    with pytest.raises(NoAliasHolderError, match=message):
        find_reference(client, f"{name}_model", "champion")


# ------------------------------------------------------------------------------------ the stage, no Airflow
def _tables(tmp_path: Path, rows: int, seed: int = 3) -> tuple[Any, Any]:
    """Mixed columns: continuous, low-cardinality numeric, categorical, integer, and a column that drifts."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def frame(shift: float) -> Any:
        cities = [0.6, 0.3, 0.1] if shift else [0.4, 0.3, 0.3]
        return pd.DataFrame({
            "steady": rng.normal(size=rows),
            "shifted": rng.normal(loc=shift, size=rows),
            "scaled": rng.normal(scale=1 + shift, size=rows),
            "few_values": rng.integers(0, 4, rows).astype(float),
            "city": rng.choice(["paris", "lyon", "nice"], rows, p=cities),
            "count": rng.poisson(20 + 10 * shift, rows),
        })

    reference, current = tmp_path / "reference.parquet", tmp_path / "current.csv"
    frame(0.0).to_parquet(reference, index=False)
    frame(0.8).to_csv(current, index=False)
    return reference, current


@pytest.mark.parametrize(("rows", "stattest", "threshold"), [
    (3000, None, None),  # Evidently's choice per column (large reference: Wasserstein / Jensen-Shannon)
    (400, None, None),  # small reference: K-S / chi-square / Z
    (3000, "psi", 0.2),  # configured method and threshold for every column
])
def test_verdicts_are_evidentlys_data_drift_preset_verdicts(tmp_path: Path, rows: int, stattest: str | None,
                                                            threshold: float | None) -> None:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from mlops_provider.stages.monitor import detect_drift
    from mlops_provider.storage.tables import TableColumns

    reference, current = _tables(tmp_path, rows)
    result = detect_drift(TableColumns(str(current)), TableColumns(str(reference)), drift_share=0.5,
                          stattest=stattest, stattest_threshold=threshold)

    preset = Report([DataDriftPreset(drift_share=0.5, method=stattest, threshold=threshold)],
                    include_tests=True).run(pd.read_csv(current), pd.read_parquet(reference))
    scores, drifted = {}, set()
    for metric in preset.metric_results.values():
        config = metric.to_dict()["config"]
        if config["type"].endswith("ValueDrift"):
            scores[config["column"]] = float(metric.value)
            if any(t.status.value == "FAIL" for t in metric.tests):
                drifted.add(config["column"])
        if config["type"].endswith("DriftedColumnsCount"):
            share = float(metric.share.value)
    assert {c.column: c.score for c in result.columns} == pytest.approx(scores)
    assert set(result.drifted_columns) == drifted
    assert {"shifted", "scaled"} <= drifted and "steady" not in drifted
    assert result.share_of_drifted_columns == pytest.approx(share)
    assert result.dataset_drift is (share >= 0.5)
    if stattest:
        assert {(c.method, c.threshold) for c in result.columns} == {(stattest, threshold)}


@pytest.mark.parametrize(("rows", "kind", "values"), [
    (3000, "num", None), (3000, "num", 5), (3000, "num", 6), (3000, "cat", 3),
    (800, "num", None), (800, "num", 5), (800, "num", 2), (800, "cat", 2), (800, "cat", 3),
    (1001, "num", 4), (1000, "num", 7),
])
def test_default_method_is_the_one_evidently_picks(rows: int, kind: str, values: int | None) -> None:
    import numpy as np
    import pandas as pd
    from evidently.legacy.calculations.stattests.registry import _get_default_stattest
    from evidently.legacy.core import ColumnType

    from mlops_provider.stages.monitor import default_stattest

    rng = np.random.default_rng(rows + (values or 0))
    if values is None:
        reference, current = pd.Series(rng.normal(size=rows)), pd.Series(rng.normal(size=rows // 2))
    else:
        pool = [f"v{i}" for i in range(values)] if kind == "cat" else [float(i) for i in range(values)]
        reference, current = pd.Series(rng.choice(pool, rows)), pd.Series(rng.choice(pool, rows // 2))
    reference.iloc[:3] = np.nan if kind == "num" else None  # missing values do not count
    evidently_type = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    expected = _get_default_stattest(reference.dropna(), current.dropna(), evidently_type)
    chosen = default_stattest(reference, current, kind)
    if evidently_type in expected.allowed_feature_types:
        assert chosen == expected.name
    else:  # Evidently applies chi-square/Z to a numeric column only unnamed: the stage lets it choose
        assert chosen is None


def test_unknown_method_and_missing_columns_are_named(tmp_path: Path) -> None:
    import pandas as pd

    from mlops_provider.exceptions import StageError
    from mlops_provider.stages.monitor import detect_drift
    from mlops_provider.storage.tables import TableColumns

    reference, current = _tables(tmp_path, 500)
    with pytest.raises(StageError, match=r"unknown drift method 'wasserstien'; Evidently knows: .*wasserst"):
        detect_drift(TableColumns(str(current)), TableColumns(str(reference)), stattest="wasserstien")
    pd.read_csv(current).drop(columns=["city", "count"]).to_csv(tmp_path / "narrow.csv", index=False)
    with pytest.raises(StageError, match=r"lacks column\(s\) 'city', 'count' that the model was trained on"):
        detect_drift(TableColumns(str(tmp_path / "narrow.csv")), TableColumns(str(reference)))
