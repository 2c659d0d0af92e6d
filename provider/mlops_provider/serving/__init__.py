"""Serving targets: where a promoted model version runs (a Docker container, a SageMaker endpoint).

Every target is checked *before* the alias moves (like TFX's InfraValidator): :func:`base.rollout`
prepares the candidate on every target, health-checks each with sample rows, moves the alias only if all
pass, then commits (blue/green swap). Heavy imports (docker, boto3, mlflow) stay inside the targets'
methods: this package is imported when Airflow parses DAGs only through the operators' modules.
"""
