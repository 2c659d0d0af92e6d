"""Airflow notifiers this provider configures (``monitor.alerts``)."""
