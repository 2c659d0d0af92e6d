"""The requests the SageMaker target sends are ones SageMaker accepts.

No AWS is reachable here, so "accepts" is checked against botocore's service model for sagemaker and
sagemaker-runtime (the same JSON AWS publishes for its SDKs): botocore's ParamValidator for types and
required members, plus what it leaves out — string max lengths, name patterns and enums — checked here
from the shapes' metadata. ``request_errors`` is also used by the integration test on the requests
actually sent to the emulator.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mlops_provider.serving import sagemaker as sm

ROLE = "arn:aws:iam::123456789012:role/mlops-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-pyfunc:3.17.2"


def _shape_errors(shape: Any, value: Any, path: str) -> list[str]:
    import regex  # AWS patterns use \p{L}-style classes that `re` lacks

    errors: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                errors += _shape_errors(member, value[name], f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += _shape_errors(shape.member, item, f"{path}[{i}]")
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: {len(value)} items, at most {meta['max']} allowed")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _shape_errors(shape.key, key, f"{path} key {key!r}")
            errors += _shape_errors(shape.value, item, f"{path}[{key!r}]")
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: {len(value)} entries, at most {meta['max']} allowed")
    elif shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: {len(value)} characters, at most {meta['max']} allowed")
        if "pattern" in meta and not regex.fullmatch(meta["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {meta['pattern']}")
        if "enum" in meta and value not in meta["enum"]:
            errors.append(f"{path}: {value!r} is not one of the {len(meta['enum'])} allowed values")
    elif shape.type_name in ("integer", "long", "float", "double") and "max" in meta and value > meta["max"]:
        errors.append(f"{path}: {value} is above {meta['max']}")
    return errors


def request_errors(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """Everything SageMaker's published model says is wrong with ``params`` (empty: valid)."""
    import botocore.session
    from botocore.validate import ParamValidator

    operation_model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, operation_model.input_shape)
    errors = [report.generate_report()] if report.has_errors() else []
    return errors + _shape_errors(operation_model.input_shape, params, operation)


def _requests(pipeline: str, model: str, version: str) -> dict[str, dict[str, Any]]:
    import pandas as pd

    endpoint = sm.endpoint_name_for(None, pipeline)
    name = sm.resource_name(endpoint, version, "0123456789abcdef" * 4)
    tag_map = {
        sm.TAG_PIPELINE: pipeline,
        sm.TAG_MODEL: model,
        sm.TAG_VERSION: version,
        sm.TAG_MODEL_URI: f"models:/{model}/{version}",
    }
    return {
        "CreateModel": sm.model_request(
            name=name,
            image_uri=IMAGE,
            model_data_url=f"s3://mlops-models/serving/{model}/{version}/model.tar.gz",
            execution_role_arn=ROLE,
            tag_map=tag_map,
        ),
        "CreateEndpointConfig": sm.endpoint_config_request(
            name=name, model_name=name, instance_type="ml.m5.large", instance_count=2, tag_map=tag_map
        ),
        "CreateEndpoint": sm.endpoint_request(endpoint=endpoint, config_name=name),
        "UpdateEndpoint": sm.endpoint_request(endpoint=endpoint, config_name=name),
        "InvokeEndpoint": sm.invoke_request(
            endpoint=endpoint, sample=pd.DataFrame({"mean radius": [14.1, float("nan")], "texture": [1, 2]})
        ),
    }


@pytest.mark.parametrize(
    ("pipeline", "model", "version"),
    [
        ("breast_cancer", "breast_cancer_classifier", "1"),
        # long names must be cut to 63 characters; odd characters must not reach a name or a tag
        ("a_very_long_pipeline_name_" * 4, "model with spaces & (parens)?", "1234"),
        ("__x.y__", "ñandú_modèle", "7"),
    ],
)
def test_every_request_satisfies_sagemakers_model(pipeline: str, model: str, version: str) -> None:
    for operation, params in _requests(pipeline, model, version).items():
        service = "sagemaker-runtime" if operation == "InvokeEndpoint" else "sagemaker"
        assert request_errors(service, operation, params) == [], operation


