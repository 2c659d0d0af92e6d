"""A ``__pycache__`` for spec YAML: the parsed data of each spec file, keyed by the SHA-256 of its text.

Parsing the YAML (libyaml composing nodes, then our located walk) is the largest cost of reading a spec
at DAG-parse time; Python skips the equivalent step for hand-written DAG files with its ``.pyc`` files.
This cache skips it the same way: the loader looks up each spec's text hash and, on a hit, gets the
plain data back from :mod:`marshal` in microseconds. Everything after the YAML (schema validation, the
semantic and secret checks, plan, DAG) runs as always, so a cached spec yields exactly the same DAGs.

* Keyed by content: a changed file has a new hash and is parsed again, an unchanged one never is.
  Entries for files that no longer exist are dropped when the whole folder is loaded.
* Only specs that were valid are stored, and positions (line/column) are not: when a cached spec now
  has an issue (e.g. a file it names was deleted), :func:`~mlops_provider.spec.load.load_spec` parses
  the text again, so the issues and their positions are those of an uncached read.
* Invalidated as a whole when the YAML reader changes (the source file of
  :mod:`~mlops_provider.spec.yaml_source`, the PyYAML version) or its format changes.
* Lives in ``<folder>/__pycache__/`` (where Python keeps the bytecode of DAG files, and as trusted as
  the folder itself), is written atomically, and like bytecode is not written when
  ``PYTHONDONTWRITEBYTECODE`` is set; ``[mlops] spec_cache = False`` turns it off. Any problem with the
  file (unreadable, read-only folder, corrupt) means "no cache", never an error.
"""

from __future__ import annotations

import datetime as dt
import logging
import marshal
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
FILE_NAME = "mlops_specs.marshal"


def _reader_fingerprint() -> tuple[Any, ...]:
    import yaml

    from mlops_provider.spec import yaml_source

    try:
        st = os.stat(yaml_source.__file__)
        source: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except (OSError, TypeError):
        source = None
    return (FORMAT, yaml.__version__, bool(getattr(yaml, "__with_libyaml__", False)), source)


# --------------------------------------------------------------------------------------------------
# data <-> marshal: YAML data is dicts, lists, str, int, float, bool, None and dates/datetimes; marshal
# has no dates, so they are stored apart, as (path, constructor arguments)
# --------------------------------------------------------------------------------------------------
def _plain(value: Any, path: tuple[Any, ...], dates: list[tuple[Any, ...]]) -> Any:
    """``value`` with every date/datetime replaced by None and recorded in ``dates``."""
    if isinstance(value, dict):
        return {key: _plain(child, (*path, key), dates) for key, child in value.items()}
    if isinstance(value, list):
        return [_plain(child, (*path, i), dates) for i, child in enumerate(value)]
    if isinstance(value, dt.datetime):
        offset = value.utcoffset()
        dates.append((path, 1, (value.year, value.month, value.day, value.hour, value.minute, value.second,
                                value.microsecond), None if offset is None else offset.total_seconds()))
        return None
    if isinstance(value, dt.date):
        dates.append((path, 0, (value.year, value.month, value.day), None))
        return None
    return value


def encode(data: Any) -> bytes:
    dates: list[tuple[Any, ...]] = []
    plain = _plain(data, (), dates)
    return marshal.dumps((plain, dates))


def decode(blob: bytes) -> Any:
    data, dates = marshal.loads(blob)
    for path, kind, args, offset in dates:
        if kind == 0:
            value: Any = dt.date(*args)
        else:
            tz = None if offset is None else dt.timezone(dt.timedelta(seconds=offset))
            value = dt.datetime(*args).replace(tzinfo=tz)
        if not path:
            return value
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = value
    return data


class SpecCache:
    """The cache of one spec folder; use :meth:`open`, then :meth:`get` / :meth:`put`, then :meth:`save`."""

    def __init__(self, file: Path, entries: dict[str, bytes], *, writable: bool) -> None:
        self.file = file
        self._entries = entries
        self._used: set[str] = set()
        self._dirty = False
        self.writable = writable
        self.hits = 0

    @classmethod
    def open(cls, folder: Path) -> SpecCache:
        file = folder / "__pycache__" / FILE_NAME
        entries: dict[str, bytes] = {}
        try:
            raw = file.read_bytes()
        except OSError:
            raw = None
        if raw is not None:
            try:
                fingerprint, stored = marshal.loads(raw)
                if fingerprint == _reader_fingerprint() and isinstance(stored, dict):
                    entries = stored
            except Exception:  # corrupt or foreign: start afresh
                log.debug("ignoring unreadable spec cache %s", file, exc_info=True)
        return cls(file, entries, writable=not sys.dont_write_bytecode)

    def get(self, sha256: str) -> Any | None:
        blob = self._entries.get(sha256)
        if blob is None:
            return None
        try:
            data = decode(blob)
        except Exception:
            log.debug("ignoring a corrupt spec cache entry in %s", self.file, exc_info=True)
            return None
        if not isinstance(data, dict):
            return None
        self._used.add(sha256)
        self.hits += 1
        return data

    def put(self, sha256: str, data: Any) -> None:
        self._used.add(sha256)
        if sha256 not in self._entries:
            try:
                self._entries[sha256] = encode(data)
            except ValueError:  # a value marshal cannot hold: just don't cache this spec
                return
            self._dirty = True

    def save(self, *, prune: bool) -> None:
        """Write the cache if it changed; ``prune`` (the whole folder was read) drops unused entries."""
        if prune and len(self._used) != len(self._entries):
            self._entries = {k: v for k, v in self._entries.items() if k in self._used}
            self._dirty = True
        if not (self._dirty and self.writable):
            return
        try:
            self.file.parent.mkdir(exist_ok=True)
            blob = marshal.dumps((_reader_fingerprint(), self._entries))
            fd, tmp = tempfile.mkstemp(prefix=FILE_NAME + ".", dir=self.file.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(blob)
                os.replace(tmp, self.file)
            except BaseException:
                os.unlink(tmp)
                raise
            self._dirty = False
        except OSError:  # read-only bundle, full disk...: parsing works the same without the cache
            log.debug("could not write the spec cache %s", self.file, exc_info=True)
