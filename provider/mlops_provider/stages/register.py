"""Register: a version of the registered model from the pipeline run's model, with aliases and lineage.

Idempotent: a retried task (or a re-run after a crash between "create version" and "set aliases")
finds the version it made earlier — same registered model, same MLflow run, same model source — and
finishes the job instead of creating a second version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def _quote(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def ensure_registered_model(client: MlflowClient, name: str, description: str | None = None) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _model_id(model_uri: str) -> str | None:
    """``models:/m-abc`` → ``m-abc`` (a logged model of MLflow 3); ``None`` for other URIs."""
    if model_uri.startswith("models:/"):
        rest = model_uri.removeprefix("models:/")
        if "/" not in rest and "@" not in rest:
            return rest
    return None


def find_version(client: MlflowClient, name: str, *, run_id: str, model_uri: str) -> ModelVersion | None:
    """The version already made from this model, if any: the retry case (same run), and a model reused
    from an earlier run (a cache hit: the same logged model, registered by that run)."""
    model_id = _model_id(model_uri)

    def same_model(version: ModelVersion) -> bool:
        same_id = model_id is not None and getattr(version, "model_id", None) == model_id
        return bool(version.source == model_uri or same_id)

    versions = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{_quote(run_id)}'")
    for version in sorted(versions, key=lambda v: int(v.version)):
        if same_model(version):
            return version
    if model_id is None:
        return None
    every = client.search_model_versions(f"name = '{_quote(name)}'")
    for version in sorted(every, key=lambda v: int(v.version)):
        if same_model(version):
            return version
    return None


def register(
    client: MlflowClient,
    *,
    model_name: str,
    model_uri: str,
    run_id: str,
    aliases: list[str] | None = None,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> tuple[ModelVersion, bool]:
    """Create (or find) the version, then set its tags and aliases. Returns ``(version, created)``."""
    ensure_registered_model(client, model_name)
    version = find_version(client, model_name, run_id=run_id, model_uri=model_uri)
    created = version is None
    tags = {k: str(v) for k, v in (tags or {}).items()}
    if version is None:
        kwargs: dict[str, Any] = {}
        model_id = _model_id(model_uri)
        if model_id is not None:
            kwargs["model_id"] = model_id
        version = client.create_model_version(
            model_name, source=model_uri, run_id=run_id, tags=tags, description=description, **kwargs
        )
        _link_logged_model(client, model_id, model_name, str(version.version))
    else:
        for key, value in tags.items():
            if version.tags.get(key) != value:
                client.set_model_version_tag(model_name, str(version.version), key, value)
    for alias in aliases or []:
        client.set_registered_model_alias(model_name, alias, str(version.version))
    return client.get_model_version(model_name, str(version.version)), created


def _link_logged_model(client: MlflowClient, model_id: str | None, name: str, version: str) -> None:
    """Show the version on the logged model's page, as ``mlflow.register_model`` does."""
    if model_id is None:
        return
    import json

    from mlflow.exceptions import MlflowException

    try:
        model = client.get_logged_model(model_id)
        existing = json.loads(model.tags.get("mlflow.modelVersions", "[]") or "[]")
        existing.append({"name": name, "version": version})
        client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(existing)})
    except MlflowException:
        pass  # cosmetic only
