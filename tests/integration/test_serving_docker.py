"""Docker serving target: MLflow's model server in a container, health-checked before the alias moves.

Real dockerd (``docker_engine``: a local image with python3; the host's Python and venv bind-mounted
read-only, so ``mlflow models serve`` runs inside without pulling or installing anything), real MLflow
(the embedded store of a throw-away project), real Airflow (``dag.test()``) and the real ``mlops`` CLI.
Each test removes the containers of its target at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._e2e_helpers import (
    alias_holder,
    edit_spec,
    embedded_client,
    fluent_uris,
    make_project,
    serving_dag,
    unique,
)

pytestmark = pytest.mark.integration

LABEL_TARGET = "mlops.target"


def _port_pair() -> int:
    """A port whose successor is free too (the two blue/green slots), both below the kernel's ephemeral
    range: the containers bind them seconds later, and in between the kernel hands ephemeral ports to every
    outgoing connection and to the other fixtures' ``free_port()`` — never these."""
    import random

    low, _ = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low - 1)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("0.0.0.0", port))
                second.bind(("0.0.0.0", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports below the ephemeral range")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_engine: Any) -> Path:
    root = make_project(tmp_path, monkeypatch, "wine_classifier.yaml")
    # the engine mounts the host's Python and venv: let a spec name them (the mount policy of the runner)
    monkeypatch.setenv(
        "AIRFLOW__MLOPS__DOCKER_ALLOWED_MOUNTS", ",".join(m["Source"] for m in docker_engine.mounts)
    )
    return root


@pytest.fixture
def target(docker_engine: Any) -> Iterator[dict[str, Any]]:
    """A docker target running this venv's mlflow inside the test image, on the host network."""
    name = unique("serving").replace("_", "-")
    yield {
        "type": "docker",
        "name": name,
        "image": docker_engine.image,
        "python": docker_engine.python,
        "port": _port_pair(),
        "docker_url": docker_engine.docker_url,
        "network_mode": "host",
        "mem_limit": "1g",
        "cpus": 1.0,
        "environment": docker_engine.environment,
        "mounts": [f"{m['Source']}:{m['Target']}:ro" for m in docker_engine.mounts],
        "health": {"rows": 10, "timeout": "120s"},
    }
    cli = docker_engine.client().api
    for container in cli.containers(all=True, filters={"label": f"{LABEL_TARGET}={name}"}):
        cli.remove_container(container["Id"], force=True)


def _containers(docker_engine: Any, name: str) -> list[dict[str, Any]]:
    cli = docker_engine.client().api
    found = cli.containers(all=True, filters={"label": f"{LABEL_TARGET}={name}"})
    return sorted(
        (
            {
                "id": c["Id"],
                "name": c["Names"][0].lstrip("/"),
                "version": c["Labels"]["mlops.model_version"],
                "state": c["State"],
            }
            for c in found
        ),
        key=lambda c: c["name"],
    )


def _predict(url: str, rows: list[dict[str, Any]]) -> list[Any]:
    import pandas as pd
    import requests

    frame = pd.DataFrame(rows)
    payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    response = requests.post(f"{url}/invocations", json=payload, timeout=30)
    response.raise_for_status()
    return list(response.json()["predictions"])


def _events(docker_engine: Any, name: str, since: dt.datetime) -> list[tuple[int, str, str]]:
    """(time in ns, action, container name) of the target's containers since ``since``."""
    cli = docker_engine.client().api
    # docker-py sends whole seconds: `until=now` would drop the events of the current second (v1's stop comes
    # last, just before this call), so ask up to 2 s ahead (the call waits until then)
    events = cli.events(
        since=since, until=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2), decode=True,
        filters={"type": "container", "label": f"{LABEL_TARGET}={name}"},
    )  # fmt: skip
    return [(int(e["timeNano"]), e["Action"], e["Actor"]["Attributes"]["name"]) for e in events]


def test_deploy_health_checks_then_swaps_and_a_failed_check_changes_nothing(
    airflow_home: Any, docker_engine: Any, project: Path, target: dict[str, Any]
) -> None:
    from mlops_provider.run import run_dag
    from mlops_provider.stages.deploy import history

    name, port = target["name"], target["port"]
    model, experiment, dag_id = unique("bc"), unique("exp"), unique("serve")
    client = embedded_client(project)
    rows = [{c: 1.0 for c in _feature_names()}]

    first = run_dag(serving_dag(dag_id, experiment, model, target, 0))
    assert first.ok, first.failure
    assert first.xcom["deploy"]["serving"] == {f"docker:{name}": f"http://127.0.0.1:{port}"}
    assert alias_holder(client, model, "champion") == "1"
    live = _containers(docker_engine, name)
    assert [(c["name"], c["version"], c["state"]) for c in live] == [(f"{name}-v1", "1", "running")]
    tags = client.get_registered_model(model).tags
    assert tags[f"mlops.serving.docker:{name}.url"] == f"http://127.0.0.1:{port}"
    assert tags[f"mlops.serving.docker:{name}.version"] == "1"
    with fluent_uris(client.tracking_uri):
        import mlflow.pyfunc

        own = mlflow.pyfunc.load_model(f"models:/{model}/1").predict(_frame(rows)).tolist()
    assert _predict(f"http://127.0.0.1:{port}", rows) == own

    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    second = run_dag(serving_dag(dag_id, experiment, model, target, 1))
    assert second.ok, second.failure
    # the other slot: the old container kept serving on its port until the new one was healthy
    assert second.xcom["deploy"]["serving"] == {f"docker:{name}": f"http://127.0.0.1:{port + 1}"}
    assert alias_holder(client, model, "champion") == "2"
    assert [(c["name"], c["version"]) for c in _containers(docker_engine, name)] == [(f"{name}-v2", "2")]
    events = _events(docker_engine, name, started)
    v2_started = min(t for t, action, who in events if action == "start" and who == f"{name}-v2-candidate")
    v1_stopped = min(t for t, action, who in events if action in ("kill", "die") and who == f"{name}-v1")
    answered = _answered_at(docker_engine, _containers(docker_engine, name)[0]["id"])
    assert v2_started < answered < v1_stopped, (events, answered)
    with fluent_uris(client.tracking_uri):
        own_v2 = mlflow.pyfunc.load_model(f"models:/{model}/2").predict(_frame(rows)).tolist()
    assert _predict(f"http://127.0.0.1:{port + 1}", rows) == own_v2
    moves = history(client, model_name=model)
    assert [m["version"] for m in moves] == ["1", "2"]
    assert moves[-1]["serving"] == [f"docker:{name}"]

    # a target that cannot serve (the image's own python3 has no mlflow): the alias and v2 stay
    broken = {**target, "python": "/usr/bin/python3", "environment": {}}
    third = run_dag(serving_dag(dag_id, experiment, model, broken, 2))
    assert third.state == "failed"
    error = third.task("deploy").error
    assert f"docker:{name}: v3 at http://127.0.0.1:{port}" in error
    assert "exited with code 1 before it was healthy" in error and "No module named mlflow" in error
    assert alias_holder(client, model, "champion") == "2"
    after = _containers(docker_engine, name)
    assert [(c["name"], c["version"], c["state"]) for c in after] == [(f"{name}-v2", "2", "running")]
    assert _predict(f"http://127.0.0.1:{port + 1}", rows) == own_v2
    assert client.get_registered_model(model).tags[f"mlops.serving.docker:{name}.version"] == "2"
    assert [m["version"] for m in history(client, model_name=model)] == ["1", "2"]  # no move recorded


def _feature_names() -> list[str]:
    from sklearn.datasets import load_breast_cancer

    return [str(c) for c in load_breast_cancer(as_frame=True).feature_names]


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)


