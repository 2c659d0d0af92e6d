"""Settings of the ``[mlops]`` section of Airflow's configuration.

Every value can come from ``airflow.cfg`` or from the environment (``AIRFLOW__MLOPS__<KEY>``), exactly
like Airflow's own options. Reading the environment first keeps ``mlops lint`` fast and lets it run in a
data-science repo that has no ``airflow.cfg``.
"""

from __future__ import annotations

import configparser
import os
import sys
from functools import cache
from pathlib import Path

DEFAULT_ALLOWED_MODULES = ("sklearn", "xgboost", "lightgbm", "catboost")
SECTION = "mlops"


def get(key: str, fallback: str | None = None) -> str | None:
    env = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}")
    if env is not None:
        return env
    if "airflow.configuration" not in sys.modules:
        # Outside Airflow (``mlops lint`` in a pre-commit hook) importing Airflow costs ~2 s for one value:
        # read airflow.cfg as a plain INI file instead (no ``_cmd``/``_secret`` variants; none are needed).
        return _cfg_file_value(SECTION, key, fallback)
    from airflow.configuration import conf

    return conf.get(SECTION, key, fallback=fallback)


def _cfg_file_value(section: str, key: str, fallback: str | None) -> str | None:
    home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()
    path = Path(os.environ.get("AIRFLOW_CONFIG") or home / "airflow.cfg").expanduser()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return fallback
    value = parser.get(section, key, fallback=None)
    return value.strip() if value and value.strip() else fallback


def dags_folder() -> Path:
    env = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if env:
        return Path(env).expanduser()
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder")).expanduser()


def pipelines_folder() -> Path:
    value = get("pipelines_folder")
    return Path(value).expanduser() if value else dags_folder() / "pipelines"


def project_root(spec_path: Path | None = None) -> Path:
    """Where relative paths in a spec resolve: ``[mlops] project_root``, else the dags folder's parent.

    For a spec outside any Airflow project (``mlops lint some/dir/spec.yaml``) the parent of the nearest
    ``dags`` folder above the spec is used, then the current directory.
    """
    value = get("project_root")
    if value:
        return Path(value).expanduser().resolve()
    if spec_path is not None:
        for parent in Path(spec_path).resolve().parents:
            if parent.name == "dags":
                return parent.parent
        return Path.cwd().resolve()
    return dags_folder().resolve().parent


@cache
def _parse_modules(raw: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def allowed_modules() -> tuple[str, ...]:
    raw = get("allowed_modules")
    return _parse_modules(raw) if raw else DEFAULT_ALLOWED_MODULES


def module_allowed(dotted_path: str, allowed: tuple[str, ...] | None = None) -> bool:
    allowed = allowed_modules() if allowed is None else allowed
    return any(dotted_path == m or dotted_path.startswith(m + ".") for m in allowed)
