"""Airflow imports whose home moved between the supported versions, resolved once, here."""

from __future__ import annotations

try:  # Airflow >= 3.2 (the Task SDK's own)
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # pragma: no cover - Airflow 3.1
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef,attr-defined]

__all__ = ["AirflowFailException"]
