"""Follow manual promotions: wait for ``@champion`` to move, then act on the new version.

Someone promotes a version in the MLflow UI (Models -> version -> Aliases). The sensor waits in the
triggerer, without holding a worker slot, until ``@champion`` points at a version other than the one it
held when the run started, then hands that version's name, number, run and source to the next task. A
deploy DAG would roll the new champion out there; this one records it in the task log.

Trigger it by hand (``schedule=None``); the params pick another model or alias.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, task

from mlops_provider.sensors.mlflow import MLflowModelVersionSensor

with DAG(
    "follow_champion",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["mlops", "example"],
    params={"model_name": "breast_cancer_classifier", "alias": "champion"},
    doc_md=__doc__,
) as dag:
    new_champion = MLflowModelVersionSensor(
        task_id="wait_for_new_champion",
        model_name="{{ params.model_name }}",
        alias="{{ params.alias }}",
        deferrable=True,
        poke_interval=30,
        timeout=dt.timedelta(days=7),
    )

    @task
    def record_new_champion(model_version: dict[str, Any]) -> str:
        line = (
            f"{model_version['name']} @{model_version['alias']}: version {model_version['previous_version']} "
            f"-> {model_version['version']} (run {model_version['run_id']}, source {model_version['source']})"
        )
        print(line)
        return line

    record_new_champion(new_champion.output)
