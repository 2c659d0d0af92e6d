"""airflow-provider-mlops: YAML-specified ML pipelines on Apache Airflow 3, with MLflow.

The public API is imported lazily so that ``import mlops_provider`` (which Airflow does on every DAG
parse, through the loader) costs nothing more than the pieces actually used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_pipelines": "mlops_provider.loader",
    "PipelineSpec": "mlops_provider.spec.schema",
    "SpecError": "mlops_provider.exceptions",
}

__all__ = ["PipelineSpec", "SpecError", "__version__", "load_pipelines"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlops_provider' has no attribute {name!r}")
