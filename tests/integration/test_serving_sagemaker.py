"""The ``sagemaker`` serving target against an AWS API emulator.

**AWS is emulated**: no real AWS account is reachable from here, so SageMaker, SageMaker Runtime and S3
are moto's server (``moto.server.ThreadedMotoServer`` on a free 127.0.0.1 port); the Airflow AWS
connection points at it with ``extra.endpoint_url``, exactly as it would point at a VPC endpoint. The
target's own code path is unchanged: Amazon provider hooks (SageMakerHook, S3Hook, AwsBaseHook) and
botocore, which validates every request against SageMaker's published model before sending it. On top,
every request the target sent is checked again with ``request_errors`` (patterns, lengths, enums; see
tests/unit/test_sagemaker_requests.py).

What the emulator cannot do, and how these tests deal with it:

* moto 5.2 does not implement ``UpdateEndpoint``. ``_emulate_update_endpoint`` adds it to the emulator
  the way SageMaker documents it: the endpoint goes ``Updating``, then ``InService`` on the new config;
  when the new fleet fails its health checks SageMaker rolls back — ``InService`` on the **previous**
  config with ``FailureReason`` set. An image whose tag is ``:broken`` stands for a container that fails
  (for ``CreateEndpoint`` too: ``Creating``, then ``Failed``).
* No model container runs, so InvokeEndpoint answers are canned: each test queues what the endpoint
  answers through moto's ``/moto-api/static/sagemaker/endpoint-results`` API — the model's real
  predictions for the checks that must pass, a wrong one for the check that must fail. The comparison
  itself is the target's real one. moto remembers an answer per (endpoint, request body), so each
  version is checked with different sample rows.

The candidates are real MLflow models (sklearn, logged and registered in a local MLflow store).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_provider.exceptions import DeploymentCheckError
from mlops_provider.serving.base import Candidate, rollout
from tests.fixtures.processes import free_port, service_missing
from tests.integration._e2e_helpers import fluent_uris
from tests.unit.test_sagemaker_requests import request_errors

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlops-sagemaker"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlflow-pyfunc:3.17.2"
BROKEN_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlflow-pyfunc:broken"
CONN_ID = "aws_sagemaker_emulator"
#: how long an emulated Creating/Updating lasts (the target polls every second)
TRANSITION_SECONDS = 1.0
FAILED_HEALTH_CHECK = (
    "The primary container for production variant AllTraffic did not pass the ping health check."
)
log = logging.getLogger("test.serving.sagemaker")


# ---- the emulator ----


def _fails(backend: Any, config_name: str) -> bool:
    config = backend.endpoint_configs[config_name]
    images = [
        backend._models[v["ModelName"]].primary_container.get("Image", "") for v in config.production_variants
    ]
    return any(image.endswith(":broken") for image in images)


def _emulate_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add UpdateEndpoint (and a failing CreateEndpoint) to moto, following SageMaker's documented states."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    def later(action: Any) -> None:
        timer = threading.Timer(TRANSITION_SECONDS, action)
        timer.daemon = True
        timer.start()

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> Any:
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None:
            raise ValidationError(message=f'Could not find endpoint "{endpoint_name}".')
        if endpoint.endpoint_status != "InService":
            raise ValidationError(message=f'Cannot update in-progress endpoint "{endpoint.arn}".')
        if endpoint_config_name not in self.endpoint_configs:
            raise ValidationError(message=f'Could not find endpoint configuration "{endpoint_config_name}".')
        config = self.endpoint_configs[endpoint_config_name]
        failing = _fails(self, endpoint_config_name)
        endpoint.endpoint_status = "Updating"

        def done() -> None:
            if failing:  # SageMaker rolls back: the previous config keeps serving
                endpoint.failure_reason = FAILED_HEALTH_CHECK
            else:
                endpoint.endpoint_config_name = endpoint_config_name
                endpoint.production_variants = endpoint._process_production_variants(
                    config.production_variants
                )
                endpoint.failure_reason = None
            endpoint.endpoint_status = "InService"
            endpoint.last_modified_time = utcnow()

        later(done)
        return endpoint

    original_create = SageMakerModelBackend.create_endpoint

    def create_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str, tags: Any) -> Any:
        endpoint = original_create(self, endpoint_name, endpoint_config_name, tags)
        endpoint.endpoint_status = "Creating"
        failing = _fails(self, endpoint_config_name)

        def done() -> None:
            endpoint.endpoint_status = "Failed" if failing else "InService"
            endpoint.failure_reason = FAILED_HEALTH_CHECK if failing else None

        later(done)
        return endpoint

    def update_endpoint_response(self: Any) -> Any:
        endpoint = self.sagemaker_backend.update_endpoint(
            self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerModelBackend, "update_endpoint", update_endpoint, raising=False)
    monkeypatch.setattr(SageMakerModelBackend, "create_endpoint", create_endpoint)
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint_response, raising=False)


@dataclass
class Emulator:
    url: str

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        import requests

        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def answer_with(self, *bodies: Any) -> None:
        """Queue what the next InvokeEndpoint calls answer (one per distinct request)."""
        import requests

        results = [{"Body": json.dumps(body), "ContentType": "application/json"} for body in bodies]
        requests.post(
            f"{self.url}/moto-api/static/sagemaker/endpoint-results", json={"results": results}, timeout=10
        ).raise_for_status()

    @property
    def airflow_conn(self) -> str:
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.url, "region_name": REGION},
            }
        )


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        service_missing(f"moto[s3,sagemaker] is not installed: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        _emulate_update_endpoint(patch)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield Emulator(url=f"http://{host}:{port}")
        finally:
            server.stop()


@pytest.fixture
def aws(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """A clean emulator, the Airflow connection pointing at it, and a bucket for the models."""
    emulator.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", emulator.airflow_conn)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    emulator.client("s3").create_bucket(Bucket="mlops-models")
    return emulator


# ---- real MLflow models ----


@dataclass
class Models:
    name: str
    dirs: dict[str, str]  # version -> downloaded MLflow model directory
    estimators: dict[str, Any]
    features: Any  # DataFrame


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Two versions of a registered sklearn model in a local MLflow store, downloaded like a deploy does."""
    import cloudpickle
    import mlflow
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow")
    data = load_breast_cancer(as_frame=True)
    features = data.data.iloc[:, :6]
    name = f"sagemaker_test_{uuid.uuid4().hex[:6]}"
    dirs, estimators = {}, {}
    requirements = [f"scikit-learn=={sklearn.__version__}", f"cloudpickle=={cloudpickle.__version__}"]
    with fluent_uris(f"sqlite:///{root}/mlflow.db"):
        experiment = mlflow.create_experiment(f"exp_{name}", artifact_location=(root / "artifacts").as_uri())
        for version, c in (("1", 1.0), ("2", 0.05)):
            estimator = LogisticRegression(C=c, max_iter=2000).fit(features, data.target)
            with mlflow.start_run(experiment_id=experiment):
                mlflow.sklearn.log_model(
                    estimator,
                    name="model",
                    serialization_format="cloudpickle",
                    registered_model_name=name,
                    input_example=features.head(2),
                    pip_requirements=requirements,  # inferring them loads the model in a subprocess (~30 s)
                )
            dirs[version] = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(root / f"v{version}")
            )
            estimators[version] = estimator
    return Models(name=name, dirs=dirs, estimators=estimators, features=features)


