"""Airflow DAG file with no DAGs: every invalid spec in dags/pipelines/ becomes this file's import error.

Kept apart from ml_pipelines.py because Airflow deactivates every DAG of a file that has an import error.
"""

from mlops_provider.loader import report_invalid_specs

report_invalid_specs(globals())
