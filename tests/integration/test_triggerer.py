"""A deferred task waits in Airflow's real triggerer: the ``airflow_server`` fixture's api-server, scheduler,
triggerer and LocalExecutor (``dag.test()`` would run the trigger inline, in its own process).

``ingest.wait`` on a source that has not arrived: the task defers, the triggerer process picks its trigger
up (the REST API names the trigger and the triggerer job), the file arrives, the task resumes and the run
completes.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.processes import wait_for
from tests.integration._e2e_helpers import unique
from tests.integration._stage_helpers import pipeline_runs

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _late_source_spec(server: AirflowServer, name: str) -> str:
    text = (server.pipelines_folder / "breast_cancer.yaml").read_text()
    text = (
        text.replace("name: breast_cancer", f"name: {name}", 1)
        .replace("experiment: breast_cancer", f"experiment: {name}", 1)
        .replace("model: breast_cancer_classifier", f"model: {name}_model", 1)
        .replace("source: include/data/breast_cancer.csv",
                 f"source: include/data/{name}.csv\n  wait: {{timeout: 10m, poke_interval: 1s}}", 1)
    )  # fmt: skip
    assert f"include/data/{name}.csv" in text
    return text[: text.index("\ndeploy:")] + "\ndeploy:\n  alias: champion\n"


def test_a_task_waiting_for_its_source_is_deferred_to_the_triggerer_and_resumes(
    airflow_server: AirflowServer,
) -> None:
    server = airflow_server
    name = unique("late_source")
    data = server.project_root / "include" / "data"
    with server.pipeline_spec(name, _late_source_spec(server, name)):
        run_id = server.trigger(name)
        ingest: dict[str, Any] = {}

        def waiting_in_the_triggerer() -> bool:
            status, body = server.request("GET", f"{server.run_path(name, run_id)}/taskInstances/ingest")
            ingest.clear()
            ingest.update(body if status == 200 else {})
            return (
                ingest.get("state") == "deferred"
                and (ingest.get("trigger") or {}).get("classpath", "").endswith("FileTrigger")
                and ingest.get("triggerer_job") is not None
            )

        wait_for(waiting_in_the_triggerer, what="ingest deferred and its trigger run by the triggerer",
                 timeout=300)  # fmt: skip
        assert ingest["triggerer_job"]["job_type"] == "TriggererJob", ingest["triggerer_job"]
        assert server.task_states(name, run_id)["train"] in (None, "none", "scheduled", "queued")

        shutil.copy(data / "breast_cancer.csv", data / f"{name}.csv")  # the data arrives
        server.wait_run(name, run_id, timeout=600)
    states = server.task_states(name, run_id)
    assert set(states.values()) == {"success"}, states
    status, ti = server.request("GET", f"{server.run_path(name, run_id)}/taskInstances/ingest")
    assert status == 200 and ti["try_number"] == 1, ti
    (run,) = pipeline_runs(server.mlflow.client(), name)
    assert run.info.status == "FINISHED"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {f"{name}-training", f"{name}-testing"}
