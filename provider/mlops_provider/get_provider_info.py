"""Provider metadata, read by Airflow's ProvidersManager (``apache_airflow_provider`` entry point)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from mlops_provider import __version__
    from mlops_provider.hooks.connection_form import conn_fields, ui_field_behaviour

    behaviour = ui_field_behaviour()

    return {
        "package-name": "airflow-provider-mlops",
        "name": "MLOps",
        "description": "YAML-specified ML pipelines (ingest, validate, train, evaluate, register, deploy, "
        "monitor) with MLflow as tracking and registry backend. Tested on Airflow 3.1-3.3, Python 3.10-3.13.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MLflow",
                "external-doc-url": "https://mlflow.org/docs/latest/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "MLflow",
                "python-modules": [
                    "mlops_provider.operators.ingest",
                    "mlops_provider.operators.validate",
                    "mlops_provider.operators.train",
                    "mlops_provider.operators.evaluate",
                    "mlops_provider.operators.register",
                    "mlops_provider.operators.deploy",
                    "mlops_provider.operators.monitor",
                    "mlops_provider.operators.batch",
                    "mlops_provider.operators.serve",
                    "mlops_provider.operators.approval",
                    "mlops_provider.operators.alerts",
                    "mlops_provider.operators.tune",
                ],
            }
        ],
        "sensors": [{"integration-name": "MLflow", "python-modules": ["mlops_provider.sensors.mlflow"]}],
        "triggers": [
            {
                "integration-name": "MLflow",
                "python-modules": ["mlops_provider.triggers.mlflow", "mlops_provider.triggers.s3"],
            }
        ],
        "hooks": [{"integration-name": "MLflow", "python-modules": ["mlops_provider.hooks.mlflow"]}],
        "connection-types": [
            {
                "hook-class-name": "mlops_provider.hooks.mlflow.MLflowHook",
                "connection-type": "mlflow",
                "hook-name": "MLflow",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": {
                    "hidden-fields": behaviour["hidden_fields"],
                    "relabeling": behaviour["relabeling"],
                    "placeholders": behaviour["placeholders"],
                },
            }
        ],
        "extra-links": [
            "mlops_provider.links.mlflow.MLflowRunLink",
            "mlops_provider.links.mlflow.MLflowModelVersionLink",
            "mlops_provider.links.mlflow.ValidationReportLink",
            "mlops_provider.links.mlflow.DriftReportLink",
        ],
        "config": {
            "mlops": {
                "description": "airflow-provider-mlops: where pipeline specs live and what they may use.",
                "options": {
                    "pipelines_folder": {
                        "description": "Folder of pipeline spec YAML files. "
                        "Default: <dags_folder>/pipelines.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/dags/pipelines",
                        "default": None,
                    },
                    "project_root": {
                        "description": "Relative paths in specs resolve here and may not leave it. "
                        "Default: the parent of the dags folder.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow",
                        "default": None,
                    },
                    "allowed_modules": {
                        "description": "Comma-separated top-level modules a spec may name as estimator.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "sklearn,xgboost,lightgbm,catboost,mycompany.models",
                        "default": "sklearn,xgboost,lightgbm,catboost",
                    },
                    "mlflow_ui_url": {
                        "description": "MLflow UI the task links point to. Default: the tracking server "
                        "for http(s) tracking URIs, else http://localhost:5000 (what `mlflow ui` serves).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://mlflow.example.com",
                        "default": None,
                    },
                    "workspace": {
                        "description": "Where stages keep run-scoped data (snapshots, splits, reports): a "
                        "local folder or an s3:// prefix. Default: <project_root>/.mlops/workspace.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://ml-workspace/pipelines",
                        "default": None,
                    },
                    "spec_cache": {
                        "description": "Keep the parsed YAML of valid specs in "
                        "<pipelines_folder>/__pycache__, keyed by each file's SHA-256, like Python's .pyc "
                        "files (faster re-parses).",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "workspace_conn_id": {
                        "description": "Airflow connection (type aws) for an s3:// workspace.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "aws_default",
                        "default": None,
                    },
                    "docker_allowed_mounts": {
                        "description": "Comma-separated host folders that a docker train runner's mounts "
                        "may bind besides the project root (the engine runs as root: keep this short).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/ml-cache,/data/readonly",
                        "default": None,
                    },
                },
            }
        },
    }
