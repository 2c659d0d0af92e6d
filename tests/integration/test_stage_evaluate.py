"""Evaluate stage: the metrics a user reads, the gates, and what a rejected candidate looks like.

Real scikit-learn models, a real MLflow store (embedded), real Airflow (``dag.test()``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration._e2e_helpers import (
    alias_holder,
    embedded_client,
    fluent_uris,
    make_project,
    training_dag,
    unique,
    verdict_artifact,
    versions,
)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------------------------------
# the numbers: what each metric means for binary, multiclass and regression models
# --------------------------------------------------------------------------------------------------
def _wine_split():  # type: ignore[no-untyped-def]
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    frame = load_wine(as_frame=True).frame
    return train_test_split(frame, test_size=0.3, random_state=1, stratify=frame["target"])


def test_multiclass_metrics_are_macro_averages_over_the_three_classes() -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from mlops_provider.metrics import score

    train, test = _wine_split()
    x_train, y_train = train.drop(columns="target"), train["target"]
    x_test, y_test = test.drop(columns="target"), test["target"]
    model = LogisticRegression(max_iter=50).fit(x_train, y_train)  # deliberately under-fitted: errors differ
    got = score(
        model,
        x_test,
        y_test,
        task="classification",
        metrics=["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"],
    )

    predicted = model.predict(x_test)
    per_class_recall = [np.mean(predicted[y_test == c] == c) for c in (0, 1, 2)]
    per_class_precision = [np.mean(y_test[predicted == c] == c) for c in (0, 1, 2)]
    assert got["recall"] == pytest.approx(np.mean(per_class_recall))
    assert got["precision"] == pytest.approx(np.mean(per_class_precision))
    assert got["accuracy"] == pytest.approx(np.mean(predicted == y_test))
    assert got["recall"] != pytest.approx(got["accuracy"])  # macro, not micro, averaging
    proba = model.predict_proba(x_test)
    assert got["log_loss"] == pytest.approx(
        -np.mean(np.log(proba[np.arange(len(y_test)), y_test.to_numpy()]))
    )
    assert 0.5 < got["roc_auc"] <= 1.0


def test_binary_metrics_take_the_larger_label_as_positive_even_for_strings() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.tree import DecisionTreeClassifier

    from mlops_provider.metrics import score

    frame = load_breast_cancer(as_frame=True).frame
    labels = frame["target"].map({0: "malignant", 1: "benign"})  # "malignant" sorts last: the positive class
    features = frame.drop(columns="target")
    model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, labels)
    got = score(model, features, labels, task="classification", metrics=["recall", "roc_auc"])
    predicted = model.predict(features)
    malignant = labels == "malignant"
    assert got["recall"] == pytest.approx((predicted[malignant] == "malignant").mean())
    assert got["roc_auc"] > 0.5  # scored with the probability of "malignant", not of "benign"


def test_regression_metrics() -> None:
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.dummy import DummyRegressor

    from mlops_provider.metrics import score

    x, y = load_diabetes(return_X_y=True, as_frame=True)
    got = score(DummyRegressor().fit(x, y), x, y, task="regression", metrics=["rmse", "mae", "r2", "mape"])
    assert got["rmse"] == pytest.approx(float(np.std(y)))
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(y - y.mean()))))
    assert got["r2"] == pytest.approx(0.0, abs=1e-12)
    assert got["mape"] == pytest.approx(float(np.mean(np.abs(y - y.mean()) / y)))


def test_champion_check_follows_each_metrics_direction_and_min_delta() -> None:
    from mlops_provider.stages.evaluate import champion_check

    def check(metric: str, candidate: float, champion: float | None, delta: float = 0.0) -> bool:
        task = "regression" if metric in ("rmse", "mae", "r2", "mape") else "classification"
        return champion_check(
            task=task,
            metric=metric,
            candidate=candidate,
            champion=champion,
            champion_version="4",
            alias="champion",
            min_delta=delta,
        ).passed

    assert check("roc_auc", 0.91, None)  # no champion yet: the first model passes
    assert check("roc_auc", 0.91, 0.90) and not check("roc_auc", 0.89, 0.90)
    assert not check("roc_auc", 0.90, 0.90)  # a tie keeps the champion
    assert not check("rmse", 52.0, 52.0) and not check("roc_auc", 0.91, 0.90, delta=0.02)
    assert check("roc_auc", 0.91, 0.90, delta=0.01)  # better by exactly min_delta
    tie = champion_check(task="classification", metric="roc_auc", candidate=0.9, champion=0.9,
                         champion_version="4", alias="champion", min_delta=0.0)
    assert tie.reason == ("roc_auc 0.9000 vs @champion v4 0.9000: a tie (required > 0): "
                          "@champion stays on v4"), tie.reason
    assert (tie.op, tie.bound) == (">", 0.9)
    assert not check("roc_auc", 0.905, 0.90, delta=0.01) and check("roc_auc", 0.91, 0.90, delta=0.01)
    assert check("log_loss", 0.20, 0.30) and not check("log_loss", 0.30, 0.20)  # lower is better
    assert check("rmse", 50.0, 52.0, delta=1.0) and not check("rmse", 51.5, 52.0, delta=1.0)
    assert check("r2", 0.5, 0.4) and not check("r2", 0.4, 0.5)


def test_thresholds_and_the_verdict_table() -> None:
    from mlops_provider.stages.evaluate import Verdict, threshold_checks

    checks = threshold_checks(
        {"roc_auc": 0.95, "log_loss": 0.4}, {"roc_auc": {"min": 0.97}, "log_loss": {"max": 0.5}}
    )
    assert [(c.metric, c.op, c.bound, c.passed) for c in checks] == [
        ("roc_auc", ">=", 0.97, False),
        ("log_loss", "<=", 0.5, True),
    ]
    verdict = Verdict("m", {"roc_auc": 0.95, "log_loss": 0.4}, checks, test_rows=10)
    assert not verdict.passed and verdict.status == "rejected"
    assert verdict.reason == "roc_auc 0.9500 < minimum 0.97"
    table = verdict.table().splitlines()
    assert table[0] == "Evaluation of m on 10 held-out rows"
    assert table[3].split() == ["threshold", "roc_auc", "0.9500", ">=", "0.97", "FAIL"]
    assert table[4].split() == ["threshold", "log_loss", "0.4000", "<=", "0.5", "PASS"]
    assert table[-1] == "Verdict: REJECTED - roc_auc 0.9500 < minimum 0.97"


# --------------------------------------------------------------------------------------------------
# through Airflow
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch)


def test_passed_verdict_is_recorded_on_the_run_and_matches_an_independent_scoring(
    airflow_home, project: Path
) -> None:
    import mlflow
    import pandas as pd
    from sklearn.metrics import f1_score, roc_auc_score

    from mlops_provider.run import run_dag

    model, experiment = unique("bc"), unique("exp")
    result = run_dag(training_dag(unique("eval_ok"), experiment=experiment, model=model))
    assert result.ok, result.failure
    verdict = result.xcom["evaluate"]
    assert verdict["passed"] is True and verdict["champion_version"] is None
    assert [c["name"] for c in verdict["checks"]] == ["threshold", "champion"]

    client = embedded_client(project)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.verdict"] == "passed"
    for metric in ("roc_auc", "accuracy", "f1"):
        assert run.data.metrics[f"test_{metric}"] == pytest.approx(verdict["metrics"][metric])
    assert run.data.metrics["gates_passed"] == 1.0
    assert verdict_artifact(client, result.mlflow_run_id)["checks"] == verdict["checks"]

    # the numbers are right: score the registered model on the test split ourselves
    test = pd.read_parquet(result.xcom["ingest"]["test_uri"])
    with fluent_uris(client.tracking_uri):
        loaded = mlflow.sklearn.load_model(f"models:/{model}/1")
    features, target = test.drop(columns="target"), test["target"]
    assert verdict["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score(target, loaded.predict_proba(features)[:, 1])
    )
    assert verdict["metrics"]["f1"] == pytest.approx(f1_score(target, loaded.predict(features)))


def test_failed_gate_stops_promotion_without_retries(
    airflow_home, project: Path, capfd: pytest.CaptureFixture
) -> None:
    from mlops_provider.run import run_dag

    model = unique("bc")
    dag = training_dag(
        unique("eval_gate"),
        experiment=unique("exp"),
        model=model,
        thresholds={"roc_auc": {"min": 0.9999}, "accuracy": {"min": 0.5}},
        retries=2,
    )
    result = run_dag(dag)

    # a rejection is an expected outcome: evaluate succeeds (it decided), register and deploy are skipped
    assert result.state == "success"
    states = {t.task_id: (t.state, t.tries) for t in result.tasks}
    assert states["evaluate"] == ("success", 1)
    assert states["register"][0] == states["deploy"][0] == "skipped"
    assert result.rejected and "no version holds @champion yet" in result.summary()
    assert "roc_auc" in result.verdict["reason"] and "< minimum 0.9999" in result.verdict["reason"]
    assert "accuracy" not in result.verdict["reason"]  # only the failed check is the reason
    captured = capfd.readouterr()
    log = captured.out + captured.err
    assert (f"{model} rejected by the evaluation gate: roc_auc " in log
            and "< minimum 0.9999. Not registered; no version holds @champion yet." in log), log[-3000:]
    assert "Traceback" not in log and "Task failed with exception" not in log
    assert "stays on no version" not in log

    client = embedded_client(project)
    assert versions(client, model) == []  # nothing registered, nothing promoted
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"  # no run left RUNNING, and nothing failed
    assert run.data.tags["mlops.verdict"] == "rejected"
    assert "< minimum 0.9999" in run.data.tags["mlops.verdict_reason"]
    assert run.data.metrics["gates_passed"] == 0.0
    checks = {(c["metric"], c["passed"]) for c in verdict_artifact(client, result.mlflow_run_id)["checks"]}
    assert checks == {("roc_auc", False), ("accuracy", True), ("roc_auc", True)}  # champion: none yet → pass

    text = log
    assert "Verdict: REJECTED" in text
    table_row = next(line for line in text.splitlines() if "threshold  roc_auc" in line)
    assert ">= 0.9999" in table_row and " FAIL " in table_row


def test_champion_scored_on_the_same_test_set(airflow_home, project: Path) -> None:
    """A second run compares with the first run's @champion, re-scored on the second run's test data."""
    import mlflow
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from mlops_provider.run import run_dag

    model, experiment = unique("bc"), unique("exp")
    first = run_dag(training_dag(unique("eval_first"), experiment=experiment, model=model))
    assert first.ok, first.failure
    # the same data in another row order: the split (same seed) gives a genuinely different test set
    frame = pd.read_csv(project / "include" / "data" / "breast_cancer.csv")
    frame.sample(frac=1.0, random_state=99).to_csv(
        project / "include" / "data" / "reordered.csv", index=False
    )
    second = run_dag(
        training_dag(
            unique("eval_second"), experiment=experiment, model=model, source="include/data/reordered.csv"
        )
    )

    client = embedded_client(project)
    verdict = verdict_artifact(client, second.mlflow_run_id)
    assert verdict["champion_version"] == "1"
    test = pd.read_parquet(second.xcom["ingest"]["test_uri"])
    with fluent_uris(client.tracking_uri):
        champion = mlflow.sklearn.load_model(f"models:/{model}/1")
    rescored = roc_auc_score(test["target"], champion.predict_proba(test.drop(columns="target"))[:, 1])
    assert verdict["champion_value"] == pytest.approx(rescored)
    assert verdict["champion_value"] != pytest.approx(first.xcom["evaluate"]["metrics"]["roc_auc"])
    check = next(c for c in verdict["checks"] if c["name"] == "champion")
    assert check["passed"] == (verdict["metrics"]["roc_auc"] > rescored)
    assert second.ok and second.rejected != check["passed"]
    assert alias_holder(client, model, "champion") == ("2" if check["passed"] else "1")
