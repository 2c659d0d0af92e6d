"""Validate: run Great Expectations 1.x on the ingested snapshot, report every failure precisely.

Expectations come from the spec (``- expect_column_values_to_not_be_null: {column: age}``) and/or a GX
suite JSON file. An ephemeral GX context is used (nothing written, analytics off, no progress bars).
The full result JSON and a readable HTML report are logged to the pipeline's MLflow run.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import DataValidationError, StageError
from mlops_provider.storage import workspace

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

RESULT_ARTIFACT = "validation/result.json"
REPORT_ARTIFACT = "validation/report.html"
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COLUMN_KEYS = ("column", "column_A", "column_B", "column_list")


@dataclass(frozen=True)
class Expectation:
    type: str
    kwargs: dict[str, Any]

    @property
    def column(self) -> str | None:
        for key in _COLUMN_KEYS:
            if key in self.kwargs:
                value = self.kwargs[key]
                return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        return None

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.type}({args})"


@dataclass(frozen=True)
class Outcome:
    expectation: Expectation
    success: bool
    observed: Any
    details: str

    def as_failure(self) -> dict[str, Any]:
        return {"expectation": self.expectation.type, "column": self.expectation.column,
                "observed": self.observed, "details": self.details}


@dataclass
class Report:
    success: bool
    outcomes: list[Outcome]
    rows: int
    result_json: dict[str, Any] = field(repr=False)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        if self.success:
            return f"all {len(self.outcomes)} expectation(s) met on {self.rows} rows"
        lines = [f"{len(self.failed)} of {len(self.outcomes)} expectation(s) not met on {self.rows} rows:"]
        for outcome in self.failed:
            column = f" on column {outcome.expectation.column!r}" if outcome.expectation.column else ""
            lines.append(f"  - {outcome.expectation.type}{column}: {outcome.details}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# expectations from the spec and from suite files
# --------------------------------------------------------------------------------------------------
def from_spec(items: Sequence[Mapping[str, Mapping[str, Any] | None]]) -> list[Expectation]:
    """``[{expectation_name: kwargs}, ...]`` as in the spec."""
    out = []
    for item in items:
        if not isinstance(item, Mapping) or len(item) != 1:
            raise StageError(f"an expectation is a one-key mapping {{name: kwargs}}, not {item!r}")
        ((name, kwargs),) = item.items()
        out.append(Expectation(str(name), dict(kwargs or {})))
    return out


def from_suite_file(path: str) -> list[Expectation]:
    """A GX suite JSON file (1.x ``type`` or 0.x ``expectation_type`` entries), under the project root."""
    resolved = workspace.project_path(path, what="expectation suite")
    try:
        data = json.loads(resolved.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read the expectation suite {path}: {exc}") from exc
    entries = data.get("expectations") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise StageError(f"{path} is not a Great Expectations suite (no 'expectations' list)")
    out = []
    for entry in entries:
        name = entry.get("type") or entry.get("expectation_type")
        if not name:
            raise StageError(f"{path}: an expectation without 'type': {entry!r}")
        out.append(Expectation(str(name), dict(entry.get("kwargs") or {})))
    return out


def _normalise_dates(expectation: Expectation, frame: pd.DataFrame) -> Expectation:
    """``2024-01-01`` against a datetime column fails in GX 1.x; it needs a full timestamp."""
    import pandas as pd

    column = expectation.kwargs.get("column")
    if column not in frame.columns or not pd.api.types.is_datetime64_any_dtype(frame[column]):
        return expectation
    kwargs = {
        key: f"{value}T00:00:00" if isinstance(value, str) and _DATE_ONLY.match(value) else value
        for key, value in expectation.kwargs.items()
    }
    return Expectation(expectation.type, kwargs)


# --------------------------------------------------------------------------------------------------
# running GX
# --------------------------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, float):  # np.float64 too: plain floats keep messages readable
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return str(value)


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error")
    for nested in info.values():
        message = _exception_message(nested)
        if message:
            return message
    return None


def _observed(result: Mapping[str, Any], error: str | None) -> tuple[Any, str]:
    if error:
        return f"error: {error}", f"could not be evaluated: {error}"
    if "observed_value" in result:
        observed = _json_safe(result["observed_value"])
        return observed, f"observed {observed!r}"
    if "unexpected_count" in result:
        count = result.get("unexpected_count")
        total = result.get("element_count")
        examples = _json_safe(list(result.get("partial_unexpected_list") or [])[:5])
        observed = f"{count} of {total} values unexpected" + (f", e.g. {examples}" if examples else "")
        return observed, observed
    return None, "failed"


def run_expectations(frame: pd.DataFrame, expectations: Sequence[Expectation]) -> Report:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from mlops_provider.logs import quiet_great_expectations

    quiet_great_expectations()
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    if not expectations:
        return Report(True, [], len(frame), {"success": True, "results": []})
    expectations = [_normalise_dates(e, frame) for e in expectations]
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    batch = (
        context.data_sources.add_pandas("mlops")
        .add_dataframe_asset("snapshot")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    configs = []
    for expectation in expectations:
        try:
            configs.append(ExpectationConfiguration(type=expectation.type, kwargs=expectation.kwargs))
        except Exception as exc:
            raise StageError(f"invalid expectation {expectation.describe()}: {exc}") from exc
    try:
        suite = gx.ExpectationSuite(name="mlops", expectations=configs)
    except Exception as exc:
        raise StageError(f"invalid expectations: {exc}") from exc
    result = batch.validate(suite)

    outcomes = []
    for expectation, item in zip(expectations, result.results, strict=True):
        error = _exception_message(item.exception_info)
        observed, details = _observed(item.result or {}, error)
        outcomes.append(Outcome(expectation, bool(item.success), observed, details))
    return Report(bool(result.success), outcomes, len(frame), _json_safe(result.to_json_dict()))


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:.4rem .6rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}.pass{color:#1a7f37;font-weight:600}
.fail{color:#cf222e;font-weight:600}code{font-size:.9em}
"""


