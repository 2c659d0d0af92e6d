"""The "ML pipelines" plugin page on a real Airflow api-server: login required, one row per spec file with
lint status, champion and last run, and a row that still renders when its MLflow is down."""

from __future__ import annotations

import http.client
import re
import sys
import urllib.parse
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.processes import free_port

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def row_of(page: str, pipeline: str) -> str:
    match = re.search(rf'<tr data-pipeline="{pipeline}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {pipeline!r} in the page:\n{page[:3000]}"
    return match.group(1)


def test_plugin_module_is_light() -> None:
    """Every Airflow process (scheduler, dag processor, each task) loads plugins: no web app, no MLflow."""
    import subprocess

    code = (
        "import sys, mlops_provider.plugins as p; "
        "assert p.MlopsPlugin.fastapi_apps[0]['url_prefix'] == '/mlops'; "
        "print(sorted(m for m in ('fastapi', 'mlflow', 'sklearn', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_page_requires_an_airflow_login(airflow_server: AirflowServer) -> None:
    status, body = airflow_server.request("GET", "/mlops/", token=None)
    assert status == 401, body
    status, _ = airflow_server.request("GET", "/mlops/", token="not-a-jwt")
    assert status in (401, 403)
    # a browser without a session is sent to the login page, which brings it back afterwards
    conn = http.client.HTTPConnection(airflow_server.url.removeprefix("http://"), timeout=30)
    conn.request("GET", "/mlops/", headers={"Accept": "text/html"})
    response = conn.getresponse()
    assert response.status == 303
    location = urllib.parse.urlsplit(response.getheader("Location", ""))
    assert location.path == "/auth/login"
    assert urllib.parse.parse_qs(location.query)["next"] == [f"{airflow_server.url}/mlops/"]


def test_the_page_lists_each_spec_with_lint_champion_and_last_run(airflow_server: AirflowServer) -> None:
    run = airflow_server.run_dag("breast_cancer")
    folder = airflow_server.pipelines_folder
    (folder / "broken.yaml").write_text("version: 1\nname: Broken Name\ntask: classification\n")
    dead_port = free_port()
    (folder / "offline.yaml").write_text(
        (folder / "breast_cancer.yaml")
        .read_text()
        .replace("name: breast_cancer", "name: offline_pipeline")
        .replace("mlflow:\n", "mlflow:\n  conn_id: mlflow_offline\n")
    )
    # an MLflow connection to a closed port, in the metadata DB (where the page's hook finds it)
    status, body = airflow_server.request(
        "POST", "/api/v2/connections",
        {"connection_id": "mlflow_offline", "conn_type": "mlflow", "host": f"http://127.0.0.1:{dead_port}"},
    )
    assert status in (201, 409), body
    try:
        status, page = airflow_server.request("GET", "/mlops/", accept="text/html")
        assert status == 200, page

        good = row_of(page, "breast_cancer")
        assert "breast_cancer.yaml" in good and ">valid<" in good
        assert 'href="/dags/breast_cancer"' in good and 'href="/dags/breast_cancer_monitor"' in good
        assert re.search(r"@champion: <strong>v\d+</strong>", good), good
        assert re.search(r"roc_auc 0\.9\d*", good), good  # the champion's test metric, from its MLflow run
        assert f"{airflow_server.mlflow.tracking_uri}/#/models/breast_cancer_classifier/versions/" in good
        assert "success" in good and run["dag_run_id"] in good
        assert "no monitoring run" in good

        offline = row_of(page, "offline_pipeline")
        assert f"MLflow unreachable: http://127.0.0.1:{dead_port}" in offline
        assert "offline.yaml" in offline and ">valid<" in offline

        broken = row_of(page, "")
        assert "broken.yaml" in broken and "error(s)" in broken
        assert re.search(r"broken\.yaml:\d+:\d+: ", broken), broken  # file:line:col of each error
        assert "Broken Name" in broken  # the message names the bad value
        assert "<script" not in page.lower()
    finally:
        (folder / "broken.yaml").unlink()
        (folder / "offline.yaml").unlink()


def test_values_from_specs_are_escaped() -> None:
    from mlops_provider.plugins.page import render
    from mlops_provider.plugins.status import PipelineRow

    row = PipelineRow(spec_file="<img src=x onerror=alert(1)>.yaml",
                      issues=["a.yaml:1:1: name: '<script>alert(1)</script>' is bad"])
    html = render([row], airflow_url="/", user="<b>eve</b>")
    assert "<script>" not in html and "<img" not in html and "<b>eve" not in html
    assert "&lt;script&gt;" in html


def test_the_page_tells_the_truth_about_failed_paused_and_unmonitored_pipelines(
    airflow_server: AirflowServer,
) -> None:
    """A run that failed names its task and error and links its MLflow run; a pipeline that was never
    registered has no MLflow model link; one without `monitor` is not "waiting for a monitoring run";
    paused and deactivated DAGs say so."""
    airflow_server.run_dag("breast_cancer")  # unpaused; its monitor and batch DAGs stay paused
    folder = airflow_server.pipelines_folder
    example = (folder / "breast_cancer.yaml").read_text()
    failing = (
        example.replace("name: breast_cancer", "name: never_enough_rows", 1)
        .replace("model: breast_cancer_classifier", "model: never_enough_rows_model", 1)
        .replace("{min_value: 100}", "{min_value: 1000000}", 1)
    )
    failing = failing[: failing.index("\nmonitor:")] + "\n"  # and no monitor section
    (folder / "never_enough_rows.yaml").write_text(failing)
    try:
        run = airflow_server.run_dag("never_enough_rows", expect="failed")
        status, page = airflow_server.request("GET", "/mlops/", accept="text/html")
        assert status == 200, page

        row = row_of(page, "never_enough_rows")
        assert "failed" in row and run["dag_run_id"] in row
        assert "task <code>validate</code> failed" in row, row
        failure = re.search(r'<code class="failure">(.*?)</code>', row)
        assert failure and failure.group(1).startswith(
            "DataValidationError: Data validation failed: 1 of 3 expectation(s) not met on 569 rows: "
        ), row
        assert "expect_table_row_count_to_be_between" in failure.group(1), failure.group(1)
        assert re.search(r'href="[^"]+/#/experiments/\d+/runs/\w+"[^>]*>MLflow run</a>', row), row
        assert "MLflow model" not in row  # validate failed: nothing was ever registered
        assert "not registered yet" in row
        assert "not monitored" in row and "monitoring run" not in row

        good = row_of(page, "breast_cancer")
        assert re.search(r'breast_cancer_monitor</a> <span class="muted">monitor</span>'
                         r' <span class="muted dag-state">paused</span>', good), good
        assert "MLflow model" in good
        summary = re.search(r'<p class="summary">(.*?)</p>', page, re.S)
        assert summary and "1 invalid" in summary.group(1), page[:2000]
    finally:
        (folder / "never_enough_rows.yaml").unlink()
