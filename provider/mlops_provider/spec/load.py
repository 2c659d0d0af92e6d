"""Read and check spec files: text → located YAML → :class:`PipelineSpec`, collecting *every* issue.

Nothing here imports Airflow or anything heavy: the loader calls it at DAG-parse time and ``mlops lint``
calls it from a pre-commit hook.
"""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mlops_provider.exceptions import SpecIssue
from mlops_provider.spec.schema import DEFAULT_METRICS, METRICS, PipelineSpec
from mlops_provider.spec.secrets import URL_PASSWORD, is_secret_key
from mlops_provider.spec.yaml_source import KeyPath, Located, read_yaml

if TYPE_CHECKING:
    from mlops_provider.spec.cache import SpecCache

SPEC_SUFFIXES = (".yaml", ".yml")
#: YAML-level issues whose value was replaced by None: pydantic's complaint about that None is noise.
_VALUE_DROPPED = frozenset({"yaml-tag", "invalid-scalar", "bad-date"})


@dataclass
class LoadedSpec:
    """The outcome of reading one spec file: the spec if valid, else the issues (both never None)."""

    path: Path
    display_path: str
    text: str
    sha256: str
    spec: PipelineSpec | None = None
    issues: list[SpecIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.issues


def find_spec_files(paths: Iterable[Path | str]) -> list[Path]:
    """Spec files under the given files/folders, sorted, hidden files skipped."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in SPEC_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            found.append(path)
    return found


def load_spec(
    path: Path | str,
    *,
    project_root: Path | None,
    allowed_modules: Sequence[str] | None,
    display_path: str | None = None,
    text: str | None = None,
    cache: SpecCache | None = None,
) -> LoadedSpec:
    """Read and check one spec. ``cache`` (the loader's) skips the YAML parse of a text seen before."""
    path = Path(path)
    shown = display_path or str(path)
    if text is None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return LoadedSpec(
                path,
                shown,
                "",
                "",
                issues=[SpecIssue(shown, 1, 1, f"cannot read: {exc.strerror}", code="unreadable")],
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return LoadedSpec(
                path,
                shown,
                "",
                hashlib.sha256(raw).hexdigest(),
                issues=[SpecIssue(shown, 1, 1, f"not UTF-8 text: {exc}", code="encoding")],
            )
    result = LoadedSpec(path, shown, text, hashlib.sha256(text.encode()).hexdigest())
    cached = cache.get(result.sha256) if cache is not None else None
    # a cached spec was valid; its data carries no positions, so any issue is re-derived from the text
    doc = Located(file=shown, data=cached) if cached is not None else read_yaml(text, shown)
    result.issues.extend(doc.issues)
    if doc.data is None and doc.issues:
        return result
    if not isinstance(doc.data, dict):
        result.issues.append(
            doc.issue((), "a spec is a mapping of keys (version, name, task, ...)", code="not-a-mapping")
        )
        return result
    context = {
        "project_root": project_root,
        "allowed_modules": tuple(allowed_modules) if allowed_modules else None,
    }
    try:
        spec = PipelineSpec.model_validate(doc.data, context=context)
    except ValidationError as exc:
        rejected = [i.key_path for i in doc.issues if i.code in _VALUE_DROPPED]
        result.issues.extend(
            i for i in _from_pydantic(exc, doc) if not any(i.key_path[: len(r)] == r for r in rejected)
        )
        spec = None
    result.issues.extend(_semantic_issues(doc))
    result.issues.extend(_secret_issues(doc, doc.data, ()))
    result.issues.sort(key=lambda i: (i.line, i.column))
    result.issues = _dedupe(result.issues)
    if not result.issues:
        result.spec = spec
        if cache is not None and cached is None:
            cache.put(result.sha256, doc.data)
    elif cached is not None:
        return load_spec(
            path,
            project_root=project_root,
            allowed_modules=allowed_modules,
            display_path=display_path,
            text=text,
        )
    return result


def check_unique_names(loaded: Sequence[LoadedSpec]) -> None:
    """Two files may not define the same pipeline (their DAG ids would collide); flag the later ones."""
    seen: dict[str, tuple[str, str]] = {}
    for item in loaded:
        claim_names(item, seen)


def claim_names(item: LoadedSpec, seen: dict[str, tuple[str, str]]) -> None:
    """:func:`check_unique_names` for one spec, so the loader can stream specs.

    ``seen`` maps the DAG ids claimed so far to (pipeline name, file); it holds no spec, so nothing
    of the earlier specs is kept alive.
    """
    name = item.spec.name if item.spec else None
    if name is None:
        return
    dag_ids = item.spec.dag_ids if item.spec else {name: "training"}
    clash = next((d for d in dag_ids if d in seen), None)
    if clash is not None:
        other_name, other_path = seen[clash]
        kind = dag_ids[clash]
        what = f"pipeline name {name!r}" if clash == name else f"this pipeline's {kind} DAG id {clash!r}"
        if other_name != clash:
            what += f" is a DAG id of pipeline {other_name!r} in {other_path}"
        else:
            what += f" is already used by {other_path}"
        doc = read_yaml(item.text, item.display_path)
        item.issues.append(
            doc.issue(
                ("name",), what, code="duplicate-name", hint="pipeline names are DAG ids and must be unique"
            )
        )
        item.spec = None
        return
    # Two pipelines registering one model would race for its @champion, each comparing against a holder
    # the other may move, and mix their lineage under one name (per MLflow connection: two servers may).
    assert item.spec is not None
    model_key = f"model:{item.spec.mlflow.conn_id or ''}:{item.spec.model_name}"
    if model_key in seen:
        other_name, other_path = seen[model_key]
        doc = read_yaml(item.text, item.display_path)
        path = ("mlflow", "model") if ("mlflow", "model") in doc.value_pos else ("name",)
        item.issues.append(doc.issue(
            path, f"registered model {item.spec.model_name!r} is already the model of pipeline "
            f"{other_name!r} in {other_path}", code="duplicate-model",
            hint="one registered model per pipeline: two pipelines promoting one model's @champion would "
            "overwrite each other's comparisons; set mlflow.model to a name of its own",
        ))  # fmt: skip
        item.spec = None
        return
    for dag_id in dag_ids:
        seen[dag_id] = (name, item.display_path)
    seen[model_key] = (name, item.display_path)


# --------------------------------------------------------------------------------------------------
# pydantic errors → located issues
# --------------------------------------------------------------------------------------------------
def _yaml_path(loc: tuple[Any, ...], doc: Located) -> KeyPath:
    """Drop the parts of a pydantic ``loc`` that are not keys in the YAML (union tags, validators)."""
    path: KeyPath = ()
    for part in loc:
        candidate = (*path, part)
        if candidate in doc.value_pos or candidate in doc.key_pos:
            path = candidate
    return path


def _from_pydantic(exc: ValidationError, doc: Located) -> list[SpecIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "extra_forbidden":
            path = _yaml_path(loc, doc)
            key = loc[-1]
            allowed = _allowed_keys(_yaml_path(loc[:-1], doc))
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = (
                f"did you mean `{close[0]}`?"
                if close
                else (f"allowed keys: {', '.join(allowed)}" if allowed else None)
            )
            issues.append(
                doc.issue(path, f"unknown key {key!r}", hint=hint, code="unknown-key", prefer_key=True)
            )
            continue
        path = _yaml_path(loc, doc)
        if kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            key = str(ctx.get("discriminator", "type")).strip("'")
            tags = str(ctx.get("expected_tags", ""))
            tag = ctx.get("tag")
            close = difflib.get_close_matches(str(tag), [t.strip(" '") for t in tags.split(",")], n=1)
            issues.append(
                doc.issue(
                    (*path, key),
                    f"unknown {path[-1] if path else 'value'} {key} {tag!r}; expected one of {tags}",
                    code="bad-enum",
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
            )
            continue
        if kind == "union_tag_not_found":
            key = str(err.get("ctx", {}).get("discriminator", "type")).strip("'")
            options = sorted(_discriminator_values(path, key))
            issues.append(
                doc.issue(
                    path,
                    f"missing required key {key!r}",
                    code="missing-key",
                    hint=f"add `{key}:` ({' or '.join(options)})" if options else None,
                )
            )
            continue
        if kind == "model_type":
            allowed = _allowed_keys(path)
            issues.append(
                doc.issue(
                    path,
                    "expected a mapping of keys",
                    code="wrong-type",
                    hint=f"keys: {', '.join(allowed)}" if allowed else None,
                )
            )
            continue
        if kind == "missing":
            parent = path
            name = loc[-1]
            issues.append(
                doc.issue(
                    parent,
                    f"missing required key {name!r}",
                    code="missing-key",
                    hint=f"add `{name}:`" + (" under " + ".".join(map(str, parent)) if parent else ""),
                )
            )
            continue
        hint = None
        if kind in ("literal_error", "enum"):
            expected = err.get("ctx", {}).get("expected")
            got = err.get("input")
            options = (
                [o.strip(" '\"") for o in str(expected).replace(" or ", ",").split(",")] if expected else []
            )
            close = difflib.get_close_matches(str(got), options, n=1)
            hint = f"did you mean `{close[0]}`?" if close else None
        elif kind == "list_type" and isinstance(err.get("input"), (str, int, float)):
            hint = f"write a list: [{err['input']}]"
        for line in message.split("\n"):
            issues.append(doc.issue(path, line, hint=hint, code=_code(kind)))
    return issues


_RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
        "too_short",
        "too_long",
        "string_too_short",
        "string_too_long",
    }
)


def _code(kind: str) -> str:
    """Pydantic's error type → the lint code. Our own validators already raise with a code (``bad-...``)."""
    if "-" in kind:
        return kind
    if kind in ("literal_error", "enum"):
        return "bad-enum"
    if kind in _RANGE_ERRORS:
        return "out-of-range"
    if kind.startswith(("date_", "datetime_")):
        return "bad-date"
    if kind.endswith(("_type", "_parsing")) or kind == "int_from_float":
        return "wrong-type"
    return "invalid"


def _unwrap(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, list[...], Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict):
        args = typing.get_args(annotation)
        if origin is dict:
            args = args[1:]
        return [m for a in args for m in _unwrap(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _discriminator_values(path: KeyPath, key: str) -> set[str]:
    """The values a tagged union at ``path`` accepts for ``key`` (``train.runner`` → local, docker)."""
    values: set[str] = set()
    for model in _models_at(path):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            values.update(map(str, typing.get_args(field.annotation)))
    return values


def _allowed_keys(path: KeyPath) -> list[str]:
    keys: list[str] = []
    for model in _models_at(path):
        keys.extend(info.alias or name for name, info in model.model_fields.items())
    return sorted(set(keys))


def _models_at(path: KeyPath) -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = [PipelineSpec]
    free_key = False  # the next part is a free key of a dict of models (thresholds.<metric>)
    for part in path:
        if isinstance(part, int):
            continue
        if free_key:
            free_key = False
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            for name, info in model.model_fields.items():
                if (info.alias or name) == part:
                    nxt.extend(_unwrap(info.annotation))
                    free_key = free_key or typing.get_origin(info.annotation) is dict
        models = nxt
    return models


# --------------------------------------------------------------------------------------------------
# checks across sections, on the raw data (so they run even when pydantic rejected something else)
# --------------------------------------------------------------------------------------------------
def _semantic_issues(doc: Located) -> list[SpecIssue]:
    data = doc.data
    task = data.get("task")
    if task not in METRICS:
        return []
    evaluate = data.get("evaluate") if isinstance(data.get("evaluate"), dict) else {}
    known = METRICS[task]
    raw_metrics = evaluate.get("metrics")
    metrics = (
        [m for m in raw_metrics if m in known] if isinstance(raw_metrics, list) else DEFAULT_METRICS[task]
    )
    issues = []
    if isinstance(raw_metrics, list):
        for i, metric in enumerate(raw_metrics):
            if metric in known:
                continue
            other = next((t for t, m in METRICS.items() if metric in m), None)
            if other:
                msg, hint = f"{metric!r} is a {other} metric, this is a {task} pipeline", None
            else:
                close = difflib.get_close_matches(str(metric), list(known), n=1)
                msg = f"unknown metric {metric!r}"
                hint = f"did you mean `{close[0]}`?" if close else None
            issues.append(
                doc.issue(
                    ("evaluate", "metrics", i),
                    msg,
                    code="bad-metric",
                    hint=hint or f"{task} metrics: {', '.join(known)}",
                )
            )
    thresholds = evaluate.get("thresholds")
    if isinstance(thresholds, dict):
        for metric in thresholds:
            if metric not in metrics:
                issues.append(
                    doc.issue(
                        ("evaluate", "thresholds", metric),
                        f"threshold on {metric!r}, which is not among the metrics",
                        hint=f"add it to evaluate.metrics ({', '.join(map(str, metrics))})",
                        code="bad-metric",
                        prefer_key=True,
                    )
                )
    champion = evaluate.get("champion")
    if (
        isinstance(champion, dict)
        and champion.get("metric") is not None
        and champion["metric"] not in metrics
    ):
        issues.append(
            doc.issue(
                ("evaluate", "champion", "metric"),
                f"champion metric {champion['metric']!r} is not among the metrics",
                hint=f"one of {', '.join(map(str, metrics))}",
                code="bad-metric",
            )
        )
    split = (data.get("ingest") or {}).get("split") if isinstance(data.get("ingest"), dict) else None
    if task == "regression" and isinstance(split, dict) and split.get("stratify") is True:
        issues.append(
            doc.issue(
                ("ingest", "split", "stratify"),
                "stratified splits only apply to classification",
                hint="remove it, or set it to false",
                code="bad-split",
            )
        )
    issues.extend(_transform_issues(doc, task))
    return issues


def _transform_issues(doc: Located, task: str) -> list[SpecIssue]:
    """A column in two of transform.columns' lists, the target among them, transform with an entrypoint,
    a positive class for a regression."""
    data = doc.data
    issues: list[SpecIssue] = []
    ingest = data.get("ingest")
    target = ingest.get("target", "target") if isinstance(ingest, dict) else "target"
    transform = data.get("transform")
    if isinstance(transform, dict):
        train = data.get("train") if isinstance(data.get("train"), dict) else {}
        if train.get("entrypoint") is not None:
            issues.append(doc.issue(
                ("transform",), "transform applies to an estimator, not to an entrypoint",
                hint="an entrypoint gets the raw columns and prepares them itself; or use train.estimator",
                code="transform-entrypoint", prefer_key=True,
            ))
        columns = transform.get("columns")
        columns = columns if isinstance(columns, dict) else {}
        seen: dict[str, str] = {}
        for kind in ("numeric", "categorical", "drop"):
            names = columns.get(kind)
            if not isinstance(names, list):
                continue
            for i, name in enumerate(names):
                where = ("transform", "columns", kind, i)
                if name == target:
                    issues.append(doc.issue(
                        where, f"{name!r} is the target (ingest.target), not a feature",
                        hint="the target is never transformed; remove it from this list", code="bad-column",
                    ))
                elif name in seen:
                    issues.append(doc.issue(
                        where, f"column {name!r} is in transform.columns.{seen[name]} too",
                        hint="a column is numeric, categorical or dropped: name it in one list",
                        code="bad-column",
                    ))
                else:
                    seen[str(name)] = kind
    issues.extend(_tune_issues(doc, task))
    evaluate = data.get("evaluate") if isinstance(data.get("evaluate"), dict) else {}
    if task == "regression" and evaluate.get("positive_class") is not None:
        issues.append(doc.issue(
            ("evaluate", "positive_class"), "positive_class only applies to classification",
            hint="remove it", code="bad-metric", prefer_key=True,
        ))
    return issues


def _tune_issues(doc: Located, task: str) -> list[SpecIssue]:
    """train.tune: parallel <= trials, ranges ordered, log only on positive ranges, the metric among the
    metrics, and an estimator (not an entrypoint) to tune."""
    data = doc.data
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    tune = train.get("tune")
    if not isinstance(tune, dict):
        return []
    issues: list[SpecIssue] = []
    if train.get("entrypoint") is not None:
        issues.append(doc.issue(("train", "tune"), "train.tune searches an estimator's parameters, not an "
                                "entrypoint's", hint="use train.estimator", code="bad-tune", prefer_key=True))
    trials, parallel = tune.get("trials", 20), tune.get("parallel", 1)
    if isinstance(trials, int) and isinstance(parallel, int) and parallel > trials:
        issues.append(doc.issue(("train", "tune", "parallel"),
                                f"parallel ({parallel}) exceeds trials ({trials})",
                                hint="at most one task per trial", code="bad-tune"))
    evaluate = data.get("evaluate") if isinstance(data.get("evaluate"), dict) else {}
    raw = evaluate.get("metrics")
    metrics = ([m for m in raw if isinstance(m, str)] if isinstance(raw, list)
               else DEFAULT_METRICS.get(task, []))
    metric = tune.get("metric")
    if metric is not None and metric not in metrics:
        issues.append(doc.issue(("train", "tune", "metric"),
                                f"tune metric {metric!r} is not among the metrics",
                                hint=f"one of {', '.join(metrics)}", code="bad-metric"))
    space = tune.get("space")
    for name, param in (space.items() if isinstance(space, dict) else ()):
        if not isinstance(param, dict):
            continue
        bounds = param.get("int", param.get("float"))
        if isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds):
            low, high = bounds
            kind = "int" if "int" in param else "float"
            if low >= high:
                issues.append(doc.issue(("train", "tune", "space", name, kind),
                                        f"range [{low}, {high}] of {name!r} is not ordered (low < high)",
                                        code="bad-tune"))
            elif param.get("log") and low <= 0:
                issues.append(doc.issue(("train", "tune", "space", name, "log"),
                                        f"a log scale needs a positive range; {name!r} starts at {low}",
                                        hint="start above 0, or drop log", code="bad-tune"))
    return issues


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen = set()
    out = []
    for issue in issues:
        key = (issue.line, issue.column, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


# --------------------------------------------------------------------------------------------------
# literal secrets: a spec lives in git and is shown in the DAG docs, so a secret must come from Airflow
# --------------------------------------------------------------------------------------------------
_SECRET_HINT = (
    'use "{{ conn.<conn_id>.password }}" or "{{ var.value.<name> }}" instead; '
    "a literal secret ends up in git and in the DAG docs"
)


def _is_templated(value: str) -> bool:
    return "{{" in value and "}}" in value


def _secret_issues(doc: Located, value: Any, path: KeyPath) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = (*path, key)
            literal = (isinstance(child, str) and child.strip() and not _is_templated(child)) or (
                isinstance(child, (int, float)) and not isinstance(child, bool)
            )
            if literal and is_secret_key(str(key)):
                issues.append(
                    doc.issue(
                        child_path,
                        f"{key!r} looks like a secret but has a literal value",
                        hint=_SECRET_HINT,
                        code="literal-secret",
                    )
                )
            else:
                issues.extend(_secret_issues(doc, child, child_path))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            issues.extend(_secret_issues(doc, child, (*path, i)))
    elif isinstance(value, str) and URL_PASSWORD.search(value) and not _is_templated(value):
        issues.append(
            doc.issue(path, "the URL contains a password", hint=_SECRET_HINT, code="literal-secret")
        )
    return issues