def _answered_at(docker_engine: Any, container_id: str) -> int:
    """When the container first answered ``/invocations`` (ns, from its access log's timestamps)."""
    logs = docker_engine.client().api.logs(container_id, timestamps=True).decode()
    for line in logs.splitlines():
        if "POST /invocations" in line:
            stamp = line.split(" ", 1)[0]  # RFC 3339 with nanoseconds
            seconds, _, fraction = stamp.rstrip("Z").partition(".")
            base = dt.datetime.fromisoformat(seconds).replace(tzinfo=dt.timezone.utc)
            return int(base.timestamp()) * 10**9 + int(fraction.ljust(9, "0")[:9])
    raise AssertionError(f"no /invocations request in the container's log:\n{logs[-2000:]}")


def _constant_versions(root: Path, model: str, constants: list[int]) -> Any:
    """Registered versions of constant classifiers (v1 answers constants[0], ...), with a signature."""
    import pandas as pd
    from sklearn.dummy import DummyClassifier

    from mlops_provider.stages.train import log_model

    client = embedded_client(root)
    (root / ".mlops").mkdir(exist_ok=True)
    artifacts = (root / ".mlops" / "artifacts").as_uri()
    run_id = client.create_run(
        client.create_experiment(unique("exp"), artifact_location=artifacts)
    ).info.run_id
    client.create_registered_model(model)
    x = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    with fluent_uris(client.tracking_uri):
        for constant in constants:
            estimator = DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1, 2])
            info = log_model(estimator, x, mlflow_run_id=run_id)
            client.create_model_version(model, source=info.model_uri, run_id=run_id, model_id=info.model_id)
    client.set_terminated(run_id)
    return client


