"""``deploy.approval`` in a running Airflow: the ``airflow_server`` fixture's api-server, scheduler and
LocalExecutor (no ``dag.test()``, no sweep called by hand). The approver answers over the api-server's REST
API as the "Required actions" page does; an approval nobody answers is rejected by the scheduler's own
timeout sweep (``[scheduler] trigger_timeout_check_interval``, 15 s by default)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.processes import wait_for
from tests.integration._e2e_helpers import alias_holder, unique
from tests.integration._stage_helpers import pipeline_runs

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _approval_spec(server: AirflowServer, name: str, approval: str) -> str:
    """The server's example spec as pipeline ``name`` (own experiment and model), deploy behind ``approval``
    and no batch or monitor DAGs."""
    text = (server.pipelines_folder / "breast_cancer.yaml").read_text()
    text = (
        text.replace("name: breast_cancer", f"name: {name}", 1)
        .replace("experiment: breast_cancer", f"experiment: {name}", 1)
        .replace("model: breast_cancer_classifier", f"model: {name}_model", 1)
    )
    return text[: text.index("\ndeploy:")] + f"\ndeploy:\n  alias: champion\n  approval: {approval}\n"


def _hitl_path(server: AirflowServer, dag_id: str, run_id: str) -> str:
    return f"{server.run_path(dag_id, run_id)}/taskInstances/approve/-1/hitlDetails"


def _parked_process_exited(server: AirflowServer, dag_id: str) -> bool:
    """The scheduler logged the executor's event for the exit of the approval task's first process."""
    (scheduler,) = [s for s in server.services if s.name == "scheduler"]
    return any(
        "Received executor event with state success" in line and f"dag_id='{dag_id}'" in line
        and "task_id='approve'" in line
        for line in scheduler.log_path.read_text(errors="replace").splitlines()
    )


def _the_pipeline_run(server: AirflowServer, name: str) -> Any:
    (run,) = pipeline_runs(server.mlflow.client(), name)
    return run


def test_the_scheduler_rejects_an_approval_nobody_answers(airflow_server: AirflowServer) -> None:
    name = unique("approval_timeout")
    with airflow_server.pipeline_spec(name, _approval_spec(airflow_server, name, "{timeout: 5s}")):
        run_id = airflow_server.trigger(name)
        airflow_server.wait_run(name, run_id, timeout=600)
        states = airflow_server.task_states(name, run_id)
        assert states["approve"] == "success" and states["deploy"] == "skipped", states
        status, detail = airflow_server.request("GET", _hitl_path(airflow_server, name, run_id))
        assert status == 200, detail
        assert detail["response_received"] is True and detail["chosen_options"] == ["Reject"], detail
        assert alias_holder(airflow_server.mlflow.client(), f"{name}_model", "champion") is None
        run = _the_pipeline_run(airflow_server, name)
        assert run.info.status == "FINISHED", run.info  # a rejection ends the run; it is not a failure
        assert run.data.tags["mlops.approval"] == "rejected"
        assert run.data.tags["mlops.approval_by"] == "timeout"
        assert run.data.tags["mlops.approval_reason"] == "no decision before the approval timeout"


def test_an_approver_answers_through_the_api_server(airflow_server: AirflowServer) -> None:
    from mlops_provider.stages.deploy import history

    name = unique("approval_rest")
    with airflow_server.pipeline_spec(name, _approval_spec(airflow_server, name, "{timeout: 1h}")):
        run_id = airflow_server.trigger(name)
        path = _hitl_path(airflow_server, name, run_id)
        deadline = time.monotonic() + 600
        while True:  # the task asks once it runs: its HITL detail appears, with no response yet
            status, detail = airflow_server.request("GET", path)
            if status == 200:
                break
            states = airflow_server.task_states(name, run_id)
            assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
            assert time.monotonic() < deadline, f"approve never asked: {states}\n{airflow_server.log_tails()}"
            time.sleep(2)
        assert detail["response_received"] is False and detail["options"] == ["Approve", "Reject"], detail
        # Answer as a person would, not within the second: once the scheduler has seen the parked task's
        # first process exit. An answer before that resumes the task, and the exit's late "success" event
        # then fails the resumed try ("Task not in running state current_state=failed": Airflow 3.3.2's
        # scheduler handles that race for deferred tasks, not for awaiting_input ones; seen in CI).
        wait_for(lambda: _parked_process_exited(airflow_server, name),
                 what="the approval's first process exit", timeout=120)
        assert airflow_server.task_states(name, run_id)["deploy"] in (None, "none"), "deploy ran unapproved"
        answer = {"chosen_options": ["Approve"], "params_input": {"reason": "checked on the server"}}
        status, body = airflow_server.request("PATCH", path, answer)
        assert status == 200, body
        airflow_server.wait_run(name, run_id, timeout=600)
        states = airflow_server.task_states(name, run_id)
        assert states["approve"] == "success" and states["deploy"] == "success", states

        client = airflow_server.mlflow.client()
        version = alias_holder(client, f"{name}_model", "champion")
        assert version is not None
        (move,) = history(client, model_name=f"{name}_model", alias="champion")
        assert move["promoted_by"] == airflow_server.username
        assert move["reason"].endswith(f"approved by {airflow_server.username}: checked on the server")
        run = _the_pipeline_run(airflow_server, name)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlops.approval"] == "approved"
        assert run.data.tags["mlops.approval_by"] == airflow_server.username
