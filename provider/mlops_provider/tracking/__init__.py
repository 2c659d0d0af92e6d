"""MLflow vocabulary shared by every stage, with no Airflow in it.

* :mod:`~mlops_provider.tracking.tags` — every tag and metadata key this provider writes: the lineage
  contract, i.e. what a user can query in MLflow (its docstring lists them).
* :mod:`~mlops_provider.tracking.models` — one reference to a registered model version, one alias
  resolution, one ``load_model``.
* :mod:`~mlops_provider.tracking.runs` — the pipeline run of a DAG run: its key, lineage tags, the git
  commit, start/resume, end and the record of a failure.

Everything here takes an ``MlflowClient`` (the hook's, in a task) and imports MLflow only inside the
functions that need it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MLflowAccess(Protocol):
    """What the stages need of an MLflow connection (the Airflow hook is one): the client, and a scope
    in which MLflow's module-level API (``mlflow.sklearn.log_model``, ``models:/`` URIs) reaches it."""

    @property
    def client(self) -> MlflowClient: ...

    def activate(self) -> contextlib.AbstractContextManager[Any]: ...