def candidate(models: Models, version: str, rows: slice) -> Candidate:
    sample = models.features.iloc[rows].reset_index(drop=True)
    from mlops_provider.tracking.models import ModelVersionRef

    return Candidate(
        model=ModelVersionRef(models.name, version),
        pipeline="breast_cancer",
        sample=sample,
        expected=models.estimators[version].predict(sample).tolist(),
        local_model_dir=models.dirs[version],
    )


# ---- the target ----


def target(endpoint: str, *, image: str = IMAGE) -> Any:
    """A fresh target, as each deploy task builds one; records every request its clients send."""
    from mlops_provider.serving.sagemaker import SageMakerServingTarget

    item = SageMakerServingTarget(
        {
            "type": "sagemaker",
            "endpoint": endpoint,
            "image_uri": image,
            "execution_role_arn": ROLE,
            "artifact_bucket": "mlops-models/serving",
            "aws_conn_id": CONN_ID,
            "region": REGION,
            "instance_type": "ml.m5.large",
            "timeout": "1m",
            "health": {"rows": 5},
        },
        pipeline="breast_cancer",
        log=log,
        poll_interval=1,
    )
    item.sent = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        item.sent.append((model.service_model.service_name, model.name, dict(params)))

    item.sagemaker_hook.conn.meta.events.register("before-parameter-build.sagemaker", record)
    item.runtime_hook.conn.meta.events.register("before-parameter-build.sagemaker-runtime", record)
    return item


