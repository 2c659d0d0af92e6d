"""``type: sagemaker`` serving: a SageMaker real-time endpoint, created or updated via the Amazon provider.

What one rollout does (``prepare`` → ``check`` → alias moves → ``commit``, or ``abort``)::

    prepare   pack the MLflow model directory as model.tar.gz (the directory's content at the tar root,
              the layout `mlflow sagemaker` uploads), put it at
              s3://<artifact_bucket>/<model>/<version>/model.tar.gz, create a SageMaker Model
              <endpoint>-v<version>-<hash> (MLflow's pyfunc container environment, tagged with the
              model version) and an EndpointConfig of the same name (one variant, AllTraffic), then
              create the endpoint or update it to that config and wait until it is InService.
              SageMaker swaps blue/green itself during an update; if the new fleet fails, SageMaker rolls
              the endpoint back to its previous config and this raises DeploymentCheckError.
    check     invoke the endpoint with the sample rows ({"dataframe_split": ...}) and compare the answers
              with the model's own predictions.
    commit    delete the previous EndpointConfig and Model (only ones this provider created).
    abort     update the endpoint back to its previous config (or delete it if this rollout created it),
              then delete the new config and model.

Unlike the docker target, the endpoint already answers with the candidate once ``prepare`` returns:
SageMaker has no "staged but idle" variant that can be health-checked by invoking it. ``abort`` restores
the previous config, so a failed check or a refused alias still leaves the endpoint on the old version.

The resource name hashes the model directory's content and the serving settings, so retrying a deploy
of the same version reuses what a crashed attempt created instead of leaking new copies.

Nothing heavy at module level: boto3/botocore come in through the hooks, at run time.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mlops_provider.exceptions import DeploymentCheckError, StageError, TargetBusyError
from mlops_provider.serving.base import Candidate, Staged, require_same_answers

if TYPE_CHECKING:
    import logging

    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from mlops_provider.spec.schema import SageMakerTarget

#: One variant whose name never changes: autoscaling policies are registered per variant name.
VARIANT_NAME = "AllTraffic"
#: What MLflow's pyfunc serving container reads (mlflow.sagemaker._get_deployment_config).
FLAVOR_ENV = "MLFLOW_DEPLOYMENT_FLAVOR_NAME"
SERVING_ENV = "SERVING_ENVIRONMENT"
PYFUNC_FLAVOR = "python_function"
SAGEMAKER_SERVING_ENVIRONMENT = "SageMaker"
#: Tags on the SageMaker Model and EndpointConfig; live_version() reads them back.
TAG_VERSION = "mlops-model-version"
TAG_MODEL = "mlops-model-name"
TAG_MODEL_URI = "mlops-model-uri"
TAG_PIPELINE = "mlops-pipeline"
TAG_CONTENT = "mlops-content-sha256"
#: SageMaker limits (botocore's service model: ModelName, EndpointName, EndpointConfigName max 63).
MAX_NAME = 63
_NOT_NAME_CHARS = re.compile(r"[^a-zA-Z0-9]+")
_TAG_CHARS = set("_.:/=+-@")


def endpoint_name_for(endpoint: str | None, pipeline: str) -> str:
    """The spec's endpoint, or the pipeline's name made into a valid endpoint name (``_`` → ``-``)."""
    if endpoint:
        return endpoint
    name = _NOT_NAME_CHARS.sub("-", pipeline).strip("-")[:MAX_NAME].rstrip("-")
    if not name:
        raise StageError(f"cannot derive a SageMaker endpoint name from pipeline {pipeline!r}; set endpoint")
    return name


def resource_name(endpoint: str, version: str, content_hash: str) -> str:
    """``<endpoint>-v<version>-<hash>``, cut to SageMaker's 63 characters (the endpoint part is shortened)."""
    suffix = f"-v{_NOT_NAME_CHARS.sub('-', version).strip('-')}-{content_hash[:8]}"
    return f"{endpoint[: MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def tag_value(value: str) -> str:
    """A tag value SageMaker accepts: letters, digits, spaces and ``_.:/=+-@`` (others become ``_``)."""
    out = "".join(
        ch if ch.isalnum() or ch in _TAG_CHARS or unicodedata.category(ch).startswith("Z") else "_"
        for ch in value
    )
    return out[:256]


