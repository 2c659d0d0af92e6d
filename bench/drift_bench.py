"""Drift benchmark: the monitor's drift step vs Evidently's ``DataDriftPreset`` on the same data.

Generates a reference and a current table (N rows x C numeric columns, a third of the columns shifted),
writes them as parquet, then runs each side in a fresh subprocess, interleaved, and prints wall time,
peak RSS (``resource.getrusage``, the child's own maximum) and the ratios. Both children import the same
libraries before the clock starts and read the same parquet files.

- ``preset``: ``pd.read_parquet`` both files, ``Report([DataDriftPreset(drift_share=...)]).run(cur, ref)``.
- ``monitor``: what the DetectDriftOperator computes, without MLflow: ``TableColumns`` +
  ``detect_drift`` (each column tested once with Evidently's ``ValueDrift``, data-quality metrics, one
  merged Evidently snapshot) + writing the HTML report.

The two must agree on which columns drifted and on the dataset verdict; the bench fails otherwise.
Goal (follow-up issue): at 1M x 20, time <= 0.35x and peak RSS <= 0.6x the preset's.

    python bench/drift_bench.py --rows 100000            # while iterating
    python bench/drift_bench.py --rows 1000000 --repeat 1

Measured on the 2-core dev machine (shared, load ~3), Evidently 0.7.23, same verdicts (7 of 20 drifted):

    rows        preset              monitor            time ratio   memory ratio
    100,000     20.7-24.4 s, 495 MB  4.7-5.1 s, 345 MB   0.22         0.70 (imports alone: 285 MB)
    1,000,000   215.1 s, 1959 MB     43.0 s, 599 MB      0.20         0.31
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TIME_GOAL = 0.35
MEMORY_GOAL = 0.6


def generate(folder: Path, rows: int, columns: int, seed: int = 7) -> tuple[Path, Path]:
    """Reference: standard normals. Current: every third column shifted by 0.25 sd (drifts), rest the same."""
    reference = folder / f"reference_{rows}x{columns}.parquet"
    current = folder / f"current_{rows}x{columns}.parquet"
    if reference.exists() and current.exists():
        return reference, current
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(columns)]
    for path, shifted in ((reference, False), (current, True)):
        table = pa.table({
            name: rng.normal(loc=0.25 if shifted and i % 3 == 0 else 0.0, size=rows)
            for i, name in enumerate(names)
        })
        pq.write_table(table, path)
    return reference, current


CHILD = r"""
import json, resource, sys, tempfile, time
mode, reference, current, drift_share = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
import pandas as pd, pyarrow.parquet  # noqa: E401  the same imports on both sides before the clock starts
from evidently import Report
from evidently.presets import DataDriftPreset
from mlops_provider.stages.monitor import detect_drift
from mlops_provider.storage.tables import TableColumns
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "preset":
    cur, ref = pd.read_parquet(current), pd.read_parquet(reference)
    snapshot = Report([DataDriftPreset(drift_share=drift_share)], include_tests=True).run(cur, ref)
    results = snapshot.dict()["metrics"]
    count = next(m for m in results if m["metric_name"].startswith("DriftedColumnsCount"))["value"]
    drifted = []
    for metric in snapshot.metric_results.values():
        for test in metric.tests:
            if test.name.startswith("Value Drift for column ") and test.status.value == "FAIL":
                drifted.append(test.name.removeprefix("Value Drift for column "))
    verdict = {"dataset_drift": count["share"] >= drift_share, "drifted": sorted(drifted),
               "drifted_count": int(count["count"])}
else:
    result = detect_drift(TableColumns(current), TableColumns(reference), drift_share=drift_share)
    with tempfile.TemporaryDirectory() as tmp:
        result.snapshot.save_html(f"{tmp}/report.html")
    verdict = {"dataset_drift": result.dataset_drift, "drifted": sorted(result.drifted_columns),
               "drifted_count": len(result.drifted_columns)}
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "seconds": seconds, "peak_mb": peak / 1024, "baseline_mb": baseline / 1024,
                  **verdict}))
"""


def run_child(mode: str, reference: Path, current: Path, drift_share: float) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(reference), str(current), str(drift_share)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs of each side")
    parser.add_argument("--drift-share", type=float, default=0.3)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlops-drift-bench")
    parser.add_argument("--check-goal", action="store_true", help="exit 1 if a goal is missed")
    parser.add_argument("--only", choices=("preset", "monitor"), help="run one side (no ratios)")
    args = parser.parse_args(argv)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    reference, current = generate(args.data_dir, args.rows, args.columns)
    print(f"data: {args.rows:,} rows x {args.columns} numeric columns (every third shifted), parquet in "
          f"{args.data_dir}", flush=True)
    runs: dict[str, list[dict]] = {"preset": [], "monitor": []}
    for i in range(args.repeat):
        order = ("preset", "monitor") if i % 2 == 0 else ("monitor", "preset")
        order = tuple(m for m in order if args.only in (None, m))
        for mode in order:
            result = run_child(mode, reference, current, args.drift_share)
            runs[mode].append(result)
            print(f"  {mode:8s} {result['seconds']:8.2f} s  peak {result['peak_mb']:7.0f} MB "
                  f"(after imports {result['baseline_mb']:.0f} MB)  drifted {result['drifted_count']}",
                  flush=True)

    if args.only:
        return 0
    preset, monitor = runs["preset"][-1], runs["monitor"][-1]
    if (preset["drifted"], preset["dataset_drift"]) != (monitor["drifted"], monitor["dataset_drift"]):
        print(f"VERDICTS DIFFER: preset {preset['drifted']} / {preset['dataset_drift']}, "
              f"monitor {monitor['drifted']} / {monitor['dataset_drift']}")
        return 2
    time_ratio = statistics.median(m["seconds"] for m in runs["monitor"]) / statistics.median(
        p["seconds"] for p in runs["preset"])
    memory_ratio = statistics.median(m["peak_mb"] for m in runs["monitor"]) / statistics.median(
        p["peak_mb"] for p in runs["preset"])
    print(f"same verdicts: {monitor['drifted_count']} of {args.columns} columns drifted "
          f"({', '.join(monitor['drifted'])}), dataset drift {monitor['dataset_drift']}")
    print(f"time   monitor/preset = {time_ratio:.3f}  (goal <= {TIME_GOAL})  "
          f"{'OK' if time_ratio <= TIME_GOAL else 'MISSED'}")
    print(f"memory monitor/preset = {memory_ratio:.3f}  (goal <= {MEMORY_GOAL})  "
          f"{'OK' if memory_ratio <= MEMORY_GOAL else 'MISSED'}")
    if args.check_goal and (time_ratio > TIME_GOAL or memory_ratio > MEMORY_GOAL):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
