"""Batch scoring benchmark: the batch stage vs a raw ``model.predict`` loop over the same parquet file.

Generates N rows x C numeric features plus an ``id`` key column (parquet, row groups of 100,000 rows)
and, for the ``transform`` model, the same with the last 5 features strings (8-12 levels, 1% missing);
trains each model on a 20,000-row sample, logs it to a throw-away embedded MLflow store (registered,
``@champion``), then times, interleaved, in this one process (same libraries, same warm page cache):

- ``raw``: ``pyarrow.parquet.ParquetFile.iter_batches(chunk_rows)`` -> ``to_pandas()`` of the features
  -> ``model.predict`` (the in-memory scikit-learn object) -> ``ParquetWriter`` of ``id`` + prediction.
- ``ours``: what ``BatchScoreOperator`` runs, minus Airflow and MLflow logging: ``resolve_alias``
  (``models:/<model>@champion`` -> version), ``load_model`` (from the MLflow store) and ``score_file``
  (same chunks; output: row number, ``id``, prediction, probability when free, model name/version,
  scored_at, file metadata, atomic rename).
- models: ``logreg`` (I/O-bound), ``forest`` (20 trees, model-bound), ``transform`` (the ``Pipeline`` the
  train stage builds from a spec's ``transform`` section - imputers, scaler, one-hot encoder - and a
  logistic regression: what a model trained from YAML on a table with categorical columns scores with).
- ``pyfunc``: ``ours`` with the model loaded through ``mlflow.pyfunc`` instead of the sklearn flavor
  (the wrapper's cost; the stage uses the native object whenever the model has the sklearn flavor).

Scoring throughput = rows / time spent reading, predicting and writing (``score_file``'s own clock for
ours; the whole loop for raw). Wall time for ours also includes resolving the alias and loading the
model from MLflow. The ratio reported is the median of per-repetition throughput(ours)/throughput(raw)
(goal >= 0.9). Predictions of every side must agree; the bench fails otherwise.

    python bench/batch_bench.py                    # 1M x 20, logreg + forest + transform, 4 repeats (~4 min)
    python bench/batch_bench.py --rows 200000 --repeat 2 --no-save
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

GOAL = 0.9
CHUNK_ROWS = 100_000
CATEGORICAL = 5  # string columns of the `transform` model's table
TRANSFORM = {
    "numeric": {"impute": "median", "scale": "standard"},
    "categorical": {"impute": "most_frequent", "encode": "onehot"},
}
RESULTS = Path(__file__).resolve().parent / "results"


def generate(path: Path, rows: int, columns: int, seed: int = 7, categorical: int = 0) -> list[str]:
    """``columns`` features (the last ``categorical`` of them strings of 8-12 levels, 1% missing) + ``id``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"f{i:02d}" for i in range(columns - categorical)]
    names += [f"c{j:02d}" for j in range(categorical)]
    if not path.exists():
        rng = np.random.default_rng(seed)
        data: dict[str, Any] = {"id": np.arange(rows, dtype=np.int64)}
        for i, name in enumerate(names):
            values = rng.normal(size=rows)
            if i >= columns - categorical:
                levels = 8 + i % 5
                codes = np.clip(((values + 2.5) / 5 * levels).astype(int), 0, levels - 1)
                labels = np.array([f"{name}_{k}" for k in range(levels)], dtype=object)[codes]
                labels[rng.random(rows) < 0.01] = None
                data[name] = pa.array(labels, type=pa.string())
            else:
                data[name] = values
        pq.write_table(pa.table(data), path, row_group_size=100_000)
    return names


def train(path: Path, features: list[str], kind: str) -> Any:
    import pyarrow.parquet as pq
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    sample = pq.ParquetFile(path).read_row_group(0).to_pandas().head(20_000)
    x = sample[features]
    y = (x.iloc[:, 0] + 0.5 * x.iloc[:, 1] - x.iloc[:, 2] > 0).astype(int)
    if kind == "transform":  # what the train stage builds from a spec's transform section
        from mlops_provider.preprocessing import model_pipeline, prepare_features

        x, columns = prepare_features(x, TRANSFORM)
        assert columns is not None and len(columns.categorical) == CATEGORICAL, columns
        return model_pipeline(LogisticRegression(max_iter=500), columns, TRANSFORM).fit(x, y)
    model = (
        LogisticRegression(max_iter=500)
        if kind == "logreg"
        else RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0, n_jobs=1)
    )
    return model.fit(x, y)


