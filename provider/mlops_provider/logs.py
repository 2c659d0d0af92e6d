"""Library log noise, silenced at its source (a logger's level or a filter), so task logs show what matters.

* Great Expectations logs ~200 "Skipping registering function ..." lines at INFO while it imports (its
  public-API docs registry): :func:`quiet_great_expectations` raises that one logger to WARNING.
* MLflow warns on every cloudpickle save that pickle formats can run code when loaded; the stages choose
  cloudpickle on purpose (skops rejects most estimators) and load only models this pipeline logged, and
  MLflow's stderr handler makes the notice an ERROR line in Airflow's log: :func:`expected_pickle_notice`
  drops exactly that record while a model is saved. Every other warning still shows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

_GX_DOCS_REGISTRY = "great_expectations._docs_decorators"
_PICKLE_NOTICE = "Saving scikit-learn models in the pickle or cloudpickle format"


def quiet_great_expectations() -> None:
    """Call before ``import great_expectations``."""
    logging.getLogger(_GX_DOCS_REGISTRY).setLevel(logging.WARNING)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def expected_pickle_notice() -> Iterator[None]:
    """While the block runs, MLflow's notice about saving with cloudpickle is not logged."""
    logger = logging.getLogger("mlflow.sklearn")
    drop = _DropMessage(_PICKLE_NOTICE)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
