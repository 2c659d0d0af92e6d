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
* moto runs no model container and answers InvokeEndpoint with canned data. ``_serve_models`` makes the
  emulated endpoint answer as MLflow's pyfunc container does: the model behind the endpoint's current
  config, read from the ``model.tar.gz`` the target uploaded to the emulated S3, loaded with
  ``mlflow.pyfunc`` and scored by MLflow's own scoring server (``mlflow.pyfunc.scoring_server.invocations``,
  what the container runs). So the answers are the uploaded model's, not the test's, and a tarball that is
  not a loadable MLflow model fails the check. Only the test of *wrong* answers queues a canned answer
  (moto's ``/moto-api/static/sagemaker/endpoint-results`` API), which then takes precedence.

The candidates are real MLflow models (sklearn, logged and registered in a local MLflow store); the
operator-level tests train and register them with the stage operators through ``dag.test()``.
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


def _serve_models(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    """InvokeEndpoint answered by the endpoint's model, as MLflow's pyfunc serving container answers."""
    from moto.s3.models import s3_backends
    from moto.sagemaker.models import sagemaker_backends
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    canned = SageMakerRuntimeResponse.invoke_endpoint
    loaded: dict[str, Any] = {}  # ModelDataUrl -> pyfunc model (a container loads its model once)

    def load(url: str, account: str) -> Any:
        if url not in loaded:
            import mlflow.pyfunc

            bucket, _, key = url.removeprefix("s3://").partition("/")
            blob = s3_backends[account]["aws"].get_object(bucket, key).value
            target = workdir / uuid.uuid4().hex  # /opt/ml/model in the container
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                tar.extractall(target, filter="data")
            loaded[url] = mlflow.pyfunc.load_model(str(target))
        return loaded[url]

    def invoke_endpoint(self: Any) -> Any:
        if self.sagemakerruntime_backend.results_queue:  # a test queued what the endpoint answers
            return canned(self)
        from mlflow.pyfunc import scoring_server

        backend = sagemaker_backends[self.current_account][self.region]
        name = self._get_param("EndpointName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None or endpoint.endpoint_status != "InService":
            message = f"Endpoint {name} is not InService" if endpoint else f"Endpoint {name} not found"
            return 400, {"Content-Type": "application/json"}, json.dumps(
                {"__type": "ValidationError", "message": message}
            )
        config = backend.endpoint_configs[endpoint.endpoint_config_name]
        model = backend._models[config.production_variants[0]["ModelName"]]
        pyfunc = load(model.primary_container["ModelDataUrl"], self.current_account)
        answer = scoring_server.invocations(
            self.body.decode() if isinstance(self.body, bytes) else self.body,
            self.headers.get("Content-Type", "application/json"),
            pyfunc,
            pyfunc.metadata.get_input_schema(),
        )
        return answer.status, {"Content-Type": answer.mimetype}, answer.response

    monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)


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
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        service_missing(f"moto[s3,sagemaker] is not installed: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        _emulate_update_endpoint(patch)
        _serve_models(patch, tmp_path_factory.mktemp("containers"))
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
    deploy(target(endpoint), v1)
    config_v1 = endpoint_config(aws, endpoint)

    again = target(endpoint)
    assert deploy(again, v1) == ["moved"]  # still checked
    assert endpoint_config(aws, endpoint) == config_v1
    operations = {op for _, op, _ in again.sent}
    assert not operations & {"CreateModel", "CreateEndpointConfig", "UpdateEndpoint", "DeleteModel"}
    assert model_names(aws) == {config_v1} and config_names(aws) == {config_v1}


# ---- through the deploy operator and the target factory (dag.test) ----


def spec_target(endpoint: str) -> dict[str, Any]:
    """A ``deploy.targets`` entry as a spec names it (the operator builds the target from it)."""
    return {
        "type": "sagemaker",
        "endpoint": endpoint,
        "image_uri": IMAGE,
        "execution_role_arn": ROLE,
        "artifact_bucket": "mlops-models/serving",
        "aws_conn_id": CONN_ID,
        "instance_type": "ml.m5.large",
        "timeout": "1m",
        "health": {"rows": 5},
    }


def hand_made_endpoint(aws: Emulator, endpoint: str) -> tuple[str, str]:
    """An endpoint a team created by hand before adopting the provider (untagged model and config)."""
    sagemaker = aws.client("sagemaker")
    model, config = f"{endpoint}-by-hand", f"{endpoint}-by-hand-config"
    sagemaker.create_model(
        ModelName=model, ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://team-b/model.tar.gz"},
    )  # fmt: skip
    sagemaker.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
    )  # fmt: skip
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    sagemaker.get_waiter("endpoint_in_service").wait(
        EndpointName=endpoint, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    return model, config


def invoke(aws: Emulator, endpoint: str, rows: Any) -> list[Any]:
    """What the endpoint answers for ``rows``, as a client of the endpoint would ask."""
    payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    answer = aws.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint, ContentType="application/json", Body=json.dumps(payload)
    )
    return list(json.loads(answer["Body"].read())["predictions"])


def own_predictions(client: Any, model: str, version: str, rows: Any) -> list[Any]:
    with fluent_uris(client.tracking_uri):
        import mlflow.pyfunc

        return list(mlflow.pyfunc.load_model(f"models:/{model}/{version}").predict(rows).tolist())


def endpoint_state(aws: Emulator, endpoint: str, status: str, reason: str | None = None) -> None:
    """Put the emulated endpoint in ``status``, as another change (a person, autoscaling) would."""
    from moto.sagemaker.models import sagemaker_backends

    described = sagemaker_backends[ACCOUNT][REGION].endpoints[endpoint]
    described.endpoint_status, described.failure_reason = status, reason


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.integration._e2e_helpers import make_project

    return make_project(tmp_path, monkeypatch)


def test_the_deploy_operator_serves_each_version_and_retires_only_what_it_created(
    airflow_home: Any, aws: Emulator, project: Path
) -> None:
    import pandas as pd

    from mlops_provider.run import run_dag
    from mlops_provider.stages.deploy import history
    from tests.integration._e2e_helpers import alias_holder, embedded_client, serving_dag, unique

    endpoint = f"bc-{uuid.uuid4().hex[:6]}"
    model, experiment, dag_id = unique("bc"), unique("exp"), unique("sm")
    hand_model, hand_config = hand_made_endpoint(aws, endpoint)
    other = f"team-b-{uuid.uuid4().hex[:6]}"  # someone else's model in the same account
    aws.client("sagemaker").create_model(
        ModelName=other, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE}
    )
    client = embedded_client(project)
    rows = pd.read_csv(project / "include" / "data" / "breast_cancer.csv").drop(columns="target").tail(7)
    name = f"sagemaker:{endpoint}"
    url = f"{aws.url}/endpoints/{endpoint}/invocations"

    first = run_dag(serving_dag(dag_id, experiment, model, spec_target(endpoint), 0))
    assert first.ok, first.failure
    assert first.xcom["deploy"]["serving"] == {name: url}
    assert alias_holder(client, model, "champion") == "1"
    config_v1 = endpoint_config(aws, endpoint)
    assert config_v1.startswith(f"{endpoint}-v1-")
    assert invoke(aws, endpoint, rows) == own_predictions(client, model, "1", rows)
    # the hand-made model and config it replaced are not this provider's: kept, as is the other team's
    assert model_names(aws) == {config_v1, hand_model, other}
    assert config_names(aws) == {config_v1, hand_config}

    second = run_dag(serving_dag(dag_id, experiment, model, spec_target(endpoint), 1))
    assert second.ok, second.failure
    assert alias_holder(client, model, "champion") == "2"
    config_v2 = endpoint_config(aws, endpoint)
    assert config_v2.startswith(f"{endpoint}-v2-")
    table = pd.read_csv(project / "include" / "data" / "breast_cancer.csv").drop(columns="target")
    p1, p2 = own_predictions(client, model, "1", table), own_predictions(client, model, "2", table)
    differ = [i for i in range(len(table)) if p1[i] != p2[i]][:5]
    assert differ, "the two versions must answer some rows differently for this check to mean anything"
    rows = table.iloc[differ + list(rows.index)]
    assert invoke(aws, endpoint, rows) == own_predictions(client, model, "2", rows)
    # v1's model and config are this provider's: retired; the others still stand
    assert model_names(aws) == {config_v2, hand_model, other}
    assert config_names(aws) == {config_v2, hand_config}
    tags = client.get_registered_model(model).tags
    assert tags[f"mlops.serving.{name}.version"] == "2" and tags[f"mlops.serving.{name}.url"] == url
    moves = history(client, model_name=model)
    assert [m["version"] for m in moves] == ["1", "2"] and moves[-1]["serving"] == [name]


def test_an_endpoint_not_in_service_is_left_alone(airflow_home: Any, aws: Emulator, project: Path) -> None:
    from mlops_provider.run import run_dag
    from mlops_provider.stages.deploy import history
    from tests.integration._e2e_helpers import alias_holder, embedded_client, serving_dag, unique
    from tests.integration._stage_helpers import once_in_state, pipeline_runs

    endpoint = f"busy-{uuid.uuid4().hex[:6]}"
    model, experiment, dag_id = unique("bc"), unique("exp"), unique("sm")
    client = embedded_client(project)
    assert run_dag(serving_dag(dag_id, experiment, model, spec_target(endpoint), 0)).ok
    config_v1 = endpoint_config(aws, endpoint)

    # a failed change someone made by hand needs a person: fails at once (retries left), nothing touched
    endpoint_state(aws, endpoint, "Failed", "a manual update ran out of capacity")
    failed = run_dag(serving_dag(dag_id, experiment, model, spec_target(endpoint), 1, retries=2))
    assert failed.state == "failed"
    deploy = failed.task("deploy")
    assert deploy is not None and deploy.error is not None
    assert deploy.tries == 1, "a Failed endpoint must not be retried"
    reason = "a manual update ran out of capacity"
    assert f"sagemaker:{endpoint}: the endpoint is Failed: {reason}" in deploy.error
    assert "nothing was changed" in deploy.error
    assert alias_holder(client, model, "champion") == "1"
    assert model_names(aws) == {config_v1} and config_names(aws) == {config_v1}
    assert endpoint_config(aws, endpoint) == config_v1
    assert [m["version"] for m in history(client, model_name=model)] == ["1"]
    assert {r.info.status for r in pipeline_runs(client, experiment)} == {"FINISHED", "FAILED"}

    # an update in flight ends by itself: the deploy is retried and goes through once it is InService
    endpoint_state(aws, endpoint, "Updating")

    def settled() -> None:
        endpoint_state(aws, endpoint, "InService")

    watcher = once_in_state(dag_id, "deploy", "up_for_retry", settled)
    retried = run_dag(serving_dag(dag_id, experiment, model, spec_target(endpoint), 2, retries=2,
                                  retry_delay=5))  # fmt: skip
    watcher.join(timeout=5)
    assert retried.ok, retried.failure
    assert retried.task("deploy") is not None and retried.task("deploy").tries == 2  # type: ignore[union-attr]
    assert alias_holder(client, model, "champion") == "3"
    assert endpoint_config(aws, endpoint).startswith(f"{endpoint}-v3-")
    assert [m["version"] for m in history(client, model_name=model)] == ["1", "3"]
    assert "RUNNING" not in {r.info.status for r in pipeline_runs(client, experiment)}
