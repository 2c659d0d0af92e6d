"""The MLflow connection form, once: plain data read by the hook (Airflow's WTForms widgets, Airflow < 3.2)
and by the provider info (``conn-fields``/``ui-field-behaviour``, which Airflow 3.2+ renders itself).
Cheap to import: the provider info is read by every Airflow process."""

from __future__ import annotations

from typing import Any

#: extras of the connection: name -> (label, JSON type, description)
EXTRA_FIELDS: dict[str, tuple[str, str, str]] = {
    "registry_uri": ("Registry URI", "string", "Model registry, when not the tracking server."),
    "s3_endpoint_url": ("S3 endpoint URL", "string",
                        "For s3:// artifact stores not on AWS (MinIO, SeaweedFS)."),
    "insecure_tls": ("Skip TLS verification", "boolean", "Do not verify the tracking server's certificate."),
}

HIDDEN_FIELDS = ["schema"]
RELABELING = {"host": "Tracking URI", "login": "Username", "password": "Password or token"}
PLACEHOLDERS = {
    "host": "http://mlflow:5000",
    "login": "empty for token auth",
    "password": "token, or the password of the username",
    "extra": '{"registry_uri": "", "s3_endpoint_url": "", "insecure_tls": false}',
}


def conn_fields() -> dict[str, Any]:
    """``conn-fields`` of the provider info."""
    return {
        name: {"label": label, "schema": {"type": [kind, "null"]}, "description": description}
        for name, (label, kind, description) in EXTRA_FIELDS.items()
    }


def ui_field_behaviour() -> dict[str, Any]:
    """``get_ui_field_behaviour()`` of the hook; the provider info's ``ui-field-behaviour`` uses dashes."""
    return {
        "hidden_fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": dict(PLACEHOLDERS),
    }
