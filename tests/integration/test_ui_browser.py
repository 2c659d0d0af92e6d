"""A real headless Chromium in the real Airflow UI: log in, open the pipeline's DAG and a finished task's
details, find the MLflow extra link, open the "ML pipelines" page and the MLflow UI from the nav.

Chromium is Debian's (``/usr/bin/chromium``, apt package ``chromium``), driven by Python ``playwright``;
``playwright install`` is never needed. Without Chromium the test skips, or fails when ``CI`` is set.
On failure a screenshot of each open page is saved in the test's tmp dir (its path is printed).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fixtures.processes import service_missing

if TYPE_CHECKING:
    from tests.fixtures.airflow import AirflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("MLOPS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 60_000
STAGES = ("ingest", "validate", "train", "evaluate", "register", "deploy")


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        service_missing(f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("python playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            browser.close()


@contextlib.contextmanager
def screenshots_on_failure(context: Any, folder: Path) -> Iterator[None]:
    """On an exception, save a full-page screenshot of every open page into ``folder``, then re-raise."""
    try:
        yield
    except BaseException:
        for number, page in enumerate(context.pages):
            path = folder / f"page-{number}.png"
            try:
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot: {path} ({page.url})")
            except Exception as exc:  # a crashed page: the test's own error matters more
                print(f"screenshot of page {number} failed: {exc}")
        raise


# browser_context first: without Chromium the test fails (CI) or skips before Airflow boots
def test_login_dag_extra_link_and_pipelines_page(
    browser_context: Any, airflow_server: AirflowServer, tmp_path: Path
) -> None:
    run_id = airflow_server.run_dag("breast_cancer")["dag_run_id"]  # shared with the plugin page tests
    started = time.monotonic()
    with screenshots_on_failure(browser_context, tmp_path):
        walk_through_the_ui(airflow_server, browser_context, run_id)
    print(f"browser walk-through: {time.monotonic() - started:.1f} s")


def walk_through_the_ui(airflow_server: AirflowServer, browser_context: Any, run_id: str) -> None:
    page = browser_context.new_page()

    # an anonymous browser gets the simple auth manager's login form, and the UI after signing in
    page.goto(f"{airflow_server.url}/")
    page.locator("input[name=username]").fill(airflow_server.username)
    page.locator("input[name=password]").fill(airflow_server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))

    # the pipeline's DAG: its name and every stage of the spec as a task
    page.goto(f"{airflow_server.url}/dags/breast_cancer")
    page.get_by_role("link", name="breast_cancer", exact=True).first.wait_for()
    for stage in STAGES:
        page.get_by_role("link", name=stage, exact=True).first.wait_for()

    # the finished train task: Airflow 3.3 shows extra links on the task instance's "Details" tab
    quoted_run = urllib.parse.quote(run_id, safe="")
    page.goto(f"{airflow_server.url}/dags/breast_cancer/runs/{quoted_run}/tasks/train")
    page.get_by_role("link", name="Details", exact=True).click()
    page.get_by_role("heading", name="Extra Links").wait_for()
    link = page.get_by_role("link", name="MLflow run", exact=True)
    link.wait_for()
    href = link.get_attribute("href") or ""
    mlflow_ui = re.escape(airflow_server.mlflow.tracking_uri)
    match = re.fullmatch(rf"{mlflow_ui}/#/experiments/(\d+)/runs/([0-9a-f]{{32}})", href)
    assert match, f"MLflow run link: {href!r}"
    assert link.get_attribute("target") == "_blank"  # opens MLflow beside Airflow
    mlflow_run = airflow_server.mlflow.client().get_run(match.group(2))
    assert mlflow_run.info.experiment_id == match.group(1)
    assert mlflow_run.data.tags["airflow.run_id"] == run_id  # the run this DAG run logged to

    # the nav's plugin menu: "ML pipelines" opens the page in a new tab; the pipeline's row has its champion
    page.get_by_role("button", name="Plugins").click()
    with browser_context.expect_page() as opened:
        page.get_by_role("menuitem", name="ML pipelines").click()
    pipelines = opened.value
    pipelines.wait_for_load_state()
    assert pipelines.url == f"{airflow_server.url}/mlops/"
    row = pipelines.locator('tr[data-pipeline="breast_cancer"]')
    assert re.fullmatch(r"@champion: v\d+", row.locator(".champion").inner_text().strip())
    assert "success" in row.inner_text()
    pipelines.close()

    # "MLflow UI" lands on the MLflow server the pipeline logs to
    page.get_by_role("button", name="Plugins").click()
    with browser_context.expect_page() as opened:
        page.get_by_role("menuitem", name="MLflow UI").click()
    mlflow_page = opened.value
    mlflow_page.wait_for_load_state("domcontentloaded")
    assert mlflow_page.url.startswith(f"{airflow_server.mlflow.tracking_uri}/"), mlflow_page.url
    assert "MLflow" in mlflow_page.title()


def test_mlflow_ui_nav_entry_redirects_signed_in_users_only(airflow_server: AirflowServer) -> None:
    """``<airflow>/mlops/mlflow`` (the "MLflow UI" nav entry) tells only a signed-in user where MLflow is."""

    def get(headers: dict[str, str]) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(airflow_server.url.removeprefix("http://"), timeout=30)
        conn.request("GET", "/mlops/mlflow", headers=headers)
        return conn.getresponse()

    anonymous = get({"Accept": "application/json"})
    assert anonymous.status == 401
    assert airflow_server.mlflow.tracking_uri not in anonymous.read().decode()
    signed_in = get({"Authorization": f"Bearer {airflow_server.token()}"})
    assert signed_in.status == 307
    assert signed_in.getheader("Location") == f"{airflow_server.mlflow.tracking_uri}/"
