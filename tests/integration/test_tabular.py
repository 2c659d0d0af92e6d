"""Real tabular data from YAML alone: the palmerpenguins package's own CSV (string labels with missing
values, categorical columns, missing measurements, id/date/text columns), through Airflow (``dag.test``):
train with the spec's ``transform``, gate, register, promote, batch-score the raw file (with a category
training never saw) and monitor it. And the same table without ``transform`` fails at once."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from tests.integration._e2e_helpers import alias_holder, edit_spec, embedded_client
from tests.integration._stage_helpers import MLFLOW_ENV

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[1] / "specs" / "tabular" / "penguins_sex.yaml"
CATEGORICAL = ["Species", "Island", "Clutch Completion"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import pandas as pd

    root = tmp_path / "project"
    data = root / "include" / "data"
    data.mkdir(parents=True)
    raw = resources.files("palmerpenguins") / "data" / "penguins-raw.csv"
    with resources.as_file(raw) as path:
        shutil.copy(path, data / "penguins.csv")
    # "this season's" penguins: the same table, some from an island training never saw
    live = pd.read_csv(data / "penguins.csv")
    live.loc[live.index % 7 == 0, "Island"] = "Anvers"
    live.to_csv(data / "penguins_live.csv", index=False)
    (root / "dags" / "pipelines").mkdir(parents=True)
    shutil.copy(SPEC, root / "dags" / "pipelines" / SPEC.name)
    for variable in MLFLOW_ENV:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(root))
    return root


def test_a_real_table_trains_scores_and_is_monitored_from_the_spec_alone(airflow_home, project: Path) -> None:
    import mlflow.sklearn
    import pandas as pd

    from mlops_provider.run import run_spec
    from tests.integration._e2e_helpers import fluent_uris

    spec = project / "dags" / "pipelines" / SPEC.name
    trained = run_spec(spec)
    assert trained.ok and not trained.rejected, trained.summary()
    ingest = trained.xcom["ingest"]
    table = pd.read_csv(project / "include" / "data" / "penguins.csv")
    assert ingest["unlabeled_rows"] == int(table["Sex"].isna().sum()) > 0  # no label: not learned from
    assert ingest["train_rows"] + ingest["test_rows"] == int(table["Sex"].notna().sum())
    verdict = trained.verdict
    assert verdict["positive_class"] == "MALE"  # the second of FEMALE, MALE: the default, and stated
    assert verdict["metrics"]["roc_auc"] >= 0.8
    client = embedded_client(project)
    assert alias_holder(client, "penguins_sex", "champion") == "1"

    # one registered model: the fitted transform and the forest, taking the raw columns
    with fluent_uris(client.tracking_uri):
        model = mlflow.sklearn.load_model("models:/penguins_sex/1")
    assert [name for name, _ in model.steps] == ["transform", "model"]
    assert type(model.named_steps["model"]).__name__ == "RandomForestClassifier"
    assert set(CATEGORICAL) <= set(model.feature_names_in_)
    assert not {"Individual ID", "Comments", "Date Egg"} & set(model.feature_names_in_)

    scored = run_spec(spec, dag="batch")
    assert scored.ok, scored.summary()
    output = pd.read_parquet(project / "predictions" / "penguins.parquet")
    live = pd.read_csv(project / "include" / "data" / "penguins_live.csv")
    assert len(output) == len(live)  # every row scored, the unseen island and missing values included
    assert set(output["prediction"]) <= {"MALE", "FEMALE"}
    assert output.loc[live["Island"] == "Anvers", "prediction"].notna().all()
    assert {"Individual ID", "Comments"} <= set(output.columns)  # non-features are kept as keys

    monitored = run_spec(spec, dag="monitor")
    assert monitored.ok, monitored.summary()
    drift = monitored.xcom["detect_drift"]
    run = client.get_run(drift["mlflow_run_id"])
    assert run.data.metrics.get("performance.accuracy") is not None  # labels MALE/FEMALE, positive MALE
    tested = {m.removeprefix("drift.score.") for m in run.data.metrics if m.startswith("drift.score.")}
    assert set(CATEGORICAL) <= tested  # categorical drift, on the raw columns the model reads
    assert not {"Individual ID", "Comments", "Date Egg", "Sex"} & tested  # not ids, text, or the label
    assert "Island" in drift["drifted_columns"]  # every 7th penguin from an island never seen


def test_the_same_table_without_transform_fails_at_once_naming_the_columns(
    airflow_home, project: Path
) -> None:
    from mlops_provider.run import run_spec

    spec = project / "dags" / "pipelines" / SPEC.name
    edit_spec(spec, transform=None)  # retries: 2 with 5-minute delays in the spec: it must not wait them
    result = run_spec(spec)
    assert result.state == "failed"
    train = result.task("train")
    assert train.state == "failed" and train.tries == 1, result.summary()
    assert "not numeric" in train.error and "transform" in train.error, train.error
    for column in ("'Species'", "'Island'", "'Clutch Completion'"):
        assert column in train.error, train.error
    assert result.seconds < 120  # not after a retry delay