def deploy(item: Any, cand: Candidate) -> list[str]:
    """rollout() with one target; returns ["moved"] when the alias would have moved."""
    moved: list[str] = []
    rollout([item], cand, move_alias=lambda: moved.append("moved"), log=log)
    return moved


def endpoint_config(aws: Emulator, endpoint: str) -> str:
    return str(aws.client("sagemaker").describe_endpoint(EndpointName=endpoint)["EndpointConfigName"])


def model_names(aws: Emulator) -> set[str]:
    return {m["ModelName"] for m in aws.client("sagemaker").list_models()["Models"]}


def config_names(aws: Emulator) -> set[str]:
    return {
        c["EndpointConfigName"] for c in aws.client("sagemaker").list_endpoint_configs()["EndpointConfigs"]
    }


def assert_requests_valid(*items: Any) -> set[str]:
    operations = set()
    for item in items:
        for service, operation, params in item.sent:
            assert request_errors(service, operation, params) == [], (operation, params)
            operations.add(operation)
    return operations


# ---- tests ----


def test_create_then_update_to_a_second_version(aws: Emulator, models: Models) -> None:
    endpoint = f"breast-cancer-{uuid.uuid4().hex[:6]}"
    v1, v2 = candidate(models, "1", slice(0, 5)), candidate(models, "2", slice(5, 10))
    first = target(endpoint)
    assert first.live_version() is None

    aws.answer_with({"predictions": v1.expected})
    assert deploy(first, v1) == ["moved"]
    config_v1 = endpoint_config(aws, endpoint)
    assert config_v1.startswith(f"{endpoint}-v1-")
    assert first.live_version() == "1"

    sagemaker = aws.client("sagemaker")
    described = sagemaker.describe_model(ModelName=config_v1)
    container = described["PrimaryContainer"]
    assert container["Image"] == IMAGE and described["ExecutionRoleArn"] == ROLE
    assert container["Environment"] == {
        "MLFLOW_DEPLOYMENT_FLAVOR_NAME": "python_function",
        "SERVING_ENVIRONMENT": "SageMaker",
    }
    key = f"serving/{models.name}/1/model.tar.gz"
    assert container["ModelDataUrl"] == f"s3://mlops-models/{key}"
    # MLflow's SageMaker layout: the model directory's content at the root of model.tar.gz
    blob = aws.client("s3").get_object(Bucket="mlops-models", Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = tar.getnames()
        mlmodel = tar.extractfile("MLmodel").read()  # type: ignore[union-attr]
    assert {n.split("/")[0] for n in names} == set(os.listdir(models.dirs["1"]))
    assert mlmodel == Path(models.dirs["1"], "MLmodel").read_bytes()
    assert "python_function" in mlmodel.decode()

    second = target(endpoint)
    aws.answer_with({"predictions": v2.expected})
    assert deploy(second, v2) == ["moved"]
    config_v2 = endpoint_config(aws, endpoint)
    assert config_v2.startswith(f"{endpoint}-v2-")
    assert second.live_version() == "2"
    # the previous config and model are retired; only what serves remains
    assert model_names(aws) == {config_v2} and config_names(aws) == {config_v2}
    assert aws.client("s3").head_object(Bucket="mlops-models", Key=f"serving/{models.name}/2/model.tar.gz")

    # the sample rows went out in MLflow's dataframe_split format
    invoke = [p for _, op, p in second.sent if op == "InvokeEndpoint"]
    assert len(invoke) == 1 and invoke[0]["ContentType"] == "application/json"
    assert json.loads(invoke[0]["Body"])["dataframe_split"]["columns"] == list(models.features.columns)
    operations = assert_requests_valid(first, second)
    assert {
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "UpdateEndpoint",
        "InvokeEndpoint",
    } <= operations


def test_an_update_sagemaker_rolls_back_keeps_the_previous_version(aws: Emulator, models: Models) -> None:
    endpoint = f"rollback-{uuid.uuid4().hex[:6]}"
    v1, v2 = candidate(models, "1", slice(0, 5)), candidate(models, "2", slice(5, 10))
    aws.answer_with({"predictions": v1.expected})
    deploy(target(endpoint), v1)
    config_v1 = endpoint_config(aws, endpoint)

    broken = target(endpoint, image=BROKEN_IMAGE)
    with pytest.raises(DeploymentCheckError, match="rolled the endpoint back") as failure:
        deploy(broken, v2)  # the alias callback is never reached
    assert "did not pass the ping health check" in str(failure.value)
    assert endpoint_config(aws, endpoint) == config_v1
    assert broken.live_version() == "1"
    assert model_names(aws) == {config_v1} and config_names(aws) == {config_v1}
    assert_requests_valid(broken)


def test_a_failed_check_puts_the_endpoint_back_on_the_previous_config(aws: Emulator, models: Models) -> None:
    endpoint = f"bad-answers-{uuid.uuid4().hex[:6]}"
    v1, v2 = candidate(models, "1", slice(0, 5)), candidate(models, "2", slice(5, 10))
    aws.answer_with({"predictions": v1.expected})
    deploy(target(endpoint), v1)
    config_v1 = endpoint_config(aws, endpoint)

    wrong = list(v2.expected)
    wrong[2] = 1 - wrong[2]
    aws.answer_with({"predictions": wrong})
    second = target(endpoint)
    moved: list[str] = []
    with pytest.raises(DeploymentCheckError, match="1 of 5 sample rows differently") as failure:
        rollout([second], v2, move_alias=lambda: moved.append("moved"), log=log)
    assert "row 2" in str(failure.value)
    assert moved == []
    # the target switched the endpoint to v2 during prepare; abort put v1's config back (UpdateEndpoint)
    assert endpoint_config(aws, endpoint) == config_v1
    assert second.live_version() == "1"
    assert [p["EndpointConfigName"] for _, op, p in second.sent if op == "UpdateEndpoint"] == [
        second_config(second),
        config_v1,
    ]
    assert model_names(aws) == {config_v1} and config_names(aws) == {config_v1}
    assert_requests_valid(second)


def second_config(item: Any) -> str:
    return next(p["EndpointConfigName"] for _, op, p in item.sent if op == "CreateEndpointConfig")


def test_a_new_endpoint_that_fails_leaves_nothing_behind(aws: Emulator, models: Models) -> None:
    endpoint = f"never-{uuid.uuid4().hex[:6]}"
    broken = target(endpoint, image=BROKEN_IMAGE)
    with pytest.raises(DeploymentCheckError, match="did not become InService"):
        deploy(broken, candidate(models, "1", slice(0, 5)))
    assert broken.live_version() is None
    assert aws.client("sagemaker").list_endpoints()["Endpoints"] == []
    assert model_names(aws) == set() and config_names(aws) == set()


def test_redeploying_the_live_version_changes_nothing(aws: Emulator, models: Models) -> None:
    endpoint = f"same-{uuid.uuid4().hex[:6]}"
    v1 = candidate(models, "1", slice(0, 5))
    aws.answer_with({"predictions": v1.expected})
    deploy(target(endpoint), v1)
    config_v1 = endpoint_config(aws, endpoint)

    again = target(endpoint)
    assert deploy(again, v1) == ["moved"]  # still checked (moto repeats the answer for the same rows)
    assert endpoint_config(aws, endpoint) == config_v1
    operations = {op for _, op, _ in again.sent}
    assert not operations & {"CreateModel", "CreateEndpointConfig", "UpdateEndpoint", "DeleteModel"}
    assert model_names(aws) == {config_v1} and config_names(aws) == {config_v1}
