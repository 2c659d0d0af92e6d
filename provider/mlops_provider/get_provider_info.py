"""Provider metadata, read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from mlops_provider import __version__

    return {
        "package-name": "airflow-provider-mlops",
        "name": "MLOps",
        "description": "YAML-specified ML pipelines (ingest, validate, train, evaluate, register, deploy, "
        "monitor) with MLflow as tracking and registry backend.",
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
                ],
            }
        ],
        "hooks": [{"integration-name": "MLflow", "python-modules": ["mlops_provider.hooks.mlflow"]}],
        "connection-types": [
            {"hook-class-name": "mlops_provider.hooks.mlflow.MLflowHook", "connection-type": "mlflow"}
        ],
        "extra-links": [
            "mlops_provider.links.mlflow.MLflowRunLink",
            "mlops_provider.links.mlflow.MLflowModelVersionLink",
        ],
        "config": {
            "mlops": {
                "description": "airflow-provider-mlops: where pipeline specs live and what they may use.",
                "options": {
                    "pipelines_folder": {
                        "description": "Folder of pipeline spec YAML files. Default: <dags_folder>/pipelines.",
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
                },
            }
        },
    }