def register(model: Any, x_sample: Any, name: str) -> None:
    """Log like the train stage does, register, point @champion at it (the embedded store of the root)."""
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.stages.train import log_model

    hook = MLflowHook()
    client = hook.client
    experiment_id = hook.get_or_create_experiment("batch-bench")
    run = client.create_run(experiment_id)
    with hook.activate():  # (the registry resolves the logged model through the fluent URI)
        info = log_model(model, x_sample, mlflow_run_id=run.info.run_id)
        client.create_registered_model(name)
        version = client.create_model_version(
            name, source=info.model_uri, run_id=run.info.run_id, model_id=info.model_id
        )
    client.set_registered_model_alias(name, "champion", version.version)
    client.set_terminated(run.info.run_id)


def raw_loop(model: Any, source: Path, out: Path, features: list[str]) -> tuple[float, float]:
    """(seconds, CPU seconds of the process)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start, cpu = time.perf_counter(), time.process_time()
    writer = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=CHUNK_ROWS):
        predicted = model.predict(batch.select(features).to_pandas())
        table = pa.table({"id": batch.column("id"), "prediction": predicted})
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return time.perf_counter() - start, time.process_time() - cpu


def ours(name: str, source: Path, out: Path, flavor: str) -> tuple[float, float, float]:
    """(scoring seconds, wall seconds incl. alias resolution and model load, CPU seconds of scoring)."""
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.stages import batch
    from mlops_provider.tracking.models import load_model, require_alias

    start = time.perf_counter()
    hook = MLflowHook()
    ref = require_alias(hook.client, name, "champion")
    with hook.activate():
        loaded = load_model(ref.uri, flavor=flavor)
    cpu = time.process_time()
    result = batch.score_file(str(source), str(out), model=loaded, model_ref=ref, chunk_rows=CHUNK_ROWS)
    return result.seconds, time.perf_counter() - start, time.process_time() - cpu


def predictions(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["prediction"]).column(0).to_numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=4, help="interleaved repetitions of each side")
    parser.add_argument("--models", default="logreg,forest,transform",
                        help="comma-separated: logreg, forest, transform (a spec's transform section + "
                        f"logistic regression over a table whose last {CATEGORICAL} features are strings)")
    parser.add_argument("--no-pyfunc", action="store_true", help="skip the pyfunc-wrapper variant")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlops-batch-bench")
    args = parser.parse_args(argv)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    work = args.data_dir
    os.environ["AIRFLOW__MLOPS__PROJECT_ROOT"] = str(work)  # the embedded MLflow store goes under it
    # the input is generated once and kept (inside the project root: the stage refuses paths outside it)
    cached = args.data_dir / "data" / f"input_{args.rows}x{args.columns}.parquet"
    cached.parent.mkdir(exist_ok=True)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        os.environ.pop(key, None)
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    warnings.filterwarnings("ignore")

    t0 = time.perf_counter()
    load = os.getloadavg()
    inputs = {"numeric": cached, "mixed": cached.with_name(cached.stem + f"_cat{CATEGORICAL}.parquet")}
    names = {
        "numeric": generate(inputs["numeric"], args.rows, args.columns),
        "mixed": generate(inputs["mixed"], args.rows, args.columns, categorical=CATEGORICAL)
        if "transform" in args.models else [],
    }
    source = inputs["numeric"]
    shutil.rmtree(work / ".mlops", ignore_errors=True)  # a fresh MLflow store each time
    print(
        f"data: {args.rows:,} rows x {args.columns} features + id, {source.stat().st_size / 1e6:.0f} MB "
        f"parquet ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )

    lines: list[str] = []
    ok = True
    for kind in args.models.split(","):
        table = "mixed" if kind == "transform" else "numeric"
        source, features = inputs[table], names[table]
        model = train(source, features, kind)
        name = f"bench_{kind}"
        import pyarrow.parquet as pq

        register(model, pq.ParquetFile(source).read_row_group(0).to_pandas()[features].head(5), name)
        sides = ["raw", "ours"] + ([] if args.no_pyfunc else ["pyfunc"])
        times: dict[str, list[float]] = {s: [] for s in sides}
        walls: dict[str, list[float]] = {s: [] for s in sides}
        cpus: dict[str, list[float]] = {s: [] for s in sides}
        outputs = {s: work / "out" / f"{kind}_{s}.parquet" for s in sides}
        outputs["raw"].parent.mkdir(exist_ok=True)
        for rep in range(args.repeat + 1):  # repetition 0 warms caches and is not counted
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                if side == "raw":
                    seconds, cpu = raw_loop(model, source, outputs[side], features)
                    wall = seconds
                else:
                    flavor = "auto" if side == "ours" else "pyfunc"
                    seconds, wall, cpu = ours(name, source, outputs[side], flavor)
                if rep:
                    times[side].append(seconds)
                    walls[side].append(wall)
                    cpus[side].append(cpu)
        reference = predictions(outputs["raw"])
        for side in sides[1:]:
            if not (predictions(outputs[side]) == reference).all():
                print(f"{kind}: {side} predictions differ from the raw loop's", file=sys.stderr)
                ok = False
        ratio = statistics.median(r / o for r, o in zip(times["raw"], times["ours"], strict=True))
        wall_ratio = statistics.median(r / o for r, o in zip(times["raw"], walls["ours"], strict=True))
        cpu_ratio = statistics.median(r / o for r, o in zip(cpus["raw"], cpus["ours"], strict=True))
        row = (
            f"| {kind} | {_fmt(times['raw'], args.rows)} | {_fmt(times['ours'], args.rows)} | "
            f"{statistics.median(walls['ours']):.2f} s | **{ratio:.2f}** | "
            f"{_spread(times['raw'], times['ours'])} | {wall_ratio:.2f} | {cpu_ratio:.2f} |"
        )
        if "pyfunc" in times:
            wrapper = statistics.median(o / p for o, p in zip(times["ours"], times["pyfunc"], strict=True))
            row += f" {_fmt(times['pyfunc'], args.rows)} | {wrapper:.2f} |"
        else:
            row += " - | - |"
        lines.append(row)
        print(row, flush=True)
        ok = ok and ratio >= GOAL

    header = [
        f"# Batch scoring benchmark ({dt.date.today().isoformat()})",
        "",
        f"{args.rows:,} rows x {args.columns} float64 features + int64 id (for `transform`: the last "
        f"{CATEGORICAL} features strings of 8-12 levels with 1% missing; the model: what the train stage "
        "builds from `transform: {numeric: {impute: median, scale: standard}, categorical: {impute: "
        "most_frequent, encode: onehot}}` + logistic regression), parquet (row groups of 100,000), "
        f"chunks of {CHUNK_ROWS:,} rows; {args.repeat} interleaved repetitions after a warm-up; medians. "
        f"Python {platform.python_version()}, {os.cpu_count()} cores (shared; load average at the start "
        f"{load[0]:.1f}, at the end {os.getloadavg()[0]:.1f}). Command: "
        f"`python bench/batch_bench.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip()
        + "",
        "",
        "ratio = throughput(ours) / throughput(raw), scoring only (median of paired repetitions; goal >= "
        f"{GOAL}), with its range over the repetitions; wall ratio includes resolving `@champion` and "
        "loading the model from MLflow; CPU ratio = the same with the process's CPU seconds (all threads: "
        "the work done, less sensitive to other load on the machine than wall time). pyfunc/native = "
        "throughput through `mlflow.pyfunc` relative to the native sklearn object.",
        "",
        "| model | raw loop | ours (scoring) | ours wall | ratio | range | wall ratio | CPU ratio "
        "| ours via pyfunc | pyfunc/native |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    report = "\n".join([*header, *lines, ""])
    print("\n" + report)
    print(f"total {time.perf_counter() - t0:.0f} s; goal {'met' if ok else 'MISSED'}")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        target = RESULTS / f"batch-{dt.date.today().isoformat()}.md"
        target.write_text(report)
        print(f"saved {target}")
    return 0 if ok else 1


def _spread(raw: list[float], ours: list[float]) -> str:
    ratios = [r / o for r, o in zip(raw, ours, strict=True)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def _fmt(seconds: list[float], rows: int) -> str:
    median = statistics.median(seconds)
    return f"{median:.2f} s ({rows / median / 1e3:,.0f}k rows/s)"


if __name__ == "__main__":
    sys.exit(main())
