"""Fresh-process probes for .ci/compat/check.sh, run with the compat venv's Python.

  probe.py parse DAG_FILE BUNDLE_DIR DAG_ID,...  HEAVY,...
      Parse one DAG file with the installed Airflow's own DagBag (3.1: ``airflow.models.dagbag.BundleDagBag``
      without ``bundle_name``; 3.2+: ``airflow.dag_processing.dagbag.BundleDagBag(bundle_name=)``), as the
      dag processor does. Fails on an import error, a missing DAG id, or a heavy library in ``sys.modules``.
  probe.py approval SRC WORKDIR
      A copy of SRC's breast_cancer spec with ``deploy.approval`` (4h, assignee alice), parsed the same way:
      the ``approve`` task must be our PromotionApprovalOperator with the timeout and the assignee, i.e. the
      installed standard provider's ApprovalOperator takes ``response_timeout`` and ``assigned_users``.

  probe.py wait-db SQLITE_DB DAG_ID,... TIMEOUT_S
      Poll the metadata DB that a running ``airflow dag-processor`` writes until the DAG ids are in ``dag``
      and not stale, ``import_error`` is empty, and those DAGs were parsed again after that first held (a
      file is parsed again only after the processor went through every file once, so a DAG file parsed
      later with an import error cannot be missed).

Prints one JSON line; exit 0 when it holds, 1 when not.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

warnings.simplefilter("ignore")


def _bag(dag_file: Path, bundle_dir: Path):  # type: ignore[no-untyped-def]
    try:
        from airflow.dag_processing.dagbag import BundleDagBag  # Airflow 3.2+

        return "airflow.dag_processing.dagbag", BundleDagBag(
            dag_folder=dag_file, bundle_path=bundle_dir, bundle_name="dags-folder"
        )
    except ImportError:
        from airflow.models.dagbag import BundleDagBag  # Airflow 3.1

        return "airflow.models.dagbag", BundleDagBag(dag_folder=dag_file, bundle_path=bundle_dir)


def _errors(bag) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {str(f): str(e).strip().splitlines()[-1][:500] for f, e in bag.import_errors.items()}


def parse(dag_file: str, bundle_dir: str, dag_ids: str, heavy_roots: str) -> int:
    kind, bag = _bag(Path(dag_file), Path(bundle_dir))
    roots = set(heavy_roots.split(","))
    heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in roots})
    missing = sorted(set(dag_ids.split(",")) - set(bag.dag_ids))
    errors = _errors(bag)
    print(json.dumps({"dagbag": kind, "dags": sorted(bag.dag_ids), "missing": missing,
                      "import_errors": errors, "heavy_imported": heavy}))  # fmt: skip
    return 0 if not (missing or errors or heavy) else 1


def approval(src: str, workdir: str) -> int:
    import yaml

    root = Path(workdir)
    shutil.rmtree(root, ignore_errors=True)
    pipelines = root / "dags" / "pipelines"
    pipelines.mkdir(parents=True)
    shutil.copy(Path(src) / "dags" / "ml_pipelines.py", root / "dags")
    spec = yaml.safe_load((Path(src) / "dags" / "pipelines" / "breast_cancer.yaml").read_text())
    spec["name"] = "approval_probe"
    spec["deploy"] = {"alias": "champion", "approval": {"timeout": "4h", "assignees": ["alice"]}}
    spec.pop("monitor", None)
    (pipelines / "approval_probe.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    os.environ.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"),
        AIRFLOW__MLOPS__PIPELINES_FOLDER=str(pipelines),
        AIRFLOW__MLOPS__PROJECT_ROOT=str(root),
    )
    kind, bag = _bag(root / "dags" / "ml_pipelines.py", root / "dags")
    errors = _errors(bag)
    dag = bag.dags.get("approval_probe")
    task = dag.task_dict.get("approve") if dag is not None else None
    got = {
        "type": type(task).__name__ if task is not None else None,
        "response_timeout": str(getattr(task, "response_timeout", None)),
        "assigned_users": getattr(task, "assigned_users", None),
        "deploy_waits_for_it": bool(dag and "approve" in dag.task_dict["deploy"].upstream_task_ids),
    }
    want = {
        "type": "PromotionApprovalOperator",
        "response_timeout": str(dt.timedelta(hours=4)),
        "assigned_users": [{"id": "alice", "name": "alice"}],
        "deploy_waits_for_it": True,
    }
    from importlib.metadata import version

    print(json.dumps({"dagbag": kind, "standard_provider": version("apache-airflow-providers-standard"),
                      "import_errors": errors, "approve": got}))  # fmt: skip
    return 0 if got == want and not errors else 1


def wait_db(db: str, dag_ids: str, timeout: str) -> int:
    import sqlite3
    import time

    wanted = set(dag_ids.split(","))
    deadline = time.monotonic() + float(timeout)
    first_ok: str | None = None  # newest last_parsed_time of the wanted DAGs when the condition first held
    state: dict = {}
    while True:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                rows = con.execute("SELECT dag_id, is_stale, last_parsed_time FROM dag").fetchall()
                errors = con.execute("SELECT filename, stacktrace FROM import_error").fetchall()
        except sqlite3.Error as exc:  # not migrated yet / locked: try again
            rows, errors = [], []
            state["db_error"] = str(exc)
        fresh = {d: str(t) for d, stale, t in rows if not stale and t is not None}
        ok = wanted <= set(fresh) and not errors
        state = {"active": sorted(fresh), "stale": sorted(d for d, s, _ in rows if s),
                 "import_errors": {f: (s or "").strip().splitlines()[-1:] for f, s in errors}}  # fmt: skip
        if ok and first_ok is None:
            first_ok = max(fresh[d] for d in wanted)
        elif ok and first_ok is not None and min(fresh[d] for d in wanted) > first_ok:
            print(json.dumps({"ok": True, **state}))
            return 0
        if time.monotonic() > deadline:
            print(json.dumps({"ok": False, "timeout_s": float(timeout), "held_once": first_ok is not None,
                              **state}))  # fmt: skip
            return 1
        time.sleep(1)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    sys.exit({"parse": parse, "approval": approval, "wait-db": wait_db}[command](*args))
