#!/usr/bin/env python3
"""Load: N different pipelines triggered at once on the Celery deployment vs the same N one after another.

    .venv/bin/python bench/load_bench.py [--pipelines 20] [--concurrency 2] [--no-save]

Runs on the real deployment of the tests (``celery_stack`` in tests/fixtures/celery.py: Postgres, Redis,
api-server, scheduler, dag-processor, triggerer, an MLflow server on Postgres with S3 artifacts, an
``s3://`` workspace), measured in one run:

1. **celery** — two Celery workers (each its own project copy and home, ``--concurrency`` task slots
   each); N copies of the example pipeline (own names, experiments, models) triggered at once;
2. **local, sequential** — the same stack with the scheduler restarted on the LocalExecutor and no
   workers; N fresh copies triggered one after another, each waited for.

Checks, for both: every run succeeds; every model has exactly one version and it holds @champion; every
model's audit trail holds exactly one move of @champion (none lost or duplicated by concurrent writers).
Reports per phase: wall time, runs/min and tasks/min, the queued→running latency of every task instance
(p50/p95/max) and tries beyond the first; and the ratios celery / local. Writes
``bench/results/load-<date>.md`` unless ``--no-save``.

It is a pytest module (so it reuses the tests' service fixtures); running the file calls pytest on itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _parse_time(value: str | None) -> float | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _phase(stack: Any, names: list[str], *, at_once: bool) -> dict[str, Any]:
    """Trigger the pipelines (all, or one after another), wait, check, and measure."""
    from tests.fixtures.processes import wait_for

    from mlops_provider.stages.deploy import history

    token = stack.airflow.token()
    for name in names:  # every DAG parsed before the clock starts
        wait_for(lambda n=name: stack.airflow.request("GET", f"/api/v2/dags/{n}", token=token)[0] == 200,
                 what=f"DAG {name} parsed", timeout=300)  # fmt: skip
    started = time.monotonic()
    runs: dict[str, str] = {}
    if at_once:
        runs = {name: stack.trigger(name) for name in names}
        ended = {name: stack.wait_run(name, run_id, timeout=3600) for name, run_id in runs.items()}
    else:
        ended = {}
        for name in names:
            runs[name] = stack.trigger(name)
            ended[name] = stack.wait_run(name, runs[name], timeout=1200)
    wall = time.monotonic() - started

    failed = {name: run["state"] for name, run in ended.items() if run["state"] != "success"}
    latencies: list[float] = []
    retried: list[str] = []
    tasks = 0
    for name, run_id in runs.items():
        for task_id, ti in stack.task_instances(name, run_id).items():
            queued, start = _parse_time(ti.get("queued_when")), _parse_time(ti.get("start_date"))
            if ti["state"] == "success":
                tasks += 1
            if queued is not None and start is not None:
                latencies.append(max(0.0, start - queued))
            if int(ti.get("try_number") or 1) > 1:
                retried.append(f"{name}.{task_id} (try {ti['try_number']})")
    client = stack.mlflow.client()
    problems: list[str] = []
    for name in names:
        model = f"{name}_model"
        versions = client.search_model_versions(f"name = '{model}'")
        if len(versions) != 1:
            problems.append(f"{model}: {len(versions)} versions")
            continue
        holder = client.get_model_version_by_alias(model, "champion").version
        if str(holder) != str(versions[0].version):
            problems.append(f"{model}: @champion on v{holder}, not on v{versions[0].version}")
        moves = history(client, model_name=model, alias="champion")
        if len(moves) != 1:
            problems.append(f"{model}: {len(moves)} audit records of @champion")
    return {
        "runs": len(names), "tasks": tasks, "wall": wall, "failed": failed, "problems": problems,
        "retried": retried, "latencies": latencies,
        "runs_per_min": 60 * len(names) / wall, "tasks_per_min": 60 * tasks / wall,
        "p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95),
        "max": max(latencies, default=float("nan")),
    }  # fmt: skip


def _use_local_executor(stack: Any) -> None:
    """Restart the stack's scheduler on the LocalExecutor (same DB, MLflow server, S3 workspace)."""
    scheduler = next(s for s in stack.airflow.services if s.name == "scheduler")
    scheduler.stop()
    scheduler.env = {**(scheduler.env or {}), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    scheduler.start()
    from tests.fixtures.processes import http_get, wait_for

    def scheduler_healthy() -> bool:
        import json

        status, body = http_get(f"{stack.airflow.url}/api/v2/monitor/health")
        return status == 200 and json.loads(body).get("scheduler", {}).get("status") == "healthy"

    wait_for(scheduler_healthy, what="scheduler on the LocalExecutor", timeout=180)


def _report(celery: dict[str, Any], local: dict[str, Any], n: int, concurrency: int) -> str:
    def row(label: str, r: dict[str, Any]) -> str:
        return (f"| {label} | {r['runs']} | {r['tasks']} | {r['wall']:.0f} | {r['runs_per_min']:.2f} | "
                f"{r['tasks_per_min']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.1f} | "
                f"{len(r['retried'])} |")  # fmt: skip

    lines = [
        f"# Load benchmark — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"`bench/load_bench.py --pipelines {n} --concurrency {concurrency}`; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), load average before: {os.getloadavg()[0]:.2f}; "
        f"Python {platform.python_version()}.",
        "",
        "| phase | runs | tasks | wall s | runs/min | tasks/min | queued→running p50 s "
        "| p95 s | max s | retried |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row(f"celery, 2 workers x {concurrency} slots, all at once", celery),
        row("local executor, one after another", local),
        "",
        f"Ratios celery / local: wall {celery['wall'] / local['wall']:.2f}, "
        f"throughput (runs/min) {celery['runs_per_min'] / local['runs_per_min']:.2f}.",
        "",
        "Checks (both phases): every run succeeded; one model version per model, holding @champion; "
        "one audit record of @champion per model.",
    ]
    for label, r in (("celery", celery), ("local", local)):
        if r["retried"]:
            lines.append(f"- {label}: retried tasks: {', '.join(r['retried'])}")
    return "\n".join(lines) + "\n"


