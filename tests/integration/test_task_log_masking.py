"""Secrets stay out of task logs as Airflow stores and serves them: a real api-server, scheduler and
LocalExecutor (the ``airflow_server`` fixture), the task's log read back through the REST API a user's
browser uses, not the in-process masker.

The MLflow connection carries a token (the fixture's server ignores it, as a server without auth would);
the spec's training entrypoint, user code running in the worker with the connection's credentials in its
environment, prints the token and logs it — what a data scientist debugging a run might do.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING

import pytest

from tests.integration._e2e_helpers import unique
from tests.integration._stage_helpers import pipeline_runs

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEAKY_ENTRYPOINT = '''\
"""A training entrypoint that prints what it should not."""
import logging
import os


def train(X_train, y_train, params):
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    print(f"tracking token: {token}")
    logging.getLogger("leaky").warning("token via logging: %s", token)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**params).fit(X_train, y_train)
'''


def _spec(server: AirflowServer, name: str, conn_id: str) -> str:
    """The server's example spec as pipeline ``name`` on connection ``conn_id``, trained by the entrypoint."""
    text = (server.pipelines_folder / "breast_cancer.yaml").read_text()
    text = (
        text.replace("name: breast_cancer", f"name: {name}", 1)
        .replace("experiment: breast_cancer", f"conn_id: {conn_id}\n  experiment: {name}", 1)
        .replace("model: breast_cancer_classifier", f"model: {name}_model", 1)
    )
    start, end = text.index("\ntrain:"), text.index("\nevaluate:")
    train = f"\ntrain:\n  entrypoint: include/{name}.py:train\n  params: {{max_iter: 5000}}"
    text = text[:start] + train + text[end:]
    return text[: text.index("\ndeploy:")] + "\ndeploy:\n  alias: champion\n"


def test_a_token_printed_by_user_code_is_masked_in_the_stored_task_log(airflow_server: AirflowServer) -> None:
    server = airflow_server
    name, conn_id = unique("masked"), unique("mlflow_tok")
    token = f"tok-{secrets.token_hex(16)}"
    connection = {"connection_id": conn_id, "conn_type": "mlflow", "host": server.mlflow.tracking_uri,
                  "password": token}  # fmt: skip
    status, body = server.request("POST", "/api/v2/connections", connection)
    assert status in (200, 201), body
    (server.project_root / "include" / f"{name}.py").write_text(LEAKY_ENTRYPOINT)
    with server.pipeline_spec(name, _spec(server, name, conn_id)):
        run_id = server.trigger(name)
        server.wait_run(name, run_id, timeout=600)
        status, log = server.request("GET", f"{server.run_path(name, run_id)}/taskInstances/train/logs/1")
    assert status == 200, log
    text = json.dumps(log)
    assert "tracking token: ***" in text and "token via logging: ***" in text, text[-3000:]
    assert token not in text, "the connection's token is in the stored task log"
    (run,) = pipeline_runs(server.mlflow.client(), name)  # the token did reach MLflow's client
    assert run.info.status == "FINISHED"
