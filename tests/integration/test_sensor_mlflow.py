"""MLflowModelVersionSensor and MLflowModelVersionTrigger against a real MLflow registry.

The trigger's ``run()`` is driven directly (as the triggerer would) against the real ``mlflow server`` and
the embedded store, with a second thread moving the alias or tagging a version as a person in the MLflow UI
would; the sensor runs in real DAGs through ``dag.test()``, which runs the trigger inline after deferral.
Model versions are created straight from a run (no model files): the registry is all the sensor reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration._stage_helpers import MLFLOW_ENV, once_deferred, once_in_state, states, unique, xcom

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root whose embedded MLflow store (``.mlops/mlflow.db``) the hook falls back to."""
    root = tmp_path / "project"
    (root / ".mlops").mkdir(parents=True)
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW__MLOPS__PROJECT_ROOT", str(root))
    return root


def embedded_client(root: Path) -> Any:
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import embedded_tracking_uri

    uri = embedded_tracking_uri(root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_versions(client: Any, count: int, root: Path | None = None) -> str:
    """A registered model with ``count`` versions of one run; ``@champion`` on version 1. Returns its name."""
    name = unique("model")
    location = (root / ".mlops" / "artifacts").as_uri() if root is not None else None
    run = client.create_run(client.create_experiment(unique("exp"), artifact_location=location))
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    return name


def later(seconds: float, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in another thread after ``seconds`` (a person clicking in the MLflow UI)."""

    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def first_event(trigger: Any, limit: float | None = None) -> tuple[dict[str, Any], float]:
    """Drive ``trigger.run()`` like the triggerer: its first event's payload, and how long it took.

    By default the limit is two minutes past the trigger's ``end_time``: on a slow machine the trigger's own
    timeout event (which says what it waited for) arrives, not a bare ``TimeoutError`` of the test's.
    """
    if limit is None:
        limit = 120 + max(0.0, (trigger.end_time or time.time() + 60) - time.time())

    async def run() -> Any:
        return await asyncio.wait_for(anext(trigger.run()), limit)

    started = time.monotonic()
    event = asyncio.run(run())
    return event.payload, time.monotonic() - started


# --------------------------------------------------------------------------------------------------
# (a) serialisation: what the triggerer stores and rebuilds
# --------------------------------------------------------------------------------------------------
def test_trigger_serializes_to_plain_data_and_round_trips() -> None:
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.serde import deserialize, serialize

    from mlops_provider.triggers.mlflow import MLflowModelVersionTrigger

    trigger = MLflowModelVersionTrigger(
        model_name="churn",
        alias="champion",
        status="READY",
        tags={"validated": "true"},
        not_version="3",
        mlflow_conn_id="tracking",
        poke_interval=30,
        end_time=1_900_000_000.5,
        unreachable_timeout=600,
    )
    classpath, kwargs = trigger.serialize()

    assert import_string(classpath) is MLflowModelVersionTrigger
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON data, no objects
    assert kwargs["mlflow_conn_id"] == "tracking"
    assert not {"tracking_uri", "password", "token", "uri"} & set(kwargs)
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))  # Airflow's own trip to the DB
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.watch.describe() == (
        "alias @champion of model 'churn' to point at a version other than 3 with status READY and tags "
        "validated=true"
    )


def test_sensor_and_trigger_modules_import_no_mlflow() -> None:
    """The DAG processor imports the sensor, the triggerer the trigger: neither may pull MLflow in."""
    probe = (
        "import sys, mlops_provider.sensors.mlflow, mlops_provider.triggers.mlflow;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'pandas', 'sklearn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------------------------------
# (b) the trigger's run() against real registries
# --------------------------------------------------------------------------------------------------
def test_trigger_fires_when_the_alias_moves_on_the_tracking_server(
    mlflow_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.triggers.mlflow import MLflowModelVersionTrigger

    for key, value in mlflow_server.airflow_conn_env("tracking").items():
        monkeypatch.setenv(key, value)
    client = mlflow_server.client()
    name = register_versions(client, 2)
    trigger = MLflowModelVersionTrigger(
        model_name=name,
        alias="champion",
        capture_not_version=True,
        mlflow_conn_id="tracking",
        poke_interval=0.2,
        end_time=time.time() + 60,
    )
    moved_at: list[float] = []

    def promote() -> None:
        # once the trigger's first check took the version it starts from (v1): moving the alias before that
        # would make v2 the starting point (a slow first check on a loaded machine did, and it never fired)
        deadline = time.monotonic() + 120
        while trigger.watch.capture_not_version and time.monotonic() < deadline:
            time.sleep(0.05)
        client.set_registered_model_alias(name, "champion", "1")  # re-set to the same version: no move
        time.sleep(1)
        moved_at.append(time.monotonic())
        client.set_registered_model_alias(name, "champion", "2")

    later(0.0, promote)
    payload, _ = first_event(trigger)
    fired_at = time.monotonic()
    assert payload["status"] == "success", payload
    assert trigger.watch.not_version == "1"  # where it started from
    assert moved_at and fired_at >= moved_at[0]
    info = payload["model_version"]
    assert (info["name"], info["version"], info["alias"], info["previous_version"]) == (name, "2", "champion",
                                                                                        "1")  # fmt: skip
    assert info["aliases"] == ["champion"] and info["status"] == "READY"
    version = client.get_model_version(name, "2")
    assert (info["run_id"], info["source"]) == (version.run_id, version.source)


def test_trigger_does_not_fire_while_the_alias_stays(project: Path) -> None:
    from mlops_provider.triggers.mlflow import MLflowModelVersionTrigger

    client = embedded_client(project)
    name = register_versions(client, 2, project)
    trigger = MLflowModelVersionTrigger(
        model_name=name, alias="champion", not_version="1", poke_interval=0.2, end_time=time.time() + 2.5
    )
    later(0.5, lambda: client.set_registered_model_alias(name, "challenger", "2"))  # another alias moves
    payload, waited = first_event(trigger)

    assert payload["status"] == "timeout"
    assert waited >= 2.0
    assert payload["message"].startswith(
        f"Timed out waiting for alias @champion of model {name!r} to point at a version other than 1"
    )
    assert f"sqlite:///{project}" in payload["message"]  # names the store it watched


def test_trigger_fires_on_a_tag_condition(project: Path) -> None:
    from mlops_provider.triggers.mlflow import MLflowModelVersionTrigger

    client = embedded_client(project)
    name = register_versions(client, 2, project)
    client.set_model_version_tag(name, "2", "validated", "false")
    trigger = MLflowModelVersionTrigger(
        model_name=name, version="2", tags={"validated": "true"}, poke_interval=0.2, end_time=time.time() + 60
    )
    later(1.0, lambda: client.set_model_version_tag(name, "2", "validated", "true"))
    payload, waited = first_event(trigger)

    assert payload["status"] == "success", payload
    assert waited >= 1.0
    info = payload["model_version"]
    assert (info["version"], info["tags"], info["alias"]) == ("2", {"validated": "true"}, None)


def test_trigger_reports_an_unreachable_server_by_name() -> None:
    """A server that never answers: an ``unreachable`` event naming it once ``unreachable_timeout`` passed."""
    from mlops_provider.triggers.mlflow import MLflowModelVersionTrigger
    from tests.fixtures.processes import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", json.dumps({"conn_type": "mlflow", "host": uri}))
        trigger = MLflowModelVersionTrigger(
            model_name="churn",
            alias="champion",
            mlflow_conn_id="nowhere",
            poke_interval=0.2,
            unreachable_timeout=1.0,
            end_time=time.time() + 60,
        )
        payload, waited = first_event(trigger)

    assert payload["status"] == "unreachable"
    assert waited < 30
    assert f"MLflow tracking server at {uri} is unreachable" in payload["message"]
    assert "unreachable_timeout=1 s" in payload["message"]


# --------------------------------------------------------------------------------------------------
# (c)-(e) the sensor in DAGs
# --------------------------------------------------------------------------------------------------
def test_deferred_sensor_follows_a_promotion_on_the_tracking_server(
    airflow_home, mlflow_server, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import DAG

    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

    for key, value in mlflow_server.airflow_conn_env("tracking").items():
        monkeypatch.setenv(key, value)
    client = mlflow_server.client()
    name = register_versions(client, 2)
    dag_id = unique("follow_champion")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1), params={"model": name}) as dag:
        MLflowModelVersionSensor(
            task_id="wait",
            model_name="{{ params.model }}",
            alias="champion",
            mlflow_conn_id="tracking",
            deferrable=True,
            poke_interval=0.5,
            timeout=120,
        )

    def promote() -> None:
        time.sleep(2)  # a few checks see the old champion first
        client.set_registered_model_alias(name, "champion", "2")

    with once_deferred(dag_id, "wait", promote) as deferred:
        run = airflow_home.dag_test(dag)

    assert deferred.is_set(), "the sensor never deferred"
    assert states(run) == {"wait": "success"}
    info = xcom(run, "wait")
    assert (info["name"], info["version"], info["previous_version"]) == (name, "2", "1")
    assert info["run_id"] == client.get_model_version(name, "2").run_id
    assert xcom(run, "wait", "_link_MLflowModelVersionLink") == (
        f"{mlflow_server.tracking_uri}/#/models/{name}/versions/2"
    )


def test_poke_mode_sensor_fires_on_the_embedded_store(airflow_home, project: Path) -> None:
    from airflow.sdk import DAG

    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

    client = embedded_client(project)
    name = register_versions(client, 3, project)
    client.set_registered_model_alias(name, "champion", "2")
    dag_id = unique("poke_champion")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        MLflowModelVersionSensor(
            task_id="wait",
            model_name=name,
            alias="champion",
            deferrable=False,
            mode="poke",
            poke_interval=0.3,
            timeout=120,
        )
    # the sensor captures the version it starts from (v2) on its first poke; only then does the alias move
    mover = once_in_state(dag_id, "wait", "running",
                          lambda: client.set_registered_model_alias(name, "champion", "3"), settle=1.0)
    run = airflow_home.dag_test(dag)
    mover.join()

    assert states(run) == {"wait": "success"}
    info = xcom(run, "wait")
    assert (info["version"], info["previous_version"], info["alias"]) == ("3", "2", "champion")


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_sensor_times_out_with_a_clear_message_and_no_retry(
    airflow_home, project: Path, deferrable: bool
) -> None:
    from airflow.sdk import DAG

    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

    client = embedded_client(project)
    name = register_versions(client, 2, project)
    errors: list[BaseException] = []
    dag_id = unique("timeout")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        MLflowModelVersionSensor(
            task_id="wait",
            model_name=name,
            version="2",
            tags={"approved": "yes"},
            deferrable=deferrable,
            poke_interval=0.3,
            timeout=2,
            retries=2,
            on_failure_callback=lambda context: errors.append(context["exception"]),
        )
    run = airflow_home.dag_test(dag)

    assert states(run) == {"wait": "failed"}  # a sensor timeout is final: not up_for_retry
    (error,) = errors
    assert type(error).__name__ == "AirflowSensorTimeout"
    assert f"version 2 of model {name!r} with status READY and tags approved=yes" in str(error)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_an_unreachable_server_fails_as_a_server_down_and_is_retried(
    airflow_home, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    """Past ``unreachable_timeout`` the task fails as a server that is down (transient): the task's
    retries apply, in both modes alike, and the error names the server."""
    from airflow.sdk import DAG

    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor
    from tests.fixtures.processes import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", json.dumps({"conn_type": "mlflow", "host": uri}))
    retried: list[BaseException] = []
    failed: list[BaseException] = []
    dag_id = unique("unreachable")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        MLflowModelVersionSensor(
            task_id="wait",
            model_name="churn",
            alias="champion",
            mlflow_conn_id="nowhere",
            deferrable=deferrable,
            poke_interval=0.2,
            unreachable_timeout=1.0,
            timeout=120,
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=lambda context: retried.append(context["exception"]),
            on_failure_callback=lambda context: failed.append(context["exception"]),
        )
    run = airflow_home.dag_test(dag)

    assert states(run) == {"wait": "failed"}
    assert len(retried) == 1 and len(failed) == 1, (retried, failed)  # retried once, then failed for good
    for error in (*retried, *failed):
        assert type(error).__name__ == "ServiceUnavailableError", repr(error)
        assert f"MLflow tracking server at {uri} is unreachable" in str(error)
        assert "unreachable_timeout=1 s" in str(error)


@pytest.fixture(scope="module")
def restartable_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An ``mlflow server`` of this module's own, which a test stops and starts again (an outage)."""
    from tests.fixtures.mlflow import MLflowLaunch

    launch = MLflowLaunch(tmp_path_factory.mktemp("mlflow-outage"))
    launch.ready()
    yield launch
    launch.stop()


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_a_server_down_then_back_is_waited_out_in_the_same_try(
    airflow_home, restartable_mlflow: Any, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    """The tracking server goes down while the sensor waits and comes back: each failed check is taken for
    the server being down (the path that warns, naming it), the wait goes on (no unreachable_timeout: no
    failure, no retry), and the promotion made after the outage fires the sensor in its first try."""
    from airflow.sdk import DAG
    from mlflow import MlflowClient

    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

    outages: list[str] = []  # every failed check's error, as the sensor/trigger gets it (and warns with it)
    unavailable = MLflowHook._unavailable

    def record(self: Any, exc: Any) -> Any:
        error = unavailable(self, exc)
        outages.append(str(error))
        return error

    monkeypatch.setattr(MLflowHook, "_unavailable", record)

    uri = restartable_mlflow.uri
    monkeypatch.setenv("AIRFLOW_CONN_FLAKY", json.dumps({"conn_type": "mlflow", "host": uri}))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = register_versions(client, 2)
    retried: list[BaseException] = []
    dag_id = unique("outage")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        # the baseline pinned: in poke mode the first check may come only after the outage began (a loaded
        # machine takes seconds to import MLflow in the task), and then it would capture v2 as the baseline
        MLflowModelVersionSensor(
            task_id="wait", model_name=name, alias="champion", not_version="1", mlflow_conn_id="flaky",
            deferrable=deferrable, poke_interval=0.5, timeout=300, retries=2,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=lambda context: retried.append(context["exception"]),
        )  # fmt: skip

    def outage_then_promotion() -> None:
        restartable_mlflow.stop()
        time.sleep(3)  # the outage: several checks fail meanwhile
        restartable_mlflow.start_again()
        client.set_registered_model_alias(name, "champion", "2")

    if deferrable:
        with once_deferred(dag_id, "wait", outage_then_promotion) as deferred:
            run = airflow_home.dag_test(dag)
        assert deferred.is_set(), "the sensor never deferred"
    else:
        mover = once_in_state(dag_id, "wait", "running", outage_then_promotion, settle=1.0)
        run = airflow_home.dag_test(dag)
        mover.join()

    assert states(run) == {"wait": "success"} and retried == []
    (ti,) = run.get_task_instances()
    assert ti.try_number == 1
    info = xcom(run, "wait")
    assert (info["version"], info["previous_version"]) == ("2", "1")
    assert len(outages) >= 2, "the checks during the outage never found the server down"
    assert all(f"MLflow tracking server at {uri} is unreachable" in error for error in outages), outages[:3]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_bad_credentials_fail_at_once_without_retries(
    airflow_home, mlflow_token_gate: Any, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    """A server that answers 401 is up, and a retry cannot fix a wrong token: the task fails in its first
    try with the retries it has left unused, and the error says what the server answered."""
    from airflow.sdk import DAG

    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

    gate = mlflow_token_gate
    conn = {"conn_type": "mlflow", "host": gate.tracking_uri, "password": "not-the-token"}
    monkeypatch.setenv("AIRFLOW_CONN_GATED", json.dumps(conn))
    retried: list[BaseException] = []
    failed: list[BaseException] = []
    dag_id = unique("bad_token")
    with DAG(dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
        MLflowModelVersionSensor(
            task_id="wait", model_name="churn", alias="champion", mlflow_conn_id="gated",
            deferrable=deferrable, poke_interval=0.3, timeout=120, retries=2,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=lambda context: retried.append(context["exception"]),
            on_failure_callback=lambda context: failed.append(context["exception"]),
        )  # fmt: skip
    run = airflow_home.dag_test(dag)

    assert states(run) == {"wait": "failed"}
    assert retried == [] and len(failed) == 1, (retried, failed)
    (ti,) = run.get_task_instances()
    assert ti.try_number == 1
    error = str(failed[0].__cause__ or failed[0])
    assert "401" in error or "UNAUTHENTICATED" in error, error
    assert "a bearer token is required" in error, error
    assert gate.refused, "the gate refused nothing: the sensor never asked the server"


def test_follow_champion_example_dag_records_a_manual_promotion(airflow_home, project: Path) -> None:
    """``dags/examples/follow_champion.py`` as shipped (only its poll interval shortened for the test)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "dags" / "examples" / "follow_champion.py"
    spec = importlib.util.spec_from_file_location(unique("follow_champion_example"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    dag.get_task("wait_for_new_champion").poke_interval = 0.5

    client = embedded_client(project)
    name = register_versions(client, 2, project)
    run_conf = {"model_name": name, "alias": "champion"}

    def promote() -> None:
        time.sleep(1)
        client.set_registered_model_alias(name, "champion", "2")

    with once_deferred(dag.dag_id, "wait_for_new_champion", promote) as deferred:
        run = airflow_home.dag_test(dag, run_conf=run_conf)

    assert deferred.is_set()
    assert states(run) == {"wait_for_new_champion": "success", "record_new_champion": "success"}
    recorded = xcom(run, "record_new_champion")
    assert recorded.startswith(f"{name} @champion: version 1 -> 2 (run ")


def test_sensor_refuses_what_it_could_not_do_before_any_run() -> None:
    from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

    with pytest.raises(ValueError, match=r"give alias .* or version"):
        MLflowModelVersionSensor(task_id="a", model_name="churn")
    with pytest.raises(ValueError, match="status must be one of READY"):
        MLflowModelVersionSensor(task_id="b", model_name="churn", version="1", status="Production")
    with pytest.raises(ValueError, match="reschedule mode cannot remember"):
        MLflowModelVersionSensor(task_id="c", model_name="churn", alias="champion", mode="reschedule")
    pinned = MLflowModelVersionSensor(
        task_id="d", model_name="churn", alias="champion", not_version="{{ params.v }}", mode="reschedule"
    )
    assert pinned.mode == "reschedule"
