"""Shared test set-up. Airflow never touches ~/airflow from the tests: AIRFLOW_HOME is a fresh temp dir,
set before anything imports Airflow (which writes airflow.cfg into AIRFLOW_HOME on first import)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_home = tempfile.mkdtemp(prefix="mlops-tests-airflow-home-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _home
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
