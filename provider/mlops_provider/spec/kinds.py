"""The DAG kinds a spec can produce, in one table.

Read by the spec (the DAG ids it claims, checked for clashes across files), the plan builder (one
builder per kind), the loader (which spec a worker must read for a DAG id), ``mlops run --dag`` and
``mlops show``. A new kind is one entry here plus its builder in :mod:`mlops_provider.plan.build`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_provider.spec.schema import PipelineSpec


@dataclass(frozen=True)
class DagKind:
    name: str  # what ``mlops run --dag`` takes, and the ``mlops:<name>`` tag of the DAG
    suffix: str  # the DAG id is the pipeline name plus this
    title: str  # how the DAG's docs name it
    made_by: str  # the spec section that adds it (for messages and docs)
    present: Callable[[PipelineSpec], bool]
    builder: str  # "module:function" in the plan package: (spec, PlanContext) -> DagPlan

    def dag_id(self, pipeline: str) -> str:
        return pipeline + self.suffix


DAG_KINDS: tuple[DagKind, ...] = (
    DagKind("training", "", "training", "(always)", lambda spec: True,
            "mlops_provider.plan.build:training_dag"),
    DagKind("monitor", "_monitor", "monitor", "monitor", lambda spec: spec.monitor is not None,
            "mlops_provider.plan.build:monitor_dag"),
    DagKind("batch", "_batch", "batch scoring", "deploy.batch", lambda spec: spec.deploy.batch is not None,
            "mlops_provider.plan.build:batch_dag"),
    DagKind("serve", "_serve", "serving", "deploy.targets", lambda spec: bool(spec.deploy.targets),
            "mlops_provider.plan.build:serve_dag"),
)  # fmt: skip

KIND_NAMES: tuple[str, ...] = tuple(kind.name for kind in DAG_KINDS)


def kind_named(name: str) -> DagKind:
    for kind in DAG_KINDS:
        if kind.name == name:
            return kind
    raise KeyError(f"no DAG kind {name!r}; kinds: {', '.join(KIND_NAMES)}")


def may_be_dag_of(dag_id: str, pipeline: str) -> bool:
    """Could pipeline ``pipeline`` produce ``dag_id``? (Whatever its spec enables.)"""
    return any(dag_id == kind.dag_id(pipeline) for kind in DAG_KINDS)
