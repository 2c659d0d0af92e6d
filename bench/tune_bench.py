#!/usr/bin/env python3
"""Search: ``train.tune`` trials spread over Celery workers vs the same trials one after another, and
the best CV score against an Optuna study of the same space written by hand.

    .venv/bin/python bench/tune_bench.py [--trials 24] [--parallel 4] [--reps 1] [--no-save]

Runs on the tests' Celery deployment (``celery_stack`` in tests/fixtures/celery.py: Postgres, Redis,
api-server, scheduler, dag-processor, triggerer, an MLflow server on Postgres with S3 artifacts, an
``s3://`` workspace) with two Celery workers of two task slots each, on a real public table: the
``palmerpenguins`` package's ``penguins-raw.csv`` (predict ``Sex``; string labels with missing values,
categorical columns, missing measurements), the spec of tests/specs/tabular/penguins_sex.yaml with a
``train.tune`` section searching a RandomForest (n_estimators, max_depth, min_samples_leaf,
max_features), 3-fold cross-validated ROC AUC of the whole pipeline (transform included).

Per repetition, in one run of the stack:

1. **sequential** — the spec with ``parallel: 1``: one ``tune`` task runs every trial;
2. **parallel** — the same spec with ``parallel: --parallel``: that many mapped ``tune`` tasks, which the
   Celery workers run at the same time.

Measured: the search's wall time (first ``tune`` task start to last ``tune`` task end, from the Airflow
REST API) and the DAG run's; the ratio parallel / sequential (issue 9's goal: <= 0.65 with 24 trials,
``parallel: 4`` on 2 workers). Checked: both runs succeed, each has exactly ``--trials`` finished child
runs, the registered model was trained with the best trial's parameters.

Then, in this process, by hand: ``optuna.create_study(sampler=TPESampler(seed=s))`` over the same space,
objective = the mean ``cross_val_score(..., scoring="roc_auc")`` of a scikit-learn ``Pipeline``
(``ColumnTransformer`` of median-impute + standard-scale / most-frequent-impute + one-hot, the forest) on
the same training split, ``StratifiedKFold(3, shuffle=True, random_state=seed)``, for ``--hand-seeds``
seeds; the best CV values of ours should fall within the spread of the hand-run studies' (TPE is
randomized: the spread *is* the noise).

It is a pytest module (so it reuses the tests' service fixtures); running the file calls pytest on itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SPEC = REPO / "tests" / "specs" / "tabular" / "penguins_sex.yaml"
GOAL = 0.65
SEED = 7
DROP = ["studyName", "Sample Number", "Region", "Stage", "Individual ID", "Date Egg", "Comments"]
SPACE = {
    "n_estimators": {"int": [200, 1000]},
    "max_depth": {"int": [2, 12]},
    "min_samples_leaf": {"int": [1, 20], "log": True},
    "max_features": {"choice": ["sqrt", "log2", 0.5]},
}


def _spec(name: str, *, trials: int, parallel: int) -> str:
    text = SPEC.read_text()
    text = text.replace("name: penguins_sex", f"name: {name}", 1)
    mlflow = f"mlflow: {{experiment: {name}, model: {name}_model}}"
    text = text.replace("mlflow: {model: penguins_sex}", mlflow, 1)
    text = text.replace("retry_delay: 5m", "retry_delay: 5s", 1)
    text = text.replace(
        "  params: {n_estimators: 60, max_depth: 6}\n",
        "  params: {random_state: 0, n_jobs: 1}\n"
        f"  tune:\n    trials: {trials}\n    parallel: {parallel}\n    metric: roc_auc\n    cv: 3\n"
        f"    seed: {SEED}\n    space: {json.dumps(SPACE)}\n",
        1,
    )
    text = text[: text.index("  batch:")]  # training only: no batch or monitor DAGs (they follow it)
    assert f"name: {name}" in text and f"parallel: {parallel}" in text and "batch" not in text
    return text


def _seconds(value: str | None) -> float | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _measure(stack: Any, name: str, trials: int) -> dict[str, Any]:
    """Trigger, wait, and read the run back from Airflow and MLflow."""
    from tests.fixtures.processes import wait_for

    token = stack.airflow.token()
    wait_for(lambda: stack.airflow.request("GET", f"/api/v2/dags/{name}", token=token)[0] == 200,
             what=f"DAG {name} parsed", timeout=300)  # fmt: skip
    run_id = stack.trigger(name)
    run = stack.wait_run(name, run_id, timeout=3600)
    status, body = stack.airflow.request(
        "GET", f"/api/v2/dags/{name}/dagRuns/{run_id}/taskInstances?limit=200", token=stack.airflow.token()
    )
    assert status == 200, body
    tune = [ti for ti in body["task_instances"] if ti["task_id"] == "tune"]
    starts = [s for ti in tune if (s := _seconds(ti.get("start_date"))) is not None]
    ends = [e for ti in tune if (e := _seconds(ti.get("end_date"))) is not None]
    result: dict[str, Any] = {
        "name": name, "state": run["state"], "tune_tasks": len(tune),
        "search": max(ends) - min(starts) if starts and ends else float("nan"),
        "dag_run": (_seconds(run.get("end_date")) or 0) - (_seconds(run.get("start_date")) or 0),
        "workers": {w: sum(1 for _ in (worker.log_folder / f"dag_id={name}" / f"run_id={run_id}"
                                       / "task_id=tune").rglob("attempt=*.log"))
                    for w, worker in stack.workers.items()},
        "retried": [ti["map_index"] for ti in tune if int(ti.get("try_number") or 1) > 1],
        "spans": sorted((round((_seconds(ti.get("start_date")) or 0) - min(starts), 1),
                         round((_seconds(ti.get("end_date")) or 0) - min(starts), 1)) for ti in tune),
    }  # fmt: skip
    client = stack.mlflow.client()
    experiment = client.get_experiment_by_name(name)
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`mlops.tune.best` != ''")
    assert len(parents) == 1, f"{name}: {len(parents)} pipeline runs with a search"
    parent = parents[0]
    best = json.loads(parent.data.tags["mlops.tune.best"])
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                      "and attributes.status = 'FINISHED'",
        max_results=1000,
    )
    result.update(best=best["value"], best_params=best["params"], children=len(children))
    version = client.get_model_version_by_alias(f"{name}_model", "champion")
    trained = client.get_run(version.run_id).data.params
    result["model_uses_best"] = all(trained.get(f"param.{k}") == (v if isinstance(v, str) else json.dumps(v))
                                    for k, v in best["params"].items())
    result["ok"] = (run["state"] == "success" and result["children"] == trials and result["model_uses_best"])
    return result


def _by_hand(data: Path, trials: int, seeds: list[int]) -> list[float]:
    """The same search written directly with Optuna and scikit-learn: the best CV value per seed."""
    import optuna
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frame = pd.read_csv(data)
    frame = frame[frame["Sex"].notna()]
    train, _ = train_test_split(frame, test_size=0.3, random_state=3, stratify=frame["Sex"])  # the spec's
    x, y = train.drop(columns=[*DROP, "Sex"]), train["Sex"]
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    categorical = [c for c in x.columns if c not in numeric]
    folds = StratifiedKFold(3, shuffle=True, random_state=SEED)

    def objective(trial: Any) -> float:
        params = {
            "n_estimators": trial.suggest_int("n_estimators", 200, 1000),
            "max_depth": trial.suggest_int("max_depth", 2, 12),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2", 0.5]),
        }
        model = Pipeline([
            ("transform", ColumnTransformer([
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                              OneHotEncoder(handle_unknown="ignore")), categorical),
            ])),
            ("model", RandomForestClassifier(random_state=0, n_jobs=1, **params)),
        ])
        return float(cross_val_score(model, x, y, cv=folds, scoring="roc_auc").mean())

    best = []
    for seed in seeds:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=trials)
        best.append(float(study.best_value))
    return best


def _report(reps: list[dict[str, dict[str, Any]]], hand: list[float], hand_seconds: float,
            trials: int, parallel: int) -> tuple[str, bool]:
    ratios = [r["parallel"]["search"] / r["sequential"]["search"] for r in reps]
    dag_ratios = [r["parallel"]["dag_run"] / r["sequential"]["dag_run"] for r in reps]
    ours = [r[side]["best"] for r in reps for side in ("sequential", "parallel")]
    low, high = min(hand), max(hand)
    spread = max(high - low, 0.005)
    within = all(low - spread <= value <= high + spread for value in ours)
    ok = all(r[s]["ok"] for r in reps for s in r) and statistics.median(ratios) <= GOAL and within
    lines = [
        f"# Search benchmark — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"`bench/tune_bench.py --trials {trials} --parallel {parallel} --reps {len(reps)}`; palmerpenguins "
        f"`penguins-raw.csv` (predict Sex), RandomForest over {json.dumps(SPACE)}, 3-fold CV ROC AUC of the "
        f"whole pipeline; Celery, 2 workers x 2 slots; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), load average before {os.getloadavg()[0]:.2f}; "
        f"Python {platform.python_version()}.",
        "",
        "| rep | mode | tune tasks (start, end s) | search wall s | DAG run s | best CV ROC AUC | child runs "
        "| model uses best | tune tasks per worker |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, rep in enumerate(reps, 1):
        for mode in ("sequential", "parallel"):
            r = rep[mode]
            lines.append(f"| {i} | {mode} | {r['tune_tasks']} {r['spans']} | {r['search']:.1f} | "
                         f"{r['dag_run']:.1f} | "
                         f"{r['best']:.4f} | {r['children']} | {r['model_uses_best']} | "
                         f"{', '.join(f'{w}: {n}' for w, n in r['workers'].items())} |")
    lines += [
        "",
        f"**Search wall, parallel / sequential: {statistics.median(ratios):.2f}** (per repetition: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}; goal <= {GOAL}); DAG run: "
        f"{', '.join(f'{x:.2f}' for x in dag_ratios)}.",
        "",
        f"Optuna by hand (same space, split and folds; TPE seeds 0-{len(hand) - 1}; {hand_seconds:.0f} s): "
        f"best CV ROC AUC {', '.join(f'{v:.4f}' for v in hand)} (range {low:.4f}-{high:.4f}); ours "
        f"{', '.join(f'{v:.4f}' for v in ours)}: {'within' if within else 'OUTSIDE'} the hand-run range "
        f"widened by its spread ({spread:.4f}).",
    ]
    return "\n".join(lines) + "\n", ok


def test_search(celery_stack: Any) -> None:
    import shutil

    trials = int(os.environ.get("MLOPS_TUNE_TRIALS", "24"))
    parallel = int(os.environ.get("MLOPS_TUNE_PARALLEL", "4"))
    reps = int(os.environ.get("MLOPS_TUNE_REPS", "1"))
    stack = celery_stack
    data = stack.airflow.project_root / "include" / "data" / "penguins.csv"
    with resources.as_file(resources.files("palmerpenguins") / "data" / "penguins-raw.csv") as raw:
        shutil.copy(raw, data)
    stamp = datetime.now(timezone.utc).strftime("%H%M%S")
    names = []
    for rep in range(reps):
        for mode, shards in (("sequential", 1), ("parallel", parallel)):
            name = f"tune_{mode[:3]}_{stamp}_{rep}"
            (stack.airflow.pipelines_folder / f"{name}.yaml").write_text(_spec(name, trials=trials,
                                                                                 parallel=shards))
            names.append((rep, mode, name))
    for worker in ("tune-a", "tune-b"):  # after the data and specs: each worker copies the project
        stack.start_worker(worker, concurrency=2)
    results: list[dict[str, dict[str, Any]]] = [{} for _ in range(reps)]
    for rep, mode, name in names if reps == 1 else sorted(names, key=lambda n: (n[0], n[1] != "sequential")):
        results[rep][mode] = _measure(stack, name, trials)
        print(f"rep {rep + 1} {mode}: {results[rep][mode]}", flush=True)
    for worker in ("tune-a", "tune-b"):
        stack.stop_worker(worker)
    started = time.monotonic()
    hand = _by_hand(data, trials, seeds=list(range(int(os.environ.get("MLOPS_TUNE_HAND_SEEDS", "3")))))
    report, ok = _report(results, hand, time.monotonic() - started, trials, parallel)
    print("\n" + report + f"\ngoals {'met' if ok else 'MISSED'}")
    if os.environ.get("MLOPS_TUNE_SAVE", "1") == "1":
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"tune-{datetime.now(timezone.utc):%Y-%m-%d}.md").write_text(report)
    for rep in results:
        for mode, r in rep.items():
            assert r["ok"], f"{mode}: {r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--hand-seeds", type=int, default=3, help="Optuna studies run by hand")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    os.environ.update({
        "MLOPS_TUNE_TRIALS": str(args.trials), "MLOPS_TUNE_PARALLEL": str(args.parallel),
        "MLOPS_TUNE_REPS": str(args.reps), "MLOPS_TUNE_HAND_SEEDS": str(args.hand_seeds),
        "MLOPS_TUNE_SAVE": "0" if args.no_save else "1", "MLOPS_TEST_PREWARM": "0",
    })  # fmt: skip
    sys.path.insert(0, str(REPO))
    import pytest

    return int(pytest.main([__file__, "-p", "tests.conftest", "-s", "-q", "-p", "no:cacheprovider",
                            "-o", "timeout=7200", "--rootdir", str(REPO)]))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