def test_rollback_and_a_manual_alias_move_take_the_serving_container_along(
    airflow_home: Any, docker_engine: Any, project: Path, target: dict[str, Any]
) -> None:
    import logging

    from typer.testing import CliRunner

    from mlops_provider import cli
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.run import run_spec
    from mlops_provider.serving.follow import follow
    from mlops_provider.stages.deploy import promote

    model, name, port = "wine_cultivar", target["name"], target["port"]
    (project / "include" / "sample.csv").write_text("x\n0.5\n1.5\n")
    spec = project / "dags" / "pipelines" / "wine_classifier.yaml"
    serving = {**target, "health": {**target["health"], "sample": "include/sample.csv"}}
    edit_spec(spec, deploy={"alias": "champion", "targets": [serving]})
    client = _constant_versions(project, model, [0, 1])
    hook = MLflowHook()
    passed = {"passed": True, "reason": "every gate passed (test)"}
    for version in ("1", "2"):
        follow(
            hook, model_name=model, version=version, pipeline="wine_classifier", targets=[serving],
            move_alias=lambda names, v=version: promote(
                client, model_name=model, version=v, alias="champion", verdict=passed,
                promoted_by="test", dag_id="wine_classifier", dag_run_id=f"manual__{v}", serving=names,
            ),
            log=logging.getLogger("test"),
        )  # fmt: skip
    assert alias_holder(client, model, "champion") == "2"
    assert [(c["name"], c["state"]) for c in _containers(docker_engine, name)] == [(f"{name}-v2", "running")]
    assert _predict(f"http://127.0.0.1:{port + 1}", [{"x": 0.5}]) == [1]

    rolled = CliRunner().invoke(cli.app, ["rollback", str(spec), "--reason", "v2 misbehaves"])
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.splitlines() == [
        f"{model}@champion: v2 -> v1",
        f"docker:{name}: serving v1 at http://127.0.0.1:{port}",
    ]
    assert alias_holder(client, model, "champion") == "1"
    live = _containers(docker_engine, name)
    assert [(c["name"], c["version"], c["state"]) for c in live] == [(f"{name}-v1", "1", "running")]
    assert _predict(f"http://127.0.0.1:{port}", [{"x": 0.5}, {"x": 9.0}]) == [0, 0]

    shown = CliRunner().invoke(cli.app, ["history", str(spec), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    moves = json.loads(shown.stdout)["moves"]
    assert [(m["from"], m["to"], m["serving"]) for m in moves] == [
        (None, "1", [f"docker:{name}"]),
        ("1", "2", [f"docker:{name}"]),
        ("2", "1", [f"docker:{name}"]),
    ]
    assert moves[2]["why"] == "v2 misbehaves" and moves[2]["who"].startswith("mlops rollback (")

    # a person moves the alias in MLflow: the <name>_serve DAG makes the container follow
    client.set_registered_model_alias(model, "champion", "2")
    synced = run_spec(spec, dag="serve")
    assert synced.ok, synced.failure
    assert synced.xcom["served_version"] == {"version": "1", "targets": {f"docker:{name}": "1"}}
    assert synced.xcom["wait_for_alias"]["version"] == "2"
    assert synced.xcom["sync_serving"]["serving"] == {f"docker:{name}": f"http://127.0.0.1:{port + 1}"}
    live = _containers(docker_engine, name)
    assert [(c["name"], c["version"], c["state"]) for c in live] == [(f"{name}-v2", "2", "running")]
    assert _predict(f"http://127.0.0.1:{port + 1}", [{"x": 0.5}]) == [1]
    assert alias_holder(client, model, "champion") == "2"  # the DAG follows the alias, never moves it

    # a rollback whose target fails its check (the image's python3 has no mlflow): exit 1 naming the
    # target and why, nothing moved, nothing recorded, the live container untouched and still serving
    def recorded() -> list[dict[str, Any]]:
        shown = CliRunner().invoke(cli.app, ["history", str(spec), "--format", "json"])
        return list(json.loads(shown.stdout)["moves"])

    moves = recorded()
    broken = {**serving, "python": "/usr/bin/python3", "environment": {}}
    edit_spec(spec, deploy={"alias": "champion", "targets": [broken]})
    refused = CliRunner().invoke(cli.app, ["rollback", str(spec), "--reason", "try v1 again"])
    assert refused.exit_code == 1, refused.output
    assert f"docker:{name}: v1" in refused.output and "No module named mlflow" in refused.output
    assert f"{model}@champion did not move" in refused.output
    assert alias_holder(client, model, "champion") == "2"
    live = _containers(docker_engine, name)
    assert [(c["name"], c["version"], c["state"]) for c in live] == [(f"{name}-v2", "2", "running")]
    assert _predict(f"http://127.0.0.1:{port + 1}", [{"x": 0.5}]) == [1]
    assert recorded() == moves


def test_bridge_network_blue_green_publishes_each_slot_and_the_live_one_restarts_by_itself(
    airflow_home: Any, docker_engine: Any, project: Path, target: dict[str, Any]
) -> None:
    """The README's `network_mode: bridge` example: each slot is published on the host (port bindings, not
    the host network), the check and the clients go through the published port, the live container has
    the restart policy and the spec's limits, as the engine itself reports them (docker inspect)."""
    from mlops_provider.run import run_dag

    name, port = target["name"], target["port"]
    bridge = {**target, "network_mode": "bridge"}
    model, experiment, dag_id = unique("bc"), unique("exp"), unique("serve")
    client = embedded_client(project)
    rows = [{c: 1.0 for c in _feature_names()}]
    cli = docker_engine.client().api

    def live_container() -> dict[str, Any]:
        (only,) = _containers(docker_engine, name)
        return cli.inspect_container(only["id"])  # type: ignore[no-any-return]

    for step, slot in ((0, port), (1, port + 1)):
        result = run_dag(serving_dag(dag_id, experiment, model, bridge, step))
        assert result.ok, result.failure
        version = str(step + 1)
        assert result.xcom["deploy"]["serving"] == {f"docker:{name}": f"http://127.0.0.1:{slot}"}
        assert alias_holder(client, model, "champion") == version
        inspected = live_container()
        host = inspected["HostConfig"]
        assert inspected["Name"] == f"/{name}-v{version}"
        assert host["NetworkMode"] == "bridge"
        assert host["PortBindings"] == {f"{slot}/tcp": [{"HostIp": "", "HostPort": str(slot)}]}
        assert inspected["NetworkSettings"]["Ports"][f"{slot}/tcp"][0]["HostPort"] == str(slot)
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert host["Memory"] == 1024**3 and host["NanoCpus"] == 10**9
        with fluent_uris(client.tracking_uri):
            import mlflow.pyfunc

            own = mlflow.pyfunc.load_model(f"models:/{model}/{version}").predict(_frame(rows)).tolist()
        assert _predict(f"http://127.0.0.1:{slot}", rows) == own

    # the restart policy is the engine's: the container's process dies (killed from the host, as the OOM
    # killer would; `docker kill` would count as a manual stop), the engine starts the container again
    import os
    import signal

    from tests.fixtures.processes import wait_for

    inspected = live_container()
    restarts = inspected["RestartCount"]
    os.kill(inspected["State"]["Pid"], signal.SIGKILL)

    wait_for(lambda: live_container()["RestartCount"] > restarts and live_container()["State"]["Running"],
             what="the engine restarting the live container", timeout=60)  # fmt: skip

    def answers() -> bool:
        try:
            return bool(_predict(f"http://127.0.0.1:{port + 1}", rows))
        except Exception:
            return False

    wait_for(answers, what="the restarted container serving again", timeout=120)


#: a "model server" that answers /ping and answers every row 0 (a container serving the wrong model)
_LIAR = """
import http.server, json, sys

port = int(sys.argv[sys.argv.index("-p") + 1])


class Liar(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"predictions": [0] * len(body["dataframe_split"]["data"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


http.server.HTTPServer(("0.0.0.0", port), Liar).serve_forever()
"""


def test_wrong_answers_a_silent_container_and_one_failing_target_of_two_change_nothing(
    airflow_home: Any, docker_engine: Any, project: Path, target: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Real containers that misbehave, each as the `python` that runs the server: one answers /ping but
    every row wrong, one never answers /ping. With two targets of which one fails, neither switches: the
    healthy target keeps serving v1 with its candidate removed, and the alias stays."""
    from mlops_provider.run import run_dag

    fakes = tmp_path / "fakes"
    fakes.mkdir()
    (fakes / "liar.py").write_text(_LIAR)
    for name, script in (("liar", 'exec /usr/bin/python3 /fakes/liar.py "$@"'), ("silent", "exec sleep 600")):
        (fakes / name).write_text(f"#!/bin/sh\n{script}\n")
        (fakes / name).chmod(0o755)
    allowed = os.environ["AIRFLOW__MLOPS__DOCKER_ALLOWED_MOUNTS"]
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_ALLOWED_MOUNTS", f"{allowed},{fakes}")
    fake = {**target, "environment": {}, "mounts": [f"{fakes}:/fakes:ro"],
            "health": {"rows": 10, "timeout": "10s"}}  # fmt: skip
    ports = {target["port"], target["port"] + 1}
    pairs = []
    while len(pairs) < 2:  # slots of their own: none of the three targets' ports may coincide
        pair = _port_pair()
        if not {pair, pair + 1} & ports:
            ports |= {pair, pair + 1}
            pairs.append(pair)
    liar = {**fake, "name": f"{target['name']}-liar", "python": "/fakes/liar", "port": pairs[0]}
    silent = {**fake, "name": f"{target['name']}-silent", "python": "/fakes/silent", "port": pairs[1]}
    name, port = target["name"], target["port"]
    model, experiment, dag_id = unique("bc"), unique("exp"), unique("serve")
    client = embedded_client(project)
    rows = [{c: 1.0 for c in _feature_names()}]
    cli = docker_engine.client().api
    try:
        assert run_dag(serving_dag(dag_id, experiment, model, target, 0)).ok
        (v1,) = _containers(docker_engine, name)
        served_v1 = _predict(f"http://127.0.0.1:{port}", rows)

        both = serving_dag(dag_id, experiment, model, target, 1)
        both.get_task("deploy").targets = [target, liar]
        wrong = run_dag(both)
        assert wrong.state == "failed"
        error = wrong.task("deploy").error  # type: ignore[union-attr]
        assert f"docker:{liar['name']}: v2" in error and "sample rows differently" in error, error
        assert alias_holder(client, model, "champion") == "1"
        assert _containers(docker_engine, name) == [v1], "the healthy target switched or kept its candidate"
        assert _containers(docker_engine, liar["name"]) == []
        assert _predict(f"http://127.0.0.1:{port}", rows) == served_v1

        quiet = serving_dag(dag_id, experiment, model, silent, 2)
        never = run_dag(quiet)
        assert never.state == "failed"
        error = never.task("deploy").error  # type: ignore[union-attr]
        assert f"docker:{silent['name']}: v3" in error and "did not answer /ping within" in error, error
        assert alias_holder(client, model, "champion") == "1"
        assert _containers(docker_engine, silent["name"]) == []
        assert _containers(docker_engine, name) == [v1]
    finally:
        for extra in (liar, silent):
            for container in cli.containers(all=True, filters={"label": f"{LABEL_TARGET}={extra['name']}"}):
                cli.remove_container(container["Id"], force=True)


def test_redeploying_the_live_version_only_checks_it_again(
    airflow_home: Any, docker_engine: Any, project: Path, target: dict[str, Any]
) -> None:
    """The version already live is health-checked where it runs (no candidate container, nothing stopped)
    and the alias callback runs; if the live container no longer answers, that fails and changes nothing."""
    import logging

    from mlops_provider.exceptions import DeploymentCheckError
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.serving.follow import follow

    model, name = "wine_cultivar", target["name"]
    (project / "include" / "sample.csv").write_text("x\n0.5\n1.5\n")
    serving = {**target, "health": {**target["health"], "sample": "include/sample.csv"}}
    _constant_versions(project, model, [1])
    hook = MLflowHook()
    moved: list[list[str]] = []

    def deploy(config: dict[str, Any]) -> None:
        follow(hook, model_name=model, version="1", pipeline="wine_classifier", targets=[config],
               move_alias=moved.append, log=logging.getLogger("test"))  # fmt: skip

    deploy(serving)
    (live,) = _containers(docker_engine, name)
    cli = docker_engine.client().api
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    checked_before = cli.logs(live["id"]).decode().count("POST /invocations")

    deploy(serving)
    assert moved == [[f"docker:{name}"], [f"docker:{name}"]]
    assert _containers(docker_engine, name) == [live]
    lifecycle = {"create", "start", "kill", "die", "stop", "destroy"}
    assert not {action for _, action, _ in _events(docker_engine, name, since)} & lifecycle
    assert cli.logs(live["id"]).decode().count("POST /invocations") == checked_before + 1  # re-checked there

    cli.pause(live["id"])  # the live container stops answering
    try:
        quick = {**serving, "health": {**serving["health"], "timeout": "5s"}}
        with pytest.raises(DeploymentCheckError, match="did not answer /ping within"):
            deploy(quick)
    finally:
        cli.unpause(live["id"])
    assert len(moved) == 2, "the alias callback ran although the check failed"
    assert [c["id"] for c in _containers(docker_engine, name)] == [live["id"]]
