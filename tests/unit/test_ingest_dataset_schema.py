"""The schema ingest logs with each split (MLflow dataset input) is the one MLflow itself would infer,
computed without MLflow's per-value Python scan (which took ~35 s per 1M x 20 table)."""

from __future__ import annotations

import warnings
from importlib import resources

import pytest


@pytest.fixture(scope="module")
def penguins():  # a real table: strings, ints, floats, missing values in several columns
    import pandas as pd

    with resources.as_file(resources.files("palmerpenguins") / "data" / "penguins-raw.csv") as path:
        return pd.read_csv(path)


def test_the_schema_is_mlflows_own_inference(penguins) -> None:
    from mlflow.data.pandas_dataset import from_pandas

    from mlops_provider.stages.ingest import column_schema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = from_pandas(penguins, source="penguins-raw.csv").schema
        got = column_schema(penguins)
    assert expected is not None and got is not None
    assert got.to_dict() == expected.to_dict()
    optional = {spec["name"] for spec in got.to_dict() if not spec.get("required", True)}
    assert {"Sex", "Culmen Length (mm)", "Comments"} <= optional
    assert "Species" not in optional


def test_a_value_missing_only_after_the_sample_makes_the_column_optional(penguins) -> None:
    from mlops_provider.stages.ingest import column_schema

    frame = penguins[["Species", "Sample Number"]].astype({"Sample Number": "float64"}).copy()
    frame.loc[len(frame) - 1, "Species"] = None
    frame.loc[len(frame) - 1, "Sample Number"] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = column_schema(frame, sample_rows=10).to_dict()
    assert [spec.get("required", True) for spec in schema] == [False, False]
