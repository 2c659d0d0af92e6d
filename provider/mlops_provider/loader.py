"""Turn every pipeline spec of a folder into DAGs, and report the invalid ones, from two DAG files.

    # dags/ml_pipelines.py              the pipelines' DAGs
    from mlops_provider.loader import load_pipelines

    load_pipelines(globals())

    # dags/ml_pipelines_spec_errors.py  Airflow's import error for every invalid spec; no DAGs
    from mlops_provider.loader import report_invalid_specs

    report_invalid_specs(globals())

Why two files: Airflow's dag processor marks **every** DAG of a file that has an import error as
stale (``_update_import_errors`` in ``airflow/dag_processing/collection.py``: the file's DAGs get
``is_stale``, the scheduler stops running them, the UI shows them as deactivated). So the file that
holds the pipelines' DAGs must never carry an import error: :func:`load_pipelines` builds the DAGs of
the valid specs and skips the invalid ones. The second file holds no DAG, so its import error
deactivates nothing; :func:`report_invalid_specs` puts every issue of every invalid spec
(file:line:column, key path, hint) into it, where Airflow users look for parse failures: the UI's
"Dag Import Errors", ``airflow dags list-import-errors`` and the REST API's ``importErrors``. When
every spec is valid again, the next parse of that file clears the error. A spec that turns invalid
loses only its own DAGs (the processor deactivates DAGs that a file stops producing); fixed, they come
back with their history.

When a worker parses ``ml_pipelines.py`` to run one task, Airflow's parsing context names the DAG, and
only that pipeline's spec is read and built; workers never parse the reporting file (it has no DAGs).
Nothing heavy is imported and nothing touches the network or the metadata DB.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_provider import config
from mlops_provider.spec.kinds import may_be_dag_of
from mlops_provider.spec.load import LoadedSpec, claim_names, find_spec_files, load_spec

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from mlops_provider.spec.cache import SpecCache

log = logging.getLogger(__name__)
_NAME_LINE = re.compile(rb"^name:\s*['\"]?([a-z][a-z0-9_]*)", re.M)
#: the DAG id of the reporting file's DAG (it never reaches the metadata DB: its validate() raises)
INVALID_SPECS_DAG_ID = "mlops_invalid_specs"


def load_specs(folder: Path, *, project_root: Path, only_dag_id: str | None = None) -> list[LoadedSpec]:
    return list(iter_specs(folder, project_root=project_root, only_dag_id=only_dag_id))


def iter_specs(folder: Path, *, project_root: Path, only_dag_id: str | None = None) -> Iterator[LoadedSpec]:
    """Each spec file of ``folder``, read and checked, one at a time (duplicate names flagged on the later).

    A generator, so the loader turns each spec into DAGs before reading the next and keeps nothing of
    it but the DAGs: parse-time memory does not grow with intermediate objects of all the specs.
    """
    files = find_spec_files([folder]) if folder.is_dir() else []
    if only_dag_id:
        files = [f for f in files if _may_define(f, only_dag_id)] or files
    allowed = config.allowed_modules()
    cache = _open_cache(folder) if files else None
    seen: dict[str, tuple[str, str]] = {}
    complete = False
    try:
        for path in files:
            try:
                shown = str(path.relative_to(project_root))
            except ValueError:
                shown = str(path)
            item = load_spec(path, project_root=project_root, allowed_modules=allowed, display_path=shown,
                             cache=cache)
            claim_names(item, seen)
            yield item
        complete = True
    finally:
        if cache is not None:  # entries of deleted specs go only when every spec of the folder was read
            cache.save(prune=complete and not only_dag_id)


def _open_cache(folder: Path) -> SpecCache | None:
    """The YAML parse cache of ``folder`` (see :mod:`mlops_provider.spec.cache`); ``[mlops] spec_cache``."""
    if (config.get("spec_cache") or "true").strip().lower() in ("false", "0", "no", "off"):
        return None
    from mlops_provider.spec.cache import SpecCache

    return SpecCache.open(folder)


def declared_name(raw: bytes) -> str | None:
    """The pipeline name a spec file's top-level ``name:`` line declares, read without parsing the YAML
    (so it works on an invalid spec too); None when there is no such line or it is not a valid name."""
    match = _NAME_LINE.search(raw)
    return match.group(1).decode() if match else None


def _may_define(path: Path, dag_id: str) -> bool:
    """Cheap pre-check on the raw bytes, so a worker reads one spec instead of all of them."""
    try:
        name = declared_name(path.read_bytes())
    except OSError:
        return False
    return name is None or may_be_dag_of(dag_id, name)


def _folders(folder: str | Path | None, project_root: str | Path | None) -> tuple[Path, Path]:
    return (
        Path(folder) if folder is not None else config.pipelines_folder(),
        Path(project_root).resolve() if project_root is not None else config.project_root(),
    )


def load_pipelines(
    namespace: MutableMapping[str, Any] | None = None,
    *,
    folder: str | Path | None = None,
    project_root: str | Path | None = None,
) -> dict[str, DAG]:
    """Build the DAGs of every valid spec in ``folder`` (default ``[mlops] pipelines_folder``).

    DAGs are put into ``namespace`` (pass ``globals()``) so Airflow finds them, and returned. Invalid
    specs are skipped and logged; :func:`report_invalid_specs`, in a DAG file of its own, shows them in
    Airflow. Never raises for a spec: one broken spec (or one this factory fails to build) must not
    take the other pipelines down.
    """
    from airflow.sdk import get_parsing_context

    from mlops_provider.plan.build import build_plan
    from mlops_provider.render.dag import render_dag

    started = time.perf_counter()
    folder, root = _folders(folder, project_root)
    only = get_parsing_context().dag_id

    dags: dict[str, DAG] = {}
    n_specs = n_invalid = 0
    for item in iter_specs(folder, project_root=root, only_dag_id=only):
        n_specs += 1
        if not item.ok:
            n_invalid += 1
            log.error(
                "pipeline spec %s is invalid (%d error(s)); its DAGs are not loaded: %s",
                item.display_path, len(item.issues), "; ".join(i.format() for i in item.issues),
            )
            continue
        try:
            assert item.spec is not None
            plan = build_plan(item.spec, source=item.display_path, text=item.text, spec_sha256=item.sha256)
            built = {d.dag_id: render_dag(d) for d in plan.dags if only is None or d.dag_id == only}
        except Exception:  # a factory bug on one spec: log it, keep the others
            n_invalid += 1
            log.exception("pipeline spec %s: building its DAGs failed; they are not loaded",
                          item.display_path)
            continue
        dags.update(built)
    if namespace is not None:
        namespace.update({f"mlops_dag__{dag_id}": dag for dag_id, dag in dags.items()})
    log.info("mlops: %d spec(s), %d DAG(s), %d invalid, in %.0f ms", n_specs, len(dags), n_invalid,
             1000 * (time.perf_counter() - started))
    return dags


def report_invalid_specs(
    namespace: MutableMapping[str, Any] | None = None,
    *,
    folder: str | Path | None = None,
    project_root: str | Path | None = None,
) -> DAG | None:
    """Make every issue of every invalid spec this DAG file's import error (see the module docstring).

    Returns (and puts into ``namespace``) a DAG whose ``validate()`` raises the :class:`SpecError`, the
    hook Airflow's DagBag turns into the file's import error with the message alone (no traceback); None
    when every spec is valid. Put it in a file that defines no other DAG: Airflow deactivates every DAG
    of a file with an import error.
    """
    from airflow.sdk import get_parsing_context

    from mlops_provider.exceptions import SpecError, SpecIssue
    from mlops_provider.plan.build import build_plan
    from mlops_provider.render.dag import render_invalid

    if get_parsing_context().dag_id is not None:  # a worker parsing for a task: this file has none
        return None
    folder, root = _folders(folder, project_root)
    issues: list[SpecIssue] = []
    n_specs = 0
    for item in iter_specs(folder, project_root=root):
        n_specs += 1
        if not item.ok:
            issues.extend(item.issues)
            continue
        assert item.spec is not None
        try:  # the plan is plain Python and cheap; rendering is left to the loader
            build_plan(item.spec, source=item.display_path, text=item.text, spec_sha256=item.sha256)
        except Exception as exc:
            issues.append(SpecIssue(item.display_path, 1, 1, f"the factory failed to build this spec's "
                                    f"DAGs: {type(exc).__name__}: {exc}", code="internal",
                                    hint="a bug in airflow-provider-mlops: please report it"))
    if not issues:
        return None
    dag = render_invalid(SpecError(issues, specs_checked=n_specs), dag_id=INVALID_SPECS_DAG_ID)
    if namespace is not None:
        namespace[f"mlops_dag__{INVALID_SPECS_DAG_ID}"] = dag
    return dag
