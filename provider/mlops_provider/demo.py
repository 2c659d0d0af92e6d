"""``make demo``: the example pipeline end to end through Airflow, twice, plus its orchestration overhead.

    python -m mlops_provider.demo [--project-root .] [--runs 2] [--skip-bench]

1. writes scikit-learn's bundled breast cancer data to ``include/data/breast_cancer.csv`` and a
   drifted "live" sample to ``include/data/breast_cancer_live.csv`` (for the monitor DAG), unless present;
2. runs the training DAG ``breast_cancer`` through Airflow (``dag.test()``, the metadata DB of
   ``AIRFLOW_HOME``) with the embedded MLflow store (``.mlops/``) twice: first as "last month's" spec
   (a small forest: ``dags/pipelines/breast_cancer.yaml`` with other ``train.params``, written to
   ``<AIRFLOW_HOME>/demo/``), then as committed, so the second candidate must beat the first one's
   ``@champion`` (a tie would keep it);
3. runs the batch-scoring DAG (``@champion`` scores the "live" sample into ``predictions/``) and the
   monitor DAG (Evidently drift of that sample; drift emits the asset that schedules retraining);
4. runs the same stages as one plain Python script (``bench/plain_pipeline.py``) on the same data and
   prints the orchestration overhead (Airflow wall time / plain wall time);
5. prints what happened and where to look.

Each task's log is where the Airflow UI reads it (``<AIRFLOW_HOME>/logs/``); every run's output also goes to
``<AIRFLOW_HOME>/demo-*.log``; the summary goes to the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_provider.inprocess.result import RunResult

SPEC = Path("dags/pipelines/breast_cancer.yaml")
DATA = Path("include/data")


#: what "last month's" spec trained: a forest small enough for today's spec to beat it
LAST_MONTHS_PARAMS = "params: {n_estimators: 3, max_depth: 1, random_state: 42}"


def last_months_spec(root: Path, home: Path) -> Path:
    """The example spec as it was "last month": the same pipeline with a weaker ``train.params``."""
    text = (root / SPEC).read_text()
    current = next(line for line in text.splitlines() if line.strip().startswith("params:"))
    older = text.replace(current, current[: len(current) - len(current.lstrip())] + LAST_MONTHS_PARAMS, 1)
    path = home / "demo" / SPEC.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(older)
    return path


def write_demo_data(root: Path) -> list[Path]:
    """The demo's CSV files; existing files are kept. Returns the files written."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    folder = root / DATA
    folder.mkdir(parents=True, exist_ok=True)
    frame = load_breast_cancer(as_frame=True).frame
    written = []
    training = folder / "breast_cancer.csv"
    if not training.exists():
        frame.to_csv(training, index=False)
        written.append(training)
    live = folder / "breast_cancer_live.csv"
    if not live.exists():
        # "this week's" measurements: a resample whose size features grew ~25% (a new scanner calibration)
        rng = np.random.default_rng(7)
        sample = frame.sample(n=300, replace=True, random_state=7).reset_index(drop=True)
        drifted = [
            c for c in sample.columns if any(w in c for w in ("radius", "perimeter", "area", "texture"))
        ]
        sample[drifted] = sample[drifted] * rng.normal(1.25, 0.05, size=(len(sample), len(drifted)))
        sample.to_csv(live, index=False)
        written.append(live)
    return written


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors too: Airflow's task logs) to ``path``."""
    from mlops_provider.inprocess.airflow import redirect_output

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log, redirect_output(log.fileno(), stderr_too=True):
        yield


def _say(text: str = "") -> None:
    print(text, flush=True)


def _airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


