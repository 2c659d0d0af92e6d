"""``mlops history`` and ``mlops rollback`` against the real embedded MLflow store of a project.

Three registered versions are logged directly (no DAG run: the deploy stage's ``promote`` is what a deploy
task calls); the commands run in-process through typer's CliRunner, as a user's shell would call them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.integration._e2e_helpers import alias_holder, embedded_client, fluent_uris, make_project, unique

pytestmark = pytest.mark.integration

MODEL = "wine_cultivar"  # mlflow.model of the spec
PASSED = {"passed": True, "reason": "every gate passed (test)"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project(tmp_path, monkeypatch, "wine_classifier.yaml")


def _three_versions(root: Path) -> Any:
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    from mlops_provider.stages.train import log_model

    client = embedded_client(root)
    (root / ".mlops").mkdir(exist_ok=True)
    artifacts = (root / ".mlops" / "artifacts").as_uri()  # never MLflow's default ./mlruns
    run_id = client.create_run(
        client.create_experiment(unique("exp"), artifact_location=artifacts)
    ).info.run_id
    client.create_registered_model(MODEL)
    x = pd.DataFrame({"x": [0.0, 1.0]})
    with fluent_uris(client.tracking_uri):
        for _ in range(3):
            info = log_model(DummyClassifier().fit(x, [0, 1]), x, mlflow_run_id=run_id)
            client.create_model_version(MODEL, source=info.model_uri, run_id=run_id, model_id=info.model_id)
    client.set_terminated(run_id)
    return client


def _mlops(root: Path, *args: str) -> Any:
    from mlops_provider import cli

    spec = str(root / "dags" / "pipelines" / "wine_classifier.yaml")
    command, *rest = args
    return CliRunner().invoke(cli.app, [command, spec, *rest])


def test_rollback_moves_the_alias_back_and_history_shows_every_move(airflow_home, project: Path) -> None:
    from mlops_provider.stages.deploy import promote

    client = _three_versions(project)
    before = _mlops(project, "history", "--format", "json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["moves"] == []

    for version, run_id in (("1", "scheduled__1"), ("2", "scheduled__2")):
        promote(
            client,
            model_name=MODEL,
            version=version,
            alias="champion",
            verdict=PASSED,
            promoted_by="scheduled",
            dag_id="wine_classifier_training",
            dag_run_id=run_id,
        )
    assert alias_holder(client, MODEL, "champion") == "2"

    rolled = _mlops(project, "rollback", "--reason", "bad predictions in production")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.strip() == f"{MODEL}@champion: v2 -> v1"
    assert alias_holder(client, MODEL, "champion") == "1"

    shown = _mlops(project, "history", "--format", "json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert (data["model_name"], data["alias"]) == (MODEL, "champion")
    moves = [(m["from"], m["to"], m["who"]) for m in data["moves"]]
    assert moves[:2] == [
        (None, "1", "wine_classifier_training / scheduled__1"),
        ("1", "2", "wine_classifier_training / scheduled__2"),
    ]
    assert moves[2][:2] == ("2", "1") and moves[2][2].startswith("mlops rollback (")
    assert data["moves"][2]["why"] == "bad predictions in production"
    assert data["moves"][0]["why"] == "every gate passed (test)"
    assert all(m["time"] for m in data["moves"])

    text = _mlops(project, "history")
    assert text.exit_code == 0, text.output
    lines = text.stdout.strip().splitlines()
    assert lines[0] == f"{MODEL}@champion: 3 move(s), oldest first"
    assert "(none) -> v1" in lines[1] and "v1 -> v2" in lines[2] and "v2 -> v1" in lines[3]
    assert "why: bad predictions in production" in lines[3]


def test_rollback_refuses_what_it_cannot_or_should_not_do(airflow_home, project: Path) -> None:
    from mlops_provider.stages.deploy import promote
    from mlops_provider.tracking.tags import VERDICT as VERDICT_TAG
    from mlops_provider.tracking.tags import VERDICT_REASON as VERDICT_REASON_TAG

    nothing = _mlops(project, "rollback")
    assert nothing.exit_code == 1
    assert "mlops rollback: wine_cultivar has no @champion to roll back" in nothing.stderr

    client = _three_versions(project)
    no_alias = _mlops(project, "rollback")
    assert no_alias.exit_code == 1 and "has no @champion to roll back" in no_alias.stderr

    promote(
        client,
        model_name=MODEL,
        version="1",
        alias="champion",
        verdict=PASSED,
        promoted_by="manual",
        dag_id="d",
        dag_run_id="manual__1",
    )
    first = _mlops(project, "rollback")
    assert first.exit_code == 1
    assert "(v1) has no recorded previous holder to roll back to" in first.stderr

    missing = _mlops(project, "rollback", "--to", "9")
    assert missing.exit_code == 1 and "has no version '9'" in missing.stderr

    client.set_model_version_tag(MODEL, "3", VERDICT_TAG, "rejected")
    client.set_model_version_tag(MODEL, "3", VERDICT_REASON_TAG, "f1 0.41 < minimum 0.8")
    refused = _mlops(project, "rollback", "--to", "3")
    assert refused.exit_code == 1
    assert "its evaluation rejected it (f1 0.41 < minimum 0.8); use --force" in refused.stderr
    assert alias_holder(client, MODEL, "champion") == "1"

    forced = _mlops(project, "rollback", "--to", "3", "--force", "--reason", "hotfix")
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.strip() == f"{MODEL}@champion: v1 -> v3"
    assert alias_holder(client, MODEL, "champion") == "3"
    moves = json.loads(_mlops(project, "history", "--format", "json").stdout)["moves"]
    assert [(m["from"], m["to"], m["why"]) for m in moves] == [
        (None, "1", "every gate passed (test)"),
        ("1", "3", "hotfix"),
    ]
