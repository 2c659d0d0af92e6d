"""Safe YAML reading that remembers where every value came from.

The YAML is *composed* into nodes (never constructed by PyYAML), so no tag can run code: only the
plain YAML 1.1 scalar types are turned into Python values; any explicit tag (``!!python/object``,
``!Ref``...) is an error. Aliases are expanded against a node budget so an alias bomb costs bounded
time and memory. Duplicate keys and tab indentation are errors too, reported with line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mlops_provider.exceptions import SpecIssue

try:  # libyaml parses ~10x faster; it keeps the marks we need.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _BaseLoader = yaml.SafeLoader

_RESOLVED: dict[str, str] = {}  # plain scalar text -> implicit tag (it depends on the text alone)
_RESOLVED_MAX = 20_000


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader with a memo on implicit-tag resolution (regex matching per scalar).

    Keys and most values repeat from spec to spec, so most look-ups hit; this is a third of the
    time libyaml spends composing a spec. Resolution of a plain scalar depends only on its text
    (the safe loader has no path resolvers), so the memo cannot change a tag.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0] and not self.yaml_path_resolvers:
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) >= _RESOLVED_MAX:
                    _RESOLVED.clear()
                _RESOLVED[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


MAX_BYTES = 1_000_000
MAX_NODES = 20_000
MAX_DEPTH = 64  # far beyond any real spec; keeps the recursion below Python's limit
_TAB_INDENT = re.compile(r"^[ ]*\t", re.M)

KeyPath = tuple[str | int, ...]

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
_constructor = yaml.SafeLoader("")  # only its construct_scalar helpers are used, on plain tags
_STR = "tag:yaml.org,2002:str"
# called directly, not through construct_object(), which memoizes every node it ever built
_SCALAR_CONSTRUCTORS = {
    tag: _constructor.yaml_constructors[tag]
    for tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp")
}


def _scalar(node: yaml.ScalarNode) -> Any:
    """The Python value of a plain-tagged scalar (ValueError for e.g. an impossible date)."""
    tag = node.tag
    if tag == _STR:
        return node.value
    construct = _SCALAR_CONSTRUCTORS.get(tag)
    if construct is None:  # a scalar explicitly tagged !!map or !!seq
        return _constructor.construct_object(node)
    return construct(_constructor, node)


@dataclass
class Located:
    """A YAML document as plain Python data plus the position of every key and value."""

    file: str
    data: Any = None
    value_pos: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    key_pos: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    issues: list[SpecIssue] = field(default_factory=list)

    def position(self, path: KeyPath, *, prefer_key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of ``path``, or of its nearest located ancestor."""
        path = tuple(path)
        while True:
            if prefer_key and path in self.key_pos:
                return self.key_pos[path]
            if path in self.value_pos:
                return self.value_pos[path]
            if path in self.key_pos:
                return self.key_pos[path]
            if not path:
                return (1, 1)
            path = path[:-1]

    def issue(self, path: KeyPath, message: str, *, hint: str | None = None, code: str = "invalid",
              prefer_key: bool = False) -> SpecIssue:
        line, col = self.position(path, prefer_key=prefer_key)
        return SpecIssue(self.file, line, col, message, tuple(path), hint, code)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _pos(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Budget(Exception):
    pass


def read_yaml(text: str, file: str) -> Located:
    """Parse ``text``; every problem becomes a :class:`SpecIssue` in ``.issues`` (never raised)."""
    doc = Located(file=file)
    if len(text) > MAX_BYTES // 4 and len(text.encode("utf-8", "replace")) > MAX_BYTES:
        doc.issues.append(SpecIssue(file, 1, 1, f"file is larger than {MAX_BYTES} bytes", code="too-large"))
        return doc
    for match in _TAB_INDENT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        col = match.end() - match.start()
        doc.issues.append(SpecIssue(file, line, col, "tab character in indentation",
                                    hint="YAML indents with spaces only", code="tab"))
    if doc.issues:
        return doc
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = str(exc.problem or exc.context)
        if exc.context and exc.problem:
            started = exc.context_mark
            where = f" that starts at line {started.line + 1}, column {started.column + 1}" if started else ""
            msg += f" ({exc.context}{where})"
        doc.issues.append(SpecIssue(file, line, col, f"YAML syntax error: {msg}", code="yaml-syntax"))
        return doc
    except yaml.YAMLError as exc:
        doc.issues.append(SpecIssue(file, 1, 1, f"YAML error: {exc}", code="yaml-syntax"))
        return doc
    if len(nodes) > 1:
        line, col = _pos(nodes[1])
        doc.issues.append(SpecIssue(file, line, col, "a spec file holds exactly one YAML document",
                                    code="multi-document"))
        return doc
    if not nodes or nodes[0] is None:
        doc.issues.append(SpecIssue(file, 1, 1, "the file is empty", code="empty"))
        return doc
    budget = [MAX_NODES]
    try:
        doc.data = _to_python(nodes[0], (), doc, budget)
    except _Budget as exc:
        doc.data = None
        if exc.args:
            line, col = doc.position(exc.args[0])
            message = f"values are nested more than {MAX_DEPTH} levels deep"
            doc.issues.append(SpecIssue(file, line, col, message, exc.args[0][:2], code="too-deep"))
        else:
            doc.issues.append(SpecIssue(
                file, 1, 1, f"the document expands to more than {MAX_NODES} values (alias bomb?)",
                hint="remove the anchors/aliases (&x / *x)", code="alias-bomb"))
    return doc


def _to_python(node: yaml.Node, path: KeyPath, doc: Located, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _Budget
    if len(path) > MAX_DEPTH:
        raise _Budget(path)
    value_pos = doc.value_pos
    if path not in value_pos:
        mark = node.start_mark
        value_pos[path] = (mark.line + 1, mark.column + 1)
    if node.tag not in _PLAIN_TAGS:
        line, col = _pos(node)
        doc.issues.append(SpecIssue(
            doc.file, line, col, f"YAML tag {_short_tag(node.tag)!r} is not allowed", path,
            "specs are plain data: strings, numbers, booleans, lists and mappings", "yaml-tag"))
        return None
    if isinstance(node, yaml.ScalarNode):
        try:
            return _scalar(node)  # plain tag: str/int/float/bool/null/timestamp
        except ValueError as exc:  # 2026-13-01 is tagged timestamp by the resolver, then fails
            line, col = _pos(node)
            kind = "date" if node.tag.endswith(":timestamp") else _short_tag(node.tag).lstrip("!")
            doc.issues.append(SpecIssue(doc.file, line, col, f"invalid {kind} {node.value!r}: {exc}", path,
                                        code="bad-date" if kind == "date" else "invalid-scalar"))
            return None
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(child, (*path, i), doc, budget) for i, child in enumerate(node.value)]
    out: dict[Any, Any] = {}
    key_pos = doc.key_pos
    scalar_node = yaml.ScalarNode
    for key_node, value_node in node.value:
        if key_node.tag == _STR and type(key_node) is scalar_node:  # the common case, checked cheaply
            key = key_node.value
        else:
            if key_node.tag == "tag:yaml.org,2002:merge":
                line, col = _pos(key_node)
                doc.issues.append(SpecIssue(doc.file, line, col, "merge keys (<<) are not supported", path,
                                            "write the keys out", "merge-key"))
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
                line, col = _pos(key_node)
                doc.issues.append(SpecIssue(doc.file, line, col, "mapping keys must be plain strings", path,
                                            code="bad-key"))
                continue
            # a key is its text: YAML 1.1 reads `on:` (monitor.alerts[].on), `yes:`, `off:` as booleans
            key = key_node.value
        child = (*path, key)
        if key in out:
            line, col = _pos(key_node)
            first = key_pos[child]
            first_at = f"first defined at line {first[0]}, column {first[1]}"
            doc.issues.append(SpecIssue(doc.file, line, col, f"duplicate key {key!r}", child, first_at,
                                        "duplicate-key"))
            continue
        mark = key_node.start_mark
        key_pos[child] = (mark.line + 1, mark.column + 1)
        if value_node.tag == _STR and type(value_node) is scalar_node:  # inline _to_python() of a string
            budget[0] -= 1
            if budget[0] < 0:
                raise _Budget
            if len(child) > MAX_DEPTH:
                raise _Budget(child)
            if child not in value_pos:
                mark = value_node.start_mark
                value_pos[child] = (mark.line + 1, mark.column + 1)
            out[key] = value_node.value
        else:
            out[key] = _to_python(value_node, child, doc, budget)
    return out
