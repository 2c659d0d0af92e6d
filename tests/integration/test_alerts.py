"""``monitor.alerts``: e-mails through Airflow's SMTP notifier, received by a real SMTP server (aiosmtpd).

The monitor DAG rendered from a spec e-mails the drift details when ``detect_drift`` finds dataset drift
(and nothing when it does not), and e-mails the error when a task fails for good; each recipient gets
only the events its alert names. The SMTP server is reached through an Airflow connection.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.processes import free_port, service_missing
from tests.integration._monitor_helpers import (
    MONITOR_SPEC,
    monitor_conf,
    seed_champion,
    spec_dags,
    write_live_data,
)
from tests.integration._stage_helpers import make_project, states, unique, xcom

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
OPS, ML_TEAM = "ops@example.com", "ml-team@example.com"
ALERTS = f"""\
  alerts:
    - {{type: smtp, to: [{OPS}], on: [failure], conn_id: smtp_test}}
    - {{type: smtp, to: [{ML_TEAM}], on: [drift], conn_id: smtp_test, from_email: mlops@example.com}}
"""


@dataclass
class Mail:
    sender: str
    to: list[str]
    subject: str
    body: str


@dataclass
class SmtpSink:
    """What a real SMTP server (aiosmtpd) received."""

    port: int
    received: list[Mail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("html", "plain"))
        body = part.get_content() if part is not None else ""
        with self.lock:
            self.received.append(
                Mail(envelope.mail_from, list(envelope.rcpt_tos), str(message["Subject"]), body)
            )
        return "250 Message accepted for delivery"

    def take(self) -> list[Mail]:
        with self.lock:
            mails, self.received = self.received, []
        return mails


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    """A real SMTP server on a free 127.0.0.1 port (no TLS, no auth), for the whole session."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        service_missing("aiosmtpd is not installed (dev extra)")
    for attempt in range(3):  # a port picked free may be taken by someone else before the server binds it
        sink = SmtpSink(port=free_port())
        controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
        try:
            controller.start()
            break
        except OSError:  # EADDRINUSE: pick another port
            if attempt == 2:
                raise
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_conn(smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> SmtpSink:
    """The Airflow connection ``smtp_test`` (plain SMTP on loopback; the default sender in its extra)."""
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_server.port,
        "extra": {
            "disable_tls": True,
            "disable_ssl": True,
            "from_email": "airflow@example.com",
            "timeout": 10,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", json.dumps(conn))
    smtp_server.take()
    return smtp_server


def alert_spec(name: str) -> str:
    return MONITOR_SPEC.format(name=name).replace("  retrain: true\n", "  retrain: true\n" + ALERTS)


@pytest.fixture
def monitored(airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A champion (recorded as a training run would), live data, and the spec's monitor DAG."""
    project = make_project(tmp_path, monkeypatch)
    name = unique("alerts")
    champion = seed_champion(project, model_name=f"{name}_model", experiment=name, dag_id=name)
    write_live_data(project, champion["test_uri"])
    dag = spec_dags(project, name, alert_spec(name))[f"{name}_monitor"]
    return {"name": name, "dag": dag, "project": project, "champion": champion}


def test_drift_sends_the_drift_details_and_no_drift_sends_nothing(
    airflow_home, smtp_conn: SmtpSink, monitored: dict[str, Any]
) -> None:
    name, dag = monitored["name"], monitored["dag"]
    assert sorted(dag.task_dict["detect_drift"].downstream_task_ids) == ["notify_drift", "request_retrain"]

    calm = airflow_home.dag_test(dag, **monitor_conf("stable"))
    assert states(calm)["detect_drift"] == "success" and states(calm)["notify_drift"] == "skipped"
    assert smtp_conn.take() == []

    stormy = airflow_home.dag_test(dag, **monitor_conf("drifted"))
    assert states(stormy) == {
        "detect_drift": "success",
        "request_retrain": "success",
        "notify_drift": "success",
    }
    verdict = xcom(stormy, "detect_drift")
    (mail,) = smtp_conn.take()
    assert mail.to == [ML_TEAM] and mail.sender == "mlops@example.com"  # not ops: its alert is on failure
    drifted = verdict["drifted_columns"]
    assert mail.subject == (
        f"[mlops] {name}: data drift in {len(drifted)} column(s) ({verdict['drift_share']:.0%}) "
        f"against {name}_model v{monitored['champion']['version']}"
    )
    assert (
        f"Drift share: <b>{verdict['drift_share']:.1%}</b> of {verdict['number_of_columns']} column(s)"
        in mail.body
    )
    for column in drifted:
        assert f"<li><code>{column}</code></li>" in mail.body
    assert f"/runs/{verdict['mlflow_run_id']}" in mail.body and "MLflow monitoring run" in mail.body
    assert verdict["report_uri"] in mail.body
    report = f"/runs/{verdict['mlflow_run_id']}/artifactPath/monitor/drift_report.html"
    assert f'{report}">Evidently drift report</a>' in mail.body


def test_a_failed_monitor_task_sends_the_error(
    airflow_home, smtp_conn: SmtpSink, monitored: dict[str, Any]
) -> None:
    name, dag = monitored["name"], monitored["dag"]
    broken = airflow_home.dag_test(dag, **monitor_conf("missing"))  # data/live/missing.csv does not exist
    assert states(broken)["detect_drift"] == "failed", states(broken)
    (mail,) = smtp_conn.take()  # once, after the last try; not to the drift-only recipient
    assert mail.to == [OPS] and mail.sender == "airflow@example.com"  # the connection's sender
    assert mail.subject == f"[mlops] {name}: task detect_drift of {name}_monitor failed"
    assert f"run <code>{broken.run_id}</code>, try 2" in mail.body
    assert "missing.csv" in mail.body  # the error
    assert f"/dags/{name}_monitor/runs/" in mail.body and "/tasks/detect_drift" in mail.body  # the log


def test_a_spec_with_alerts_and_approval_parses_without_heavy_imports(tmp_path: Path) -> None:
    """What the dag processor pays: the notifiers and the HITL operator are built at parse time, in a
    fresh interpreter, with none of the ML libraries imported and no network."""
    from tests.unit.test_dagbag import _PARSE_PROBE, HEAVY, _airflow_env

    name = "alerted"
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "ml_pipelines.py", dags)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "breast_cancer.csv").write_text("a,target\n1,0\n")
    text = alert_spec(name).replace("  alias: champion\n", "  alias: champion\n  approval: required\n")
    (dags / "pipelines" / f"{name}.yaml").write_text(text)
    home = tmp_path / "home"
    home.mkdir()
    env = {**_airflow_env(tmp_path, home), "AIRFLOW__MLOPS__PIPELINES_FOLDER": str(dags / "pipelines")}
    probe = [
        "import sys; exec(sys.argv[3]); import json;",
        "from airflow.providers.smtp.notifications.smtp import SmtpNotifier as N;",
        f"d = bag.dags['{name}_monitor']; t = bag.dags['{name}'];",
        "print(json.dumps({'callbacks': sorted(type(c).__name__ for c in d.task_dict['detect_drift']"
        ".on_failure_callback), 'tasks': sorted(t.task_ids)}))",
    ]
    result = subprocess.run(
        [sys.executable, "-c", " ".join(probe), str(dags), ",".join(HEAVY), _PARSE_PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    found = {}
    for line in result.stdout.splitlines():
        for key in ("dags", "callbacks"):
            if line.startswith(f'{{"{key}"'):
                found[key] = json.loads(line)
    assert set(found) == {"dags", "callbacks"}, result.stdout[-3000:] + result.stderr[-3000:]
    parsed, built = found["dags"], found["callbacks"]
    assert parsed["errors"] == [] and parsed["heavy"] == []
    assert {name, f"{name}_monitor"} <= set(parsed["dags"])
    assert built["callbacks"] == ["SmtpNotifier", "function"]  # the alert, and the MLflow run's FAILED mark
    assert "approve" in built["tasks"]