def render_html(report: Report, *, title: str) -> str:
    status = "passed" if report.success else "FAILED"
    rows = []
    for outcome in report.outcomes:
        kwargs = {k: v for k, v in outcome.expectation.kwargs.items() if k not in _COLUMN_KEYS}
        css, label = ("pass", "pass") if outcome.success else ("fail", "FAIL")
        rows.append(
            f"<tr><td class='{css}'>{label}</td><td><code>{html.escape(outcome.expectation.type)}</code></td>"
            f"<td>{html.escape(outcome.expectation.column or '')}</td>"
            f"<td><code>{html.escape(json.dumps(_json_safe(kwargs)))}</code></td>"
            f"<td>{html.escape(outcome.details)}</td></tr>"
        )
    failed = len(report.failed)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Validation <span class='{'pass' if report.success else 'fail'}'>{status}</span>: "
        f"{len(report.outcomes) - failed} of {len(report.outcomes)} expectation(s) met "
        f"on {report.rows} rows.</p>"
        "<table><thead><tr><th>Result</th><th>Expectation</th><th>Column</th><th>Arguments</th>"
        f"<th>Observed</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )


def validate(
    snapshot_uri: str,
    *,
    expectations: Sequence[Mapping[str, Mapping[str, Any] | None]] = (),
    suite: str | None = None,
    on_failure: str = "fail",
    client: MlflowClient | None = None,
    mlflow_run_id: str | None = None,
    title: str = "Data validation",
) -> dict[str, Any]:
    """Validate the snapshot; log result and report to MLflow; raise DataValidationError if told to.

    Returns the XCom payload ``{"success", "failed": [{expectation, column, observed, details}],
    "report_uri", "result_uri", "evaluated"}``.
    """
    if on_failure not in ("fail", "warn"):
        raise StageError(f"on_failure must be fail or warn, not {on_failure!r}")
    checks = from_spec(expectations) + (from_suite_file(suite) if suite else [])
    frame = workspace.read_table(snapshot_uri, workspace.workspace_conn_id(), "parquet")
    report = run_expectations(frame, checks)

    report_uri = result_uri = None
    if client is not None and mlflow_run_id is not None:
        from mlflow.entities import Metric, RunTag
        from mlflow.utils.time import get_current_time_millis

        client.log_text(mlflow_run_id, json.dumps(report.result_json, indent=2), RESULT_ARTIFACT)
        client.log_text(mlflow_run_id, render_html(report, title=title), REPORT_ARTIFACT)
        now = get_current_time_millis()
        client.log_batch(
            mlflow_run_id,
            metrics=[Metric("validation_success", float(report.success), now, 0),
                     Metric("validation_failed_expectations", float(len(report.failed)), now, 0)],
            tags=[RunTag("mlops.validation", "passed" if report.success else f"failed ({on_failure})")],
        )
        report_uri = f"runs:/{mlflow_run_id}/{REPORT_ARTIFACT}"
        result_uri = f"runs:/{mlflow_run_id}/{RESULT_ARTIFACT}"

    if not report.success and on_failure == "fail":
        raise DataValidationError(
            f"Data validation failed: {report.summary()}" + (f"\nReport: {report_uri}" if report_uri else "")
        )
    return {
        "success": report.success,
        "failed": [o.as_failure() for o in report.failed],
        "evaluated": len(report.outcomes),
        "report_uri": report_uri,
        "result_uri": result_uri,
        "summary": report.summary(),
    }
