#!/usr/bin/env python3
"""Does requirements.lock pin what pyproject.toml asks for? (``make lock-check``, run by CI.)

``make lock`` resolves ``pip install -e .[all,dev]`` in a fresh venv and freezes it, headed by the
fingerprint of pyproject.toml's requirements (``--fingerprint`` prints it). This check fails when the
requirements changed since (the lock is stale: run ``make lock``) or when a requirement has no pin.
A re-resolution would not reproduce the same pins tomorrow (PyPI moves), so that is not what is compared.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# pyproject requirements sha256: "


def requirements(pyproject: dict) -> list[str]:
    project = pyproject["project"]
    own = project["name"]
    found = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        found += [r for r in extra if not r.startswith(own)]
    return found


def fingerprint(pyproject: dict) -> str:
    project = pyproject["project"]
    payload = {"requires-python": project.get("requires-python"), "dependencies": project.get("dependencies"),
               "optional-dependencies": project.get("optional-dependencies")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def main(argv: list[str]) -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    if argv[1:] == ["--fingerprint"]:
        print(HEADER + fingerprint(pyproject))
        return 0
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    problems = []
    recorded = next((line.removeprefix(HEADER) for line in lock if line.startswith(HEADER)), None)
    if recorded != fingerprint(pyproject):
        problems.append("pyproject.toml's requirements changed since requirements.lock was made")
    pinned = {_name(line.split("==")[0]) for line in lock if "==" in line and not line.startswith("#")}
    missing = sorted({_name(r) for r in requirements(pyproject)} - pinned)
    if missing:
        problems.append(f"not pinned in requirements.lock: {', '.join(missing)}")
    for problem in problems:
        print(f"lock-check: {problem}; run `make lock`", file=sys.stderr)
    if not problems:
        print(f"lock-check: requirements.lock pins all {len(requirements(pyproject))} requirements")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