def test_load(celery_stack: Any) -> None:
    n = int(os.environ.get("MLOPS_LOAD_PIPELINES", "20"))
    concurrency = int(os.environ.get("MLOPS_LOAD_CONCURRENCY", "2"))
    stack = celery_stack
    stamp = datetime.now(timezone.utc).strftime("%H%M%S")
    parallel = [stack.add_pipeline(f"load_par_{stamp}_{i:02d}") for i in range(n)]
    for worker in ("load-a", "load-b"):  # after the specs: each worker copies the project when it starts
        stack.start_worker(worker, concurrency=concurrency)
    celery = _phase(stack, parallel, at_once=True)
    for worker in ("load-a", "load-b"):
        stack.stop_worker(worker)
    _use_local_executor(stack)
    sequential = [stack.add_pipeline(f"load_seq_{stamp}_{i:02d}") for i in range(n)]
    local = _phase(stack, sequential, at_once=False)
    report = _report(celery, local, n, concurrency)
    print("\n" + report)
    if os.environ.get("MLOPS_LOAD_SAVE", "1") == "1":
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"load-{datetime.now(timezone.utc):%Y-%m-%d}.md").write_text(report)
    for label, r in (("celery", celery), ("local", local)):
        assert not r["failed"], f"{label}: runs not successful: {r['failed']}"
        assert not r["problems"], f"{label}: {r['problems']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2, help="task slots per Celery worker")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    os.environ.update({
        "MLOPS_LOAD_PIPELINES": str(args.pipelines), "MLOPS_LOAD_CONCURRENCY": str(args.concurrency),
        "MLOPS_LOAD_SAVE": "0" if args.no_save else "1", "MLOPS_TEST_PREWARM": "0",
    })  # fmt: skip
    sys.path.insert(0, str(REPO))
    import pytest

    return int(pytest.main([__file__, "-p", "tests.conftest", "-s", "-q", "-p", "no:cacheprovider",
                            "-o", "timeout=7200", "--rootdir", str(REPO)]))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
