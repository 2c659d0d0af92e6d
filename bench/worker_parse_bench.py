#!/usr/bin/env python3
"""What a worker pays to parse the loader file before it runs one task, per DAG kind.

    .venv/bin/python bench/worker_parse_bench.py [--n 300] [--reps 5]

Writes N specs that enable every DAG kind (training, ``_monitor``, ``_batch``, ``_serve``) plus the two DAG
files into a temporary dags folder, then times, in fresh interpreters (``airflow.sdk`` imported first, as
the task runner has it), Airflow's ``BundleDagBag`` over ``ml_pipelines.py``:

- the full parse (no parsing context: what the dag processor does), and
- the parse a worker does to run a task of pipeline 0's DAG of each kind: the task runner sets Airflow's
  parsing context (``_AIRFLOW_PARSING_CONTEXT_DAG_ID``/``TASK_ID``), and the loader then reads and builds
  only that pipeline's spec.

Prints the median time of each and its ratio to the full parse in the same run. The goal (issue 8): a
worker parse of any kind costs the same as one of the training DAG, at most 0.25x a full parse.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SPEC = """\
version: 1
name: {name}
task: classification
schedule: "@daily"
start_date: 2026-01-01
ingest: {{source: include/data/{name}.csv, target: label}}
train: {{estimator: sklearn.ensemble.RandomForestClassifier, params: {{n_estimators: 50}}}}
deploy:
  alias: champion
  batch: {{schedule: "@daily", input: "include/live/{name}.csv", output: "predictions/{name}.parquet"}}
  targets:
    - {{type: docker, image: mlflow-serving:1, port: 5001}}
monitor: {{schedule: "@daily", drift: {{share: 0.3}}}}
"""

PROBE = """
import json, os, sys, time
import airflow.sdk  # the task runner has the SDK loaded before it parses
from airflow.dag_processing.dagbag import BundleDagBag
path = sys.argv[1]
started = time.perf_counter()
bag = BundleDagBag(dag_folder=path, bundle_path=os.path.dirname(path), bundle_name="dags-folder")
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "dags": len(bag.dag_ids), "errors": sorted(bag.import_errors)}))
"""


def write_folder(root: Path, n: int) -> Path:
    dags = root / "dags"
    (dags / "pipelines").mkdir(parents=True)
    for name in ("ml_pipelines.py", "ml_pipelines_spec_errors.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    for i in range(n):
        (dags / "pipelines" / f"p{i:04d}.yaml").write_text(SPEC.format(name=f"p{i:04d}"))
    return dags


def parse(dags: Path, dag_id: str | None, task_id: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(dags.parent / "home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__MLOPS__PROJECT_ROOT=str(dags.parent),
    )
    if dag_id:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
        env["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] = task_id or ""
    done = subprocess.run([sys.executable, "-c", PROBE, str(dags / "ml_pipelines.py")], env=env,
                          capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    cases = {
        "full parse (dag processor)": (None, None),
        "worker: training task": ("p0000", "train"),
        "worker: _monitor task": ("p0000_monitor", "detect_drift"),
        "worker: _batch task": ("p0000_batch", "score"),
        "worker: _serve task": ("p0000_serve", "sync_serving"),
    }
    with tempfile.TemporaryDirectory(prefix="mlops-worker-bench-") as tmp:
        dags = write_folder(Path(tmp), args.n)
        for dag_id, task_id in cases.values():  # warm-up: bytecode and the spec cache
            parse(dags, dag_id, task_id)
        times: dict[str, list[float]] = {label: [] for label in cases}
        dag_counts: dict[str, int] = {}
        for rep in range(args.reps):
            order = list(cases.items())
            for label, (dag_id, task_id) in order if rep % 2 == 0 else reversed(order):
                result = parse(dags, dag_id, task_id)
                assert not result["errors"], result
                times[label].append(result["seconds"])
                dag_counts[label] = result["dags"]
    full = statistics.median(times["full parse (dag processor)"])
    print(f"{args.n} specs x 4 DAG kinds, {args.reps} reps, medians (Python {sys.version.split()[0]})")
    print(f"{'case':<30} {'seconds':>8} {'DAGs':>5} {'x full':>7}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:<30} {median:8.3f} {dag_counts[label]:5d} {median / full:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
