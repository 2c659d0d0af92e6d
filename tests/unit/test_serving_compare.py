"""How a serving target's answers are compared with the model's own predictions (the health check's verdict).

Pure function, no boundary faked: the integration test (tests/integration/test_serving_docker.py) covers
the container; these cases cover answers a real server can give that the container test cannot provoke
cheaply (a drift beyond the tolerance, a missing row, labels as strings, probabilities per class).
"""

from __future__ import annotations

import math

from mlops_provider.serving.base import compare


def test_answers_within_the_tolerance_pass() -> None:
    assert compare([0.5, 1.25, 3.0], [0.5000001, 1.25, 3.0], tolerance=1e-6) == []
    assert compare(["setosa", "virginica"], ["setosa", "virginica"], tolerance=0) == []
    assert compare([[0.1, 0.9], [0.7, 0.3]], [[0.1, 0.9], [0.7, 0.3]], tolerance=0) == []
    assert compare([math.nan], [float("nan")], tolerance=0) == []


def test_each_differing_row_is_named_with_what_was_expected_and_what_came_back() -> None:
    assert compare([0.5, 1.25, 3.0], [0.5, 1.26, 2.0], tolerance=1e-3) == [
        "row 1: expected 1.25, got 1.26",
        "row 2: expected 3.0, got 2.0",
    ]
    assert compare(["setosa"], ["virginica"], tolerance=1.0) == ["row 0: expected 'setosa', got 'virginica'"]
    assert compare([[0.1, 0.9]], [[0.2, 0.8]], tolerance=0.01) == [
        "row 0: expected [0.1, 0.9], got [0.2, 0.8]"
    ]


def test_a_missing_row_fails() -> None:
    assert compare([0, 1, 1], [0, 1], tolerance=0) == ["2 predictions for 3 rows"]
