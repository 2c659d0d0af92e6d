"""The approval path, as a user runs it: ``deploy.approval`` puts Airflow's human-in-the-loop approval between
register and deploy. The approver answers through Airflow's real REST API (the FastAPI core app with the
simple auth manager, in-process), exactly as the "Required actions" page does, while ``dag.test()`` waits.

Approve → the alias moves and the audit trail names the approver and their reason; Reject → deploy is
skipped, the alias stays, the MLflow run records the rejection and ends. No answer before the timeout needs
the scheduler's timeout sweep: ``test_approval_server.py`` (a real scheduler), as does an answer through a
real api-server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration._e2e_helpers import alias_holder
from tests.integration._monitor_helpers import MONITOR_SPEC, embedded_client, seed_champion, spec_dags
from tests.integration._stage_helpers import make_project, pipeline_runs, states, unique, xcom

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def approval_spec(name: str, approval: str) -> str:
    """The monitor helpers' small breast-cancer spec, with ``deploy.approval`` and without a monitor."""
    text = MONITOR_SPEC.format(name=name).split("monitor:")[0]
    deploy = "deploy:\n  alias: champion\n"
    return text.replace(deploy, f"{deploy}  approval: {approval}\n")


class Approvers:
    """Airflow's REST API as the approvers use it: a bearer token per user, the HITL detail routes."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._tokens: dict[str, str] = {}

    def _headers(self, user: str) -> dict[str, str]:
        if user not in self._tokens:
            answer = self.client.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
            assert answer.status_code == 201, answer.text
            self._tokens[user] = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    @staticmethod
    def _path(dag_id: str, run_id: str, task_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"

    def detail(self, user: str, dag_id: str, run_id: str, task_id: str = "approve") -> dict[str, Any]:
        answer = self.client.get(self._path(dag_id, run_id, task_id), headers=self._headers(user))
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def respond(
        self, user: str, dag_id: str, run_id: str, option: str, reason: str = "", task_id: str = "approve"
    ) -> Any:
        return self.client.patch(
            self._path(dag_id, run_id, task_id),
            headers=self._headers(user),
            json={"chosen_options": [option], "params_input": {"reason": reason}},
        )


@pytest.fixture(scope="module")
def approvers(airflow_home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Approvers]:
    """Users alice and bob (simple auth manager), and the core API app to answer with."""
    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "alice:admin,bob:admin")
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "approval-tests-only-" * 4)  # >= 64 bytes
        # Import Airflow's ORM and API modules in this thread first: importing them from two threads at
        # once (the responder and dag.test()) can deadlock.
        import airflow.dag_processing.collection  # noqa: F401
        from airflow.api_fastapi.app import create_app
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from fastapi.testclient import TestClient

        with create_session() as session:
            session.query(TaskInstance).first()
        with TestClient(create_app("core")) as client:
            yield Approvers(client)


class ParkedWatch(logging.Handler):
    """Set once ``dag.test()``'s own loop has seen the approval task parked and logs that it waits for input.

    Answering earlier loses the answer: while ``run_task_in_process`` returns, the task is already
    ``awaiting_input`` in the DB (the supervisor's own API call), and ``dag.test()`` then writes the state the
    task returned with (``awaiting_input`` again) over the ``scheduled`` that a fast response had set. The
    response is recorded, but the task waits forever (Airflow 3.3.2, ``sdk.definitions.dag._run_task``): a
    race in ``dag.test()``'s own bookkeeping, not in the operator.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.parked = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Waiting for Human-in-the-loop input"):
            self.parked.set()


@contextmanager
def parked_watch() -> Iterator[ParkedWatch]:
    logger = logging.getLogger("airflow.sdk.definitions.dag")
    watch, level = ParkedWatch(), logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


def task_state(dag_id: str, task_id: str) -> tuple[str | None, str | None]:
    """(state, run id) of the task's only instance; (None, None) before it exists or while SQLite is busy."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy.exc import OperationalError

    try:
        with create_session() as session:
            ti = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id).one_or_none()
            return (None, None) if ti is None else (str(ti.state), ti.run_id)
    except OperationalError:  # SQLite busy while a task writes: look again
        return None, None


def awaiting_input(dag_id: str, watch: ParkedWatch, task_id: str = "approve", timeout: float = 300) -> str:
    """Wait until the task waits for a person and ``dag.test()`` has parked it; its DAG run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, run_id = task_state(dag_id, task_id)
        if state == "awaiting_input" and watch.parked.is_set():
            return str(run_id)
        if state in ("success", "failed", "skipped", "upstream_failed"):
            raise AssertionError(f"{task_id} ended {state} without waiting for input")
        time.sleep(0.2)
    raise AssertionError(f"{task_id} never waited for input")


def left_awaiting_input(dag_id: str, task_id: str = "approve", timeout: float = 120) -> None:
    """After an answer, the task must leave ``awaiting_input``: else the answer was lost."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, _ = task_state(dag_id, task_id)
        if state not in (None, "awaiting_input"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{task_id} still awaits input {timeout:.0f} s after it was answered")


def run_answering(airflow_home, dag: Any, answer: Callable[[str], Any]) -> tuple[Any, Any]:
    """``dag.test()`` while another thread answers once the approval task waits: (DagRun, answer's result).

    If the answer fails, or the task still waits after it, the thread fails the task so ``dag.test()``
    returns and the test reports why instead of hanging.
    """
    outcome: dict[str, Any] = {}

    def respond(watch: ParkedWatch) -> None:
        try:
            outcome["result"] = answer(awaiting_input(dag.dag_id, watch))
            left_awaiting_input(dag.dag_id)
        except BaseException as exc:  # reported by the test thread
            outcome["error"] = exc
            from airflow.models.taskinstance import TaskInstance
            from airflow.utils.session import create_session
            from airflow.utils.state import TaskInstanceState

            with create_session() as session:  # unblock dag.test(): fail the waiting task
                for ti in session.query(TaskInstance).filter_by(dag_id=dag.dag_id, task_id="approve"):
                    ti.state = TaskInstanceState.FAILED

    with parked_watch() as watch:
        thread = threading.Thread(target=respond, args=(watch,), daemon=True)
        thread.start()
        dag_run = airflow_home.dag_test(dag)
        thread.join(timeout=60)
    if "error" in outcome:
        raise outcome["error"]
    return dag_run, outcome.get("result")


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, approval: str) -> tuple[Path, str, Any]:
    project = make_project(tmp_path, monkeypatch)
    name = unique("approval")
    dags = spec_dags(project, name, approval_spec(name, approval))
    return project, name, dags[name]


def test_approve_moves_the_alias_and_the_audit_names_the_approver(
    airflow_home, approvers: Approvers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.stages.deploy import history

    project, name, dag = _project(tmp_path, monkeypatch, "{assignees: [alice], timeout: 1h}")
    assert list(dag.task_dict["register"].downstream_task_ids) == ["approve"]
    assert list(dag.task_dict["approve"].downstream_task_ids) == ["deploy"]
    model = f"{name}_model"

    def answer(run_id: str) -> dict[str, Any]:
        detail = approvers.detail("bob", name, run_id)
        refused = approvers.respond("bob", name, run_id, "Approve")  # not an assignee
        approved = approvers.respond("alice", name, run_id, "Approve", reason="metrics checked, ship it")
        assert approved.status_code == 200, approved.text
        return {"detail": detail, "refused": refused.status_code}

    dag_run, seen = run_answering(airflow_home, dag, answer)
    assert states(dag_run)["approve"] == "success" and states(dag_run)["deploy"] == "success", states(dag_run)
    assert seen["refused"] == 403

    # what the approver was shown: the version, and the evaluation verdict as a table
    registered = xcom(dag_run, "register")
    detail = seen["detail"]
    assert detail["subject"] == f"Promote {model} v{registered['version']} to @champion?"
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert detail["assigned_users"] == [{"id": "alice", "name": "alice"}]
    body = detail["body"]
    verdict = xcom(dag_run, "evaluate")
    assert "**Evaluation PASSED**" in body
    assert "| check | metric | candidate | rule | champion | result |" in body
    assert f"| threshold | roc_auc | {verdict['metrics']['roc_auc']:.4g} | >= 0.8 |  | PASS |" in body
    assert f"| (metric) | accuracy | {verdict['metrics']['accuracy']:.4g} |" in body
    assert "from no version yet to v1" in body and "counts as **Reject**" in body

    # the alias moved; the audit trail says who approved and why
    client = embedded_client(project)
    assert alias_holder(client, model, "champion") == str(registered["version"])
    (move,) = history(client, model_name=model, alias="champion")
    assert move["promoted_by"] == "alice"
    assert move["reason"].endswith("approved by alice: metrics checked, ship it")
    (run,) = pipeline_runs(client, name)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.approval"] == "approved" and run.data.tags["mlops.approval_by"] == "alice"
    assert xcom(dag_run, "approve")["approver"] == "alice"


def test_reject_skips_deploy_and_keeps_the_champion(
    airflow_home, approvers: Approvers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, name, dag = _project(tmp_path, monkeypatch, "required")
    model = f"{name}_model"
    champion = seed_champion(project, model_name=model, experiment=name, dag_id=name)

    def answer(run_id: str) -> dict[str, Any]:
        detail = approvers.detail("alice", name, run_id)
        rejected = approvers.respond("bob", name, run_id, "Reject", reason="wait for the new data")
        assert rejected.status_code == 200, rejected.text
        return detail

    dag_run, detail = run_answering(airflow_home, dag, answer)
    assert states(dag_run)["approve"] == "success" and states(dag_run)["deploy"] == "skipped", states(dag_run)
    # the champion comparison is in the body, next to the candidate
    verdict = xcom(dag_run, "evaluate")
    champion_roc = verdict["champion_metrics"]["roc_auc"]
    assert f"| champion | roc_auc | {verdict['metrics']['roc_auc']:.4g} |" in detail["body"]
    assert f"v{champion['version']}: {champion_roc:.4g} | PASS |" in detail["body"]

    client = embedded_client(project)
    assert alias_holder(client, model, "champion") == champion["version"]  # untouched
    candidate = xcom(dag_run, "register")["version"]
    assert client.get_model_version(model, candidate).tags["mlops.approval"] == "rejected"
    (run,) = [r for r in pipeline_runs(client, name) if r.info.run_id != champion["run_id"]]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.approval"] == "rejected"
    assert run.data.tags["mlops.approval_by"] == "bob"
    assert run.data.tags["mlops.approval_reason"] == "wait for the new data"


def test_deploy_refuses_without_an_approval_in_a_hand_written_dag(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Belt and braces: a hand-written DAG whose "approve" task is not a real approval cannot promote."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    from tests.integration import _e2e_helpers as e2e

    project = e2e.make_project(tmp_path, monkeypatch)
    name = unique("unapproved")

    def no_real_approval(dag: Any, tasks: dict[str, Any]) -> None:
        approve = EmptyOperator(task_id="approve", dag=dag)
        tasks["register"] >> approve >> tasks["deploy"]
        tasks["deploy"].approval_task_id = "approve"

    dag = e2e.training_dag(name, experiment=name, model=f"{name}_model", retries=0, extra=no_real_approval)
    dag_run = airflow_home.dag_test(dag)
    assert states(dag_run)["approve"] == "success" and states(dag_run)["deploy"] == "failed", states(dag_run)
    assert "no approval from task 'approve' in this DAG run" in capfd.readouterr().out  # the task log
    client = embedded_client(project)
    assert alias_holder(client, f"{name}_model", "champion") is None
    (run,) = pipeline_runs(client, name)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlops.verdict"] == "passed"  # the model passed; the promotion was what failed
