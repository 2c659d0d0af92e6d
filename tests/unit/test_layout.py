"""The layout tells the architecture, and these imports keep it honest (README "Layout").

Spec → plan → render in one direction; the stages, the MLflow vocabulary (``tracking``), the spec and the
plan know nothing of Airflow; a stage does not import another stage, nor the hook (it takes a client).
Every import is checked, also those inside functions, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "provider" / "mlops_provider"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden) and not any(
                module == a or module.startswith(a + ".") for a in allowed
            ):
                out.append(f"{path.relative_to(PACKAGE)}:{line}: imports {module}")
    return out


NO_AIRFLOW = ("airflow", "mlops_provider.hooks", "mlops_provider.operators", "mlops_provider.sensors",
              "mlops_provider.triggers", "mlops_provider.render", "mlops_provider.loader",
              "mlops_provider.plugins", "mlops_provider.links", "mlops_provider.inprocess")  # fmt: skip


@pytest.mark.parametrize("package", ["spec", "plan", "tracking", "stages"])
def test_no_airflow_below_the_operators(package: str) -> None:
    assert _violations(package, NO_AIRFLOW) == []


def test_stages_do_not_import_each_other() -> None:
    violations = []
    for path in sorted((PACKAGE / "stages").glob("*.py")):
        for line, module in _imports(path):
            if module.startswith("mlops_provider.stages.") and module != f"mlops_provider.stages.{path.stem}":
                violations.append(f"stages/{path.name}:{line}: imports {module}")
    assert violations == []


def test_spec_and_plan_go_one_way() -> None:
    """spec knows nothing of plan or render; plan knows spec, not render; tracking knows neither."""
    spec_must_not_import = ("mlops_provider.plan", "mlops_provider.render", "mlops_provider.stages")
    assert _violations("spec", spec_must_not_import) == []
    assert _violations("plan", ("mlops_provider.render", "mlops_provider.stages")) == []
    assert _violations("tracking", ("mlops_provider.spec", "mlops_provider.plan", "mlops_provider.stages",
                                    "mlops_provider.storage")) == []  # fmt: skip
