"""Airflow DAG loader: the DAGs of every valid pipeline spec in dags/pipelines/*.yaml (see README)."""

from mlops_provider.loader import load_pipelines

load_pipelines(globals())