def test_the_validator_rejects_what_sagemaker_would() -> None:
    """Guards the guard: names with underscores, names over 63 characters, an unknown instance type and
    a missing required member are all reported."""
    bad_model = sm.model_request(
        name="breast_cancer-v1",
        image_uri=IMAGE,
        model_data_url="s3://b/k",
        execution_role_arn=ROLE,
        tag_map={"mlops-model-name": "ok"},
    )
    assert any("does not match" in e for e in request_errors("sagemaker", "CreateModel", bad_model))
    bad_config = sm.endpoint_config_request(
        name="x" * 64, model_name="m", instance_type="ml.fast.huge", instance_count=1, tag_map={}
    )
    errors = request_errors("sagemaker", "CreateEndpointConfig", bad_config)
    assert any("at most 63" in e for e in errors) and any("allowed values" in e for e in errors)
    assert request_errors("sagemaker", "CreateEndpoint", {"EndpointName": "e"})  # no EndpointConfigName
    assert any(
        "does not match" in e
        for e in request_errors(
            "sagemaker", "CreateModel", {"ModelName": "m", "ExecutionRoleArn": "arn:aws:iam::12:role/x"}
        )
    )


@pytest.mark.parametrize("version", ["1", "42", "123456"])
def test_resource_names_keep_the_version_and_fit(version: str) -> None:
    endpoint = sm.endpoint_name_for(None, "p" * 80)
    assert len(endpoint) == 63
    name = sm.resource_name(endpoint, version, "abcdef0123456789")
    assert len(name) <= 63 and name.endswith(f"-v{version}-abcdef01")
    assert sm.endpoint_name_for("my-endpoint", "ignored_pipeline") == "my-endpoint"
    assert sm.endpoint_name_for(None, "breast_cancer") == "breast-cancer"


def test_container_environment_is_mlflows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Model's environment is exactly what `mlflow sagemaker` gives its pyfunc container."""
    from mlflow.sagemaker import _get_deployment_config

    for proxy in ("http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    request = sm.model_request(
        name="m", image_uri=IMAGE, model_data_url="s3://b/k", execution_role_arn=ROLE, tag_map={}
    )
    assert request["PrimaryContainer"]["Environment"] == _get_deployment_config(flavor_name="python_function")


def test_the_body_is_mlflows_dataframe_split() -> None:
    import json

    import pandas as pd

    frame = pd.DataFrame({"a": [1.5, float("nan")], "when": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    body = json.loads(sm.invoke_request(endpoint="e", sample=frame)["Body"])
    assert body == {
        "dataframe_split": {
            "columns": ["a", "when"],
            "data": [[1.5, "2024-01-01T00:00:00.000"], [None, "2024-01-02T00:00:00.000"]],
        }
    }


def test_the_target_touches_no_network_when_built() -> None:
    """Built while a deploy task starts: validates the config, derives names, creates no client."""
    target = sm.SageMakerServingTarget(
        {
            "type": "sagemaker",
            "image_uri": IMAGE,
            "execution_role_arn": ROLE,
            "artifact_bucket": "mlops-models/serving/",
            "timeout": "20m",
            "aws_conn_id": "no_such_conn",
        },
        pipeline="breast_cancer",
        log=None,
    )
    assert (target.name, target.bucket, target.prefix, target.timeout) == (
        "sagemaker:breast-cancer",
        "mlops-models",
        "serving",
        int(dt.timedelta(minutes=20).total_seconds()),
    )
    assert "sagemaker_hook" not in vars(target) and "runtime_hook" not in vars(target)


def test_a_bad_config_is_a_stage_error_naming_the_field() -> None:
    from mlops_provider.exceptions import StageError

    with pytest.raises(StageError, match="execution_role_arn"):
        sm.SageMakerServingTarget(
            {"type": "sagemaker", "image_uri": IMAGE, "artifact_bucket": "b"}, pipeline="p", log=None
        )
