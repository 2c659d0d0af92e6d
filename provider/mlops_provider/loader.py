"""Load every pipeline spec into DAGs from one DAG file.

    # dags/ml_pipelines.py  (Airflow DAG loader)
    from mlops_provider.loader import load_pipelines

    load_pipelines(globals())

One bad spec never hides another: valid specs become DAGs; the errors of invalid ones go to Airflow's
import-errors list (see :class:`~mlops_provider.render.dag.InvalidSpecsDag`). When a worker parses the
file to run one task, Airflow's parsing context names the DAG, and only that spec is read and built.
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
from mlops_provider.spec.load import LoadedSpec, claim_names, find_spec_files, load_spec

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from mlops_provider.exceptions import SpecIssue
    from mlops_provider.plan.model import PipelinePlan
    from mlops_provider.spec.cache import SpecCache

log = logging.getLogger(__name__)
_NAME_LINE = re.compile(rb"^name:\s*['\"]?([a-z][a-z0-9_]*)", re.M)
_DAG_SUFFIXES = ("_monitor",)


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


def _may_define(path: Path, dag_id: str) -> bool:
    """Cheap pre-check on the raw bytes, so a worker reads one spec instead of all of them."""
    try:
        match = _NAME_LINE.search(path.read_bytes())
    except OSError:
        return False
    if match is None:
        return True
    name = match.group(1).decode()
    return dag_id == name or any(dag_id == name + suffix for suffix in _DAG_SUFFIXES)


def build_plans(loaded: list[LoadedSpec]) -> list[PipelinePlan]:
    from mlops_provider.plan.build import build_plan

    return [
        build_plan(item.spec, source=item.display_path, text=item.text, spec_sha256=item.sha256)
        for item in loaded
        if item.spec is not None
    ]


def load_pipelines(
    namespace: MutableMapping[str, Any] | None = None,
    *,
    folder: str | Path | None = None,
    project_root: str | Path | None = None,
) -> dict[str, DAG]:
    """Build the DAGs of every spec in ``folder`` (default ``[mlops] pipelines_folder``).

    DAGs are put into ``namespace`` (pass ``globals()``) so Airflow finds them, and returned.
    """
    from airflow.sdk import get_parsing_context

    from mlops_provider.plan.build import build_plan
    from mlops_provider.render.dag import render_dag, render_invalid

    started = time.perf_counter()
    folder = Path(folder) if folder is not None else config.pipelines_folder()
    root = Path(project_root).resolve() if project_root is not None else config.project_root()
    only = get_parsing_context().dag_id

    dags: dict[str, DAG] = {}
    issues: list[SpecIssue] = []
    n_specs = n_invalid = 0
    for item in iter_specs(folder, project_root=root, only_dag_id=only):
        n_specs += 1
        if item.issues:
            n_invalid += 1
            issues.extend(item.issues)
        if item.spec is None:
            continue
        plan = build_plan(item.spec, source=item.display_path, text=item.text, spec_sha256=item.sha256)
        for dag_plan in plan.dags:
            if only is None or dag_plan.dag_id == only:
                dags[dag_plan.dag_id] = render_dag(dag_plan)
    if issues and only is None:
        dags["mlops_invalid_specs"] = render_invalid(issues)
        for issue in issues:
            log.error("invalid pipeline spec: %s", issue.format())
    if namespace is not None:
        namespace.update({f"mlops_dag__{dag_id}": dag for dag_id, dag in dags.items()})
    log.info("mlops: %d spec(s), %d DAG(s), %d invalid, in %.0f ms", n_specs, len(dags), n_invalid,
             1000 * (time.perf_counter() - started))
    return dags