def tags(mapping: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": tag_value(str(value))} for key, value in mapping.items()]


def model_request(
    *,
    name: str,
    image_uri: str,
    model_data_url: str,
    execution_role_arn: str,
    tag_map: Mapping[str, str],
) -> dict[str, Any]:
    """CreateModel: MLflow's pyfunc container, the model at ``ModelDataUrl`` (as `mlflow sagemaker` does)."""
    return {
        "ModelName": name,
        "PrimaryContainer": {
            "Image": image_uri,
            "ModelDataUrl": model_data_url,
            "Environment": {FLAVOR_ENV: PYFUNC_FLAVOR, SERVING_ENV: SAGEMAKER_SERVING_ENVIRONMENT},
        },
        "ExecutionRoleArn": execution_role_arn,
        "Tags": tags(tag_map),
    }


def endpoint_config_request(
    *, name: str, model_name: str, instance_type: str, instance_count: int, tag_map: Mapping[str, str]
) -> dict[str, Any]:
    """CreateEndpointConfig: one variant taking all traffic."""
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": VARIANT_NAME,
                "ModelName": model_name,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": tags(tag_map),
    }


def endpoint_request(*, endpoint: str, config_name: str) -> dict[str, Any]:
    """CreateEndpoint and UpdateEndpoint take the same two members."""
    return {"EndpointName": endpoint, "EndpointConfigName": config_name}


def invoke_request(*, endpoint: str, sample: Any) -> dict[str, Any]:
    """sagemaker-runtime InvokeEndpoint with the rows in MLflow's ``dataframe_split`` format."""
    split = sample.to_json(orient="split", date_format="iso", index=False)
    return {
        "EndpointName": endpoint,
        "ContentType": "application/json",
        "Accept": "application/json",
        "Body": ('{"dataframe_split": ' + split + "}").encode(),
    }