def run_plain_cold(root: Path, log: Path) -> dict[str, Any]:
    """``bench/plain_pipeline.py`` in a fresh Python process: first imports included, like DAG run 1."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, log.open("ab") as out:
        result_file = Path(tmp) / "result.json"
        subprocess.run(
            [
                sys.executable,
                str(root / "bench" / "plain_pipeline.py"),
                str(root / SPEC),
                "--project-root",
                str(root),
                "--json-out",
                str(result_file),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            cwd=root,
        )
        return json.loads(result_file.read_text())  # type: ignore[no-any-return]


def run_plain(root: Path) -> dict[str, Any]:
    """``bench/plain_pipeline.py`` in this process (its imports are warm, like the second DAG run's)."""
    import importlib.util

    path = root / "bench" / "plain_pipeline.py"
    spec = importlib.util.spec_from_file_location("plain_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(root / SPEC, project_root=root)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_provider.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--project-root", type=Path, default=Path.cwd())
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--skip-bench", action="store_true", help="do not run the plain-script comparison")
    args = parser.parse_args(argv)
    root = args.project_root.resolve()
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(root / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__MLOPS__PROJECT_ROOT", str(root))
    home = _airflow_home()
    started = time.perf_counter()

    for path in write_demo_data(root):
        _say(f"wrote {path.relative_to(root)}")

    from mlops_provider.inprocess.airflow import ensure_metadata_db
    from mlops_provider.run import run_spec

    _say(f"Airflow metadata DB: {home} ...")
    with output_to(home / "demo-setup.log"):
        created = ensure_metadata_db()
    _say("  created" if created else "  up to date")

    results = []
    for number in range(1, args.runs + 1):
        log = home / f"demo-run-{number}.log"
        spec, which = root / SPEC, f"as committed in {SPEC}"
        if number == 1 and args.runs > 1:
            spec, which = last_months_spec(root, home), f"last month's spec: {LAST_MONTHS_PARAMS}"
        _say(
            f"\nRun {number}/{args.runs}: DAG breast_cancer (ingest > validate > train > evaluate > register"
            f" > deploy), {which}; output: {log}"
        )
        with output_to(log):
            result = run_spec(spec, project_root=root)
        results.append(result)
        _say(result.summary())
        if not result.ok:
            _say(f"\nThe DAG run failed; read {log}")
            return 1

    # the rest of the lifecycle: score this week's data with @champion, then watch it for drift
    after: dict[str, RunResult] = {}
    for kind, what in (
        ("batch", "score include/data/breast_cancer_live.csv with @champion"),
        ("monitor", "drift of the same data against @champion's training data"),
    ):
        log = home / f"demo-{kind}.log"
        _say(f"\nDAG breast_cancer_{kind}: {what}; task logs: {log}")
        with output_to(log):
            result = run_spec(root / SPEC, dag=kind, project_root=root)
        after[kind] = result
        _say(result.summary())
        if not result.ok:
            _say(f"\nThe DAG run failed; read {log}")
            return 1

    plain = plain_cold = None
    if not args.skip_bench:
        log = home / "demo-plain.log"
        _say(
            f"\nSame stages as one plain Python script (bench/plain_pipeline.py), in a fresh process and "
            f"in this one; log: {log}"
        )
        plain_cold = run_plain_cold(root, log)
        _say(
            f"  fresh process: {plain_cold['seconds']:.1f} s, verdict {plain_cold['verdict']}, "
            f"{plain_cold['model_name']} v{plain_cold['version']}"
        )
        with output_to(log):
            plain = run_plain(root)
        _say(
            f"  this process:  {plain['seconds']:.1f} s, verdict {plain['verdict']}, "
            f"{plain['model_name']} v{plain['version']}"
        )

    from mlops_provider.hooks.mlflow import MLflowHook

    tracking = MLflowHook().tracking_uri
    last = results[-1]
    _say("\n" + "=" * 100)
    _say("Summary")
    for number, result in enumerate(results, 1):
        verdict = (result.verdict or {}).get("status", "?")
        promotion = result.promotion or {}
        _say(
            f"  run {number}: {result.state:<8} {result.seconds:6.1f} s  verdict {verdict:<8} "
            f"{result.model_name} v{result.model_version}  @{promotion.get('alias')} -> "
            f"v{promotion.get('version')} (previous: {promotion.get('previous_version') or 'none'})"
        )
    if last.verdict:
        for check in last.verdict.get("checks", []):
            _say(f"    gate {check['name']:<9} {check['reason']}: {'PASS' if check['passed'] else 'FAIL'}")
    scored = after["batch"].scored or {}
    if scored:
        _say(
            f"  batch:   {scored['rows']} rows scored by {scored['model_name']} v{scored['model_version']} "
            f"-> {scored['output_uri']}"
        )
    drift = after["monitor"].xcom.get("detect_drift") or {}
    if drift:
        retrain = next((t.state for t in after["monitor"].tasks if t.task_id == "request_retrain"), None)
        _say(
            f"  monitor: dataset drift {'YES' if drift.get('dataset_drift') else 'no'} "
            f"({drift.get('drift_share', 0):.0%} of {drift.get('number_of_columns')} columns drifted, "
            f"threshold {drift.get('drift_share_threshold', 0):.0%}); request_retrain {retrain}"
            + (" -> the scheduler would now queue a training run (asset x-mlops://breast_cancer/drift)"
               if retrain == "success" else "")
        )
    if plain is not None and plain_cold is not None:
        warm, cold = last.seconds, results[0].seconds
        _say(
            "  orchestration overhead (goal <= 1.5x), pipeline wall time through Airflow / as a plain script:"
        )
        tasks = len(last.tasks)
        _say(
            f"    steady state (warm process): {warm:.1f} s / {plain['seconds']:.1f} s = "
            f"{warm / plain['seconds']:.2f}x  (+{warm - plain['seconds']:.1f} s, "
            f"{(warm - plain['seconds']) / tasks:.2f} s per task)"
        )
        stages = ", ".join(f"{name} {seconds:.2f}" for name, seconds in plain["stages"].items())
        _say(f"      plain script per stage (s): {stages}")
        _say(
            f"    first run (cold imports):    {cold:.1f} s / {plain_cold['seconds']:.1f} s = "
            f"{cold / plain_cold['seconds']:.2f}x  (Airflow's includes starting dag.test's in-process API)"
        )
    _say(f"  total demo time: {time.perf_counter() - started:.0f} s")
    _say("\nWhere to look")
    _say(
        f"  MLflow:  .venv/bin/mlflow ui --backend-store-uri {tracking}   then http://localhost:5000"
        f"  (run {last.mlflow_run_id})"
    )
    port = 8080
    _say(
        f"  Airflow: PATH=$PWD/.venv/bin:$PATH AIRFLOW_HOME={home} "
        f"AIRFLOW__CORE__DAGS_FOLDER={root / 'dags'} AIRFLOW__CORE__LOAD_EXAMPLES=False "
        f"AIRFLOW__API__PORT={port} AIRFLOW__API__BASE_URL=http://localhost:{port} "
        f"AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:{port}/execution/ airflow standalone"
    )
    _say(f"           then http://localhost:{port} (another port: change all three {port}s); the task logs "
         "of these runs are in the UI")
    _say(f"  Output of each run: {home}/demo-*.log")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
