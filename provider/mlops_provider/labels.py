"""Class labels: which one is "positive" in a binary task, the same in evaluate, the champion comparison
and the monitor's performance report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops_provider.exceptions import DataValidationError


def positive_label(labels: Sequence[Any], wanted: Any = None) -> Any:
    """The positive class of a binary task: ``wanted`` (``evaluate.positive_class``) when given, else the
    second of the two labels sorted (``1`` of 0/1, ``True`` of booleans, ``"Yes"`` of No/Yes)."""
    ordered = sorted(labels, key=lambda v: (str(type(v)), v))
    if wanted is None:
        return ordered[-1]
    for label in ordered:
        if label == wanted or str(label) == str(wanted):
            return label
    raise DataValidationError(
        f"evaluate.positive_class {wanted!r} is not a label of the test set; its labels are "
        f"{', '.join(map(repr, ordered))}"
    )