def directory_digest(path: str) -> str:
    """sha256 over the relative paths and bytes of every file (stable, unlike a gzip's timestamps)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode() + b"\0")
            with open(full, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


class SageMakerServingTarget:
    """One ``type: sagemaker`` entry of ``deploy.targets`` (see the module docstring for the rollout).

    :param config: the target mapping (validated as :class:`~mlops_provider.spec.schema.SageMakerTarget`).
    :param pipeline: the pipeline's name (default endpoint name, a tag).
    :param log: where progress goes (the task's logger, or the CLI's).
    :param poll_interval: seconds between DescribeEndpoint calls while waiting for InService.
    """

    def __init__(
        self, config: Mapping[str, Any], *, pipeline: str, log: logging.Logger | Any, poll_interval: int = 30
    ) -> None:
        from pydantic import ValidationError

        from mlops_provider.spec.schema import SageMakerTarget

        try:
            self.config: SageMakerTarget = SageMakerTarget.model_validate(dict(config))
        except ValidationError as exc:
            raise StageError(f"invalid sagemaker serving target: {exc}") from exc
        self.pipeline = pipeline
        self.endpoint_name = endpoint_name_for(self.config.endpoint, pipeline)
        self.name = f"sagemaker:{self.endpoint_name}"
        bucket, _, prefix = self.config.artifact_bucket.strip("/").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.timeout = int(self.config.timeout.total_seconds())
        self.poll_interval = poll_interval
        self.log = log

    # ---- clients (built on first use: no network in __init__) ---------------------------------------------

    @cached_property
    def sagemaker_hook(self) -> SageMakerHook:
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.config.aws_conn_id, region_name=self.config.region)

    @cached_property
    def runtime_hook(self) -> AwsBaseHook:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        read_timeout = max(5, int(self.config.health.timeout.total_seconds()))
        return AwsBaseHook(
            aws_conn_id=self.config.aws_conn_id,
            region_name=self.config.region,
            client_type="sagemaker-runtime",
            config={"read_timeout": read_timeout, "retries": {"max_attempts": 2}},
        )

    @property
    def _sm(self) -> Any:
        return self.sagemaker_hook.conn

    # ---- reading SageMaker ---------------------------------------------------------------------------------

    def _describe(self, call: Any, **kwargs: Any) -> dict[str, Any] | None:
        """A Describe* answer, or None when SageMaker says the resource does not exist."""
        from botocore.exceptions import ClientError

        try:
            answer: dict[str, Any] = call(**kwargs)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if exc.response.get("Error", {}).get("Code") == "ValidationException" and (
                "Could not find" in message or "does not exist" in message
            ):
                return None
            raise
        return answer

    def _endpoint(self) -> dict[str, Any] | None:
        return self._describe(self._sm.describe_endpoint, EndpointName=self.endpoint_name)

    def _config_models(self, config_name: str) -> list[str]:
        config = self._describe(self._sm.describe_endpoint_config, EndpointConfigName=config_name)
        return [v["ModelName"] for v in (config or {}).get("ProductionVariants", []) if "ModelName" in v]

    def _model_tags(self, model_name: str) -> dict[str, str] | None:
        model = self._describe(self._sm.describe_model, ModelName=model_name)
        if model is None:
            return None
        answer = self._sm.list_tags(ResourceArn=model["ModelArn"])
        return {tag["Key"]: tag["Value"] for tag in answer.get("Tags", [])}

    def live_version(self) -> str | None:
        """The ``mlops-model-version`` tag of the model behind the endpoint's current config."""
        endpoint = self._endpoint()
        if endpoint is None:
            return None
        for model_name in self._config_models(endpoint["EndpointConfigName"]):
            version = (self._model_tags(model_name) or {}).get(TAG_VERSION)
            if version:
                return version
        return None

    def invocation_url(self) -> str:
        base = self.runtime_hook.conn.meta.endpoint_url.rstrip("/")
        return f"{base}/endpoints/{self.endpoint_name}/invocations"

    # ---- the rollout steps ---------------------------------------------------------------------------------

    def prepare(self, candidate: Candidate) -> Staged:
        before = self._endpoint()
        if before is not None and before["EndpointStatus"] != "InService":
            status = before["EndpointStatus"]
            # Creating/Updating/SystemUpdating/RollingBack end by themselves (a retry may find it InService);
            # Failed/OutOfService need a person
            busy = status in self.sagemaker_hook.endpoint_non_terminal_states
            raise (TargetBusyError if busy else DeploymentCheckError)(
                f"{self.name}: the endpoint is {status}"
                f"{': ' + before['FailureReason'] if before.get('FailureReason') else ''}; "
                "it must be InService before a new version can replace the live one"
                f"{' (retried: it may settle)' if busy else ''}; nothing was changed"
            )
        self._check_pyfunc(candidate.local_model_dir)
        content = directory_digest(candidate.local_model_dir)
        settings = "\0".join(
            [
                content,
                self.config.image_uri,
                self.config.execution_role_arn,
                self.config.instance_type,
                str(self.config.instance_count),
                candidate.model.uri,
            ]
        )
        content_hash = hashlib.sha256(settings.encode()).hexdigest()
        name = resource_name(self.endpoint_name, candidate.model.version, content_hash)
        previous_config = before["EndpointConfigName"] if before else None
        staged = Staged(
            target=self.name,
            version=candidate.model.version,
            endpoint=self.invocation_url(),
            info={
                "endpoint_name": self.endpoint_name,
                "model_name": name,
                "config_name": name,
                "previous_config": previous_config,
                "previous_models": self._config_models(previous_config) if previous_config else [],
                "created_endpoint": before is None,
                "created_model": False,
                "created_config": False,
            },
        )
        if previous_config == name:
            self.log.info("%s: already serves %s (v%s); nothing to do", self.name, name,
                          candidate.model.version)
            staged.info["unchanged"] = True
            return staged
        try:
            self._stage(candidate, staged, content)
        except BaseException:
            self._abort_quietly(staged)
            raise
        return staged

    def _stage(self, candidate: Candidate, staged: Staged, content: str) -> None:
        from airflow.exceptions import AirflowException

        name = staged.info["model_name"]
        tag_map = {
            TAG_PIPELINE: self.pipeline,
            TAG_MODEL: candidate.model.name,
            TAG_VERSION: candidate.model.version,
            TAG_MODEL_URI: candidate.model.uri,
            TAG_CONTENT: content[:32],
        }
        if self._describe(self._sm.describe_model, ModelName=name) is None:
            model_data_url = self._upload(candidate)
            staged.info["model_data_url"] = model_data_url
            self.log.info("%s: creating model %s from %s", self.name, name, model_data_url)
            staged.info["created_model"] = True
            self.sagemaker_hook.create_model(
                model_request(
                    name=name,
                    image_uri=self.config.image_uri,
                    model_data_url=model_data_url,
                    execution_role_arn=self.config.execution_role_arn,
                    tag_map=tag_map,
                )
            )
        if self._describe(self._sm.describe_endpoint_config, EndpointConfigName=name) is None:
            staged.info["created_config"] = True
            self.sagemaker_hook.create_endpoint_config(
                endpoint_config_request(
                    name=name,
                    model_name=name,
                    instance_type=self.config.instance_type,
                    instance_count=self.config.instance_count,
                    tag_map=tag_map,
                )
            )
        request = endpoint_request(endpoint=self.endpoint_name, config_name=name)
        try:
            if staged.info["created_endpoint"]:
                self.log.info("%s: creating the endpoint with config %s", self.name, name)
                self.sagemaker_hook.create_endpoint(
                    request, check_interval=self.poll_interval, max_ingestion_time=self.timeout
                )
            else:
                self.log.info(
                    "%s: updating the endpoint from %s to %s (SageMaker swaps blue/green)",
                    self.name,
                    staged.info["previous_config"],
                    name,
                )
                self.sagemaker_hook.update_endpoint(
                    request, check_interval=self.poll_interval, max_ingestion_time=self.timeout
                )
        except AirflowException as exc:
            raise DeploymentCheckError(
                f"{self.name}: v{candidate.model.version} did not become InService: {exc}"
            ) from exc
        after = self._endpoint() or {}
        if after.get("EndpointConfigName") != name or after.get("EndpointStatus") != "InService":
            reason = after.get("FailureReason") or "no reason given"
            raise DeploymentCheckError(
                f"{self.name}: SageMaker could not put v{candidate.model.version} in service and rolled "
                f"the endpoint back to {after.get('EndpointConfigName')} "
                f"({after.get('EndpointStatus')}): {reason}"
            )
        self.log.info("%s: v%s is InService (%s)", self.name, candidate.model.version, name)

    def _upload(self, candidate: Candidate) -> str:
        parts = (self.prefix, candidate.model.name, candidate.model.version, "model.tar.gz")
        key = "/".join(p for p in parts if p)
        self.log.info("%s: uploading the model to s3://%s/%s", self.name, self.bucket, key)
        # The directory's content at the tar root, like `mlflow sagemaker` (mlflow.sagemaker._make_tarfile).
        self.sagemaker_hook.tar_and_s3_upload(candidate.local_model_dir, key, self.bucket)
        try:  # AmazonSageMakerFullAccess lets the execution role read objects tagged SageMaker=true
            self.sagemaker_hook.s3_hook.conn.put_object_tagging(
                Bucket=self.bucket, Key=key, Tagging={"TagSet": [{"Key": "SageMaker", "Value": "true"}]}
            )
        except Exception as exc:  # an S3 without object tags still serves the model to a role with access
            self.log.warning("%s: could not tag s3://%s/%s: %s", self.name, self.bucket, key, exc)
        return f"s3://{self.bucket}/{key}"

    @staticmethod
    def _check_pyfunc(model_dir: str) -> None:
        import yaml

        path = os.path.join(model_dir, "MLmodel")
        try:
            with open(path, encoding="utf-8") as handle:
                flavors = (yaml.safe_load(handle) or {}).get("flavors", {})
        except OSError as exc:
            raise DeploymentCheckError(f"{model_dir} is not an MLflow model directory: {exc}") from exc
        if PYFUNC_FLAVOR not in flavors:
            raise DeploymentCheckError(
                f"the model has no {PYFUNC_FLAVOR} flavor (has {sorted(flavors)}); MLflow's SageMaker "
                "container serves pyfunc models only"
            )

    def check(self, staged: Staged, candidate: Candidate) -> None:
        """Invoke the endpoint with the sample rows and compare the answers with the model's own."""
        import json

        from botocore.exceptions import BotoCoreError, ClientError

        health = self.config.health
        sample = candidate.sample.head(health.rows)
        expected = list(candidate.expected)[: len(sample)]
        what = f"{self.name}: v{staged.version}"
        try:
            answer = self.runtime_hook.conn.invoke_endpoint(
                **invoke_request(endpoint=self.endpoint_name, sample=sample)
            )
            body = answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise DeploymentCheckError(f"{what}: InvokeEndpoint failed: {exc}") from exc
        try:
            answered = json.loads(body)
        except ValueError as exc:
            raise DeploymentCheckError(f"{what} answered something that is not JSON: {body[:300]!r}") from exc
        require_same_answers(what, answered, expected, tolerance=health.tolerance)
        self.log.info("%s answered %d sample rows like the model itself", what, len(sample))

    def commit(self, staged: Staged) -> None:
        """Retire the previous config and model; only ones this provider created (tagged), never the live one.

        The endpoint already serves the new version, so a failed clean-up is logged, not raised.
        """
        if staged.info.get("unchanged"):
            return
        keep = {staged.info["model_name"]}
        previous = staged.info.get("previous_config")
        for model_name in staged.info.get("previous_models", []):
            if model_name in keep or TAG_VERSION not in (self._model_tags(model_name) or {}):
                continue
            self._delete("model", model_name)
        if previous and previous != staged.info["config_name"] and self._config_is_ours(previous):
            self._delete("endpoint config", previous)

    def _config_is_ours(self, config_name: str) -> bool:
        config = self._describe(self._sm.describe_endpoint_config, EndpointConfigName=config_name)
        if config is None:
            return False
        answer = self._sm.list_tags(ResourceArn=config["EndpointConfigArn"])
        return any(tag["Key"] == TAG_VERSION for tag in answer.get("Tags", []))

    def abort(self, staged: Staged) -> None:
        """Put the endpoint back on the previous config (or delete it if this rollout created it), then
        delete the new config and model."""
        if staged.info.get("unchanged"):
            return
        from airflow.exceptions import AirflowException

        endpoint = self._endpoint()
        previous = staged.info.get("previous_config")
        busy = self.sagemaker_hook.endpoint_non_terminal_states
        if endpoint is not None and endpoint["EndpointStatus"] in busy:
            self.log.info(
                "%s: waiting for the endpoint (%s) to settle", self.name, endpoint["EndpointStatus"]
            )
            try:
                endpoint = self.sagemaker_hook.check_status(
                    self.endpoint_name,
                    "EndpointStatus",
                    self.sagemaker_hook.describe_endpoint,
                    self.poll_interval,
                    self.timeout,
                    non_terminal_states=busy,
                )
            except AirflowException as exc:
                self.log.warning("%s: %s", self.name, exc)
                endpoint = self._endpoint()
        if endpoint is not None and staged.info.get("created_endpoint"):
            self.log.info("%s: deleting the endpoint this rollout created", self.name)
            self._sm.delete_endpoint(EndpointName=self.endpoint_name)
        elif endpoint is not None and previous and endpoint["EndpointConfigName"] != previous:
            self.log.info("%s: updating the endpoint back to %s", self.name, previous)
            self.sagemaker_hook.update_endpoint(
                endpoint_request(endpoint=self.endpoint_name, config_name=previous),
                wait_for_completion=True,
                check_interval=self.poll_interval,
                max_ingestion_time=self.timeout,
            )
        if staged.info.get("created_config") and staged.info["config_name"] != previous:
            self._delete("endpoint config", staged.info["config_name"])
        model_name = staged.info["model_name"]
        if staged.info.get("created_model") and model_name not in staged.info["previous_models"]:
            self._delete("model", model_name)

    def _abort_quietly(self, staged: Staged) -> None:
        try:
            self.abort(staged)
        except Exception:  # keep the error that made prepare fail
            self.log.exception("%s: could not undo the staged v%s", self.name, staged.version)

    def _delete(self, kind: str, name: str) -> None:
        from botocore.exceptions import ClientError

        try:
            if kind == "model":
                self.sagemaker_hook.delete_model(name)
            else:
                self._sm.delete_endpoint_config(EndpointConfigName=name)
        except ClientError as exc:
            self.log.warning("%s: could not delete %s %s: %s", self.name, kind, name, exc)
        else:
            self.log.info("%s: deleted %s %s", self.name, kind, name)
