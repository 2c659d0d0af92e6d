"""The pipeline spec, version 1: the contract between a data scientist's YAML and the factory.

Every section is a pydantic model with ``extra="forbid"`` so a typo is an error, never a silent
default. New optional keys may be added to any section without breaking v1 files (``deploy`` and
``monitor`` grow in later releases). Checks that need the outside world (files on disk, the module
allow-list, the project root) read it from the validation context, so the same model serves the
loader (parse time) and ``mlops lint``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mlops_provider.spec.expectations import EXPECTATIONS

SPEC_VERSION = 1
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
#: DAG ids the factory itself uses (render/dag.py ``render_invalid``); a pipeline of that name would vanish.
RESERVED_NAMES = frozenset({"mlops_invalid_specs"})

#: metric -> the direction in which it improves. Used by lint, evaluate and the champion check.
METRICS: dict[str, dict[str, Literal["max", "min"]]] = {
    "classification": {
        "accuracy": "max",
        "precision": "max",
        "recall": "max",
        "f1": "max",
        "roc_auc": "max",
        "log_loss": "min",
    },
    "regression": {"rmse": "min", "mae": "min", "r2": "max", "mape": "min"},
}
DEFAULT_METRICS = {"classification": ["roc_auc", "accuracy", "f1"], "regression": ["rmse", "mae", "r2"]}

CRON_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually"}
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --------------------------------------------------------------------------------------------------
# reusable field types
# --------------------------------------------------------------------------------------------------
def _parse_duration(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise _fail("bad-duration", "expected a duration like 30s, 5m, 1h or 2d")
    if isinstance(value, (int, float)):
        if value < 0:
            raise _fail("bad-duration", "a duration cannot be negative")
        return dt.timedelta(seconds=value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return dt.timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    raise _fail(
        "bad-duration", f"invalid duration {value!r}: expected a number and a unit (30s, 5m, 1h, 2d, 1w)"
    )


def _format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    dt.timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(_format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": ["string", "number"],
            "pattern": r"^\d+(\.\d+)?(s|m|h|d|w)$",
            "description": "A duration: 30s, 5m, 1h, 2d, 1w (or seconds as a number)",
        }
    ),
]


def _check_schedule(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail("bad-schedule", "expected a cron expression, a preset like @daily, or null")
    text = value.strip()
    if text.startswith("@"):
        if text not in CRON_PRESETS:
            raise _fail("bad-schedule", f"unknown preset {text!r}; one of {', '.join(sorted(CRON_PRESETS))}")
        return text
    from croniter import croniter  # light, and Airflow has already imported it

    if not croniter.is_valid(text):
        raise _fail(
            "bad-schedule",
            f"invalid cron expression {text!r} (expected 5 fields: minute hour day month weekday)",
        )
    return text


Schedule = Annotated[
    str | None,
    BeforeValidator(_check_schedule),
    WithJsonSchema({"type": ["string", "null"], "description": "cron expression, preset (@daily) or null"}),
]


def _fail(code: str, message: str) -> PydanticCustomError:
    """A validation error with a stable code (``mlops lint --format json`` reports it)."""
    return PydanticCustomError(code, message)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@functools.lru_cache(maxsize=16)  # the loader validates every spec against the same root: resolve it once
def _resolved_root(root: str) -> Path:
    return Path(root).resolve()


def check_inside_root(value: str, info: ValidationInfo, *, must_exist: bool = False) -> str:
    """Relative paths resolve against the project root and must stay inside it.

    ``file://`` URLs are paths too. Of a templated path only the fixed folder before the first ``{{`` can be
    checked here (``../../etc/{{ ds }}.csv`` escapes whatever ``ds`` is); the stages check the rendered path.
    """
    path = value.removeprefix("file://")
    if _URL_SCHEME.match(path):
        return value  # s3://... : the stage checks the scheme and uses the connection
    if "{{" in path:
        path = path.split("{{", 1)[0].rpartition("/")[0]
        must_exist = False
        if not path:
            return value
    root = _context(info).get("project_root")
    if root is None:
        return value
    root = _resolved_root(str(root))
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise _fail("path-escape", f"path {value!r} escapes the project root {root}")
    if must_exist and not target.exists():
        raise _fail("file-not-found", f"file {value!r} does not exist (looked in {root})")
    return value


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------
class Defaults(Section):
    """Task defaults, as Airflow's ``default_args``."""

    retries: int = Field(2, ge=0, le=100)
    retry_delay: Duration = dt.timedelta(minutes=5)
    execution_timeout: Duration | None = dt.timedelta(hours=1)
    retry_exponential_backoff: bool = False


class MLflowSection(Section):
    conn_id: str | None = Field(
        None, description="Airflow connection of type mlflow; see the hook for fallbacks"
    )
    experiment: str | None = Field(None, description="default: the pipeline name")
    model: str | None = Field(None, description="registered model name; default: the pipeline name")


class Split(Section):
    test_size: float = Field(0.25, gt=0, lt=1)
    seed: int = 42
    stratify: bool = True


class Wait(Section):
    timeout: Duration = dt.timedelta(hours=1)
    poke_interval: Duration = dt.timedelta(minutes=1)


class Ingest(Section):
    source: str = Field(description="path under the project root, or s3://bucket/key; Jinja-templated")
    conn_id: str | None = Field(None, description="Airflow connection for s3:// sources")
    format: Literal["csv", "parquet"] | None = Field(None, description="default: from the suffix")
    target: str = "target"
    features: list[str] | None = None
    split: Split = Split()
    wait: Wait | None = None

    @field_validator("source")
    @classmethod
    def _source_inside_root(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise _fail("empty-source", "source is empty")
        return check_inside_root(value, info)

    @model_validator(mode="after")
    def _format_known(self) -> Ingest:
        if self.format is None and "{{" not in self.source:
            suffix = self.source.rsplit(".", 1)[-1].lower() if "." in self.source else ""
            if suffix not in ("csv", "parquet", "pq"):
                raise _fail(
                    "unknown-format",
                    f"cannot tell the format of {self.source!r} from its suffix; set ingest.format",
                )
        if self.features is not None and self.target in self.features:
            raise _fail("target-in-features", f"the target {self.target!r} is listed among the features")
        return self


def _check_expectation(item: Any) -> Any:
    if not (isinstance(item, dict) and len(item) == 1):
        raise _fail("bad-expectation", "each expectation is a one-key mapping: - expectation_name: {kwargs}")
    ((name, _kwargs),) = item.items()
    if name not in EXPECTATIONS:
        import difflib

        close = difflib.get_close_matches(str(name), sorted(EXPECTATIONS), n=1)
        raise _fail(
            "unknown-expectation",
            f"unknown Great Expectations expectation {name!r}"
            + (f"; did you mean {close[0]!r}?" if close else ""),
        )
    return item


class Validate(Section):
    expectations: list[Annotated[dict[str, dict[str, Any]], BeforeValidator(_check_expectation)]] = []
    suite: str | None = Field(None, description="a GX expectation suite JSON file under the project root")
    on_failure: Literal["fail", "warn"] = "fail"

    @field_validator("suite")
    @classmethod
    def _suite_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_inside_root(value, info, must_exist=True)


class LocalRunner(Section):
    type: Literal["local"] = "local"


class DockerRunner(Section):
    type: Literal["docker"]
    image: str
    docker_url: str | None = Field(None, description="default: DOCKER_HOST, else unix:///var/run/docker.sock")
    docker_conn_id: str | None = Field(
        None, description="Airflow docker connection: registry login for a pull"
    )
    python: str = Field("python3", description="the Python inside the image (with airflow-provider-mlops)")
    network_mode: str | None = None
    mem_limit: str | None = Field(None, description="hard memory limit, e.g. 2g")
    cpus: float | None = Field(None, gt=0, description="hard CPU limit, e.g. 1.5")
    user: str | None = Field(
        None, description="default: the image's; the worker's uid:gid when it is not root"
    )
    auto_remove: bool = Field(True, description="remove the container when training ends, even on failure")
    environment: dict[str, str] = {}
    mounts: list[str] = Field([], description="source:/target[:ro|rw]; host sources inside the project root")


class IntRange(Section):
    int_: tuple[int, int] = Field(alias="int", description="[low, high], both included")
    log: bool = Field(False, description="sample on a log scale (low must be > 0)")


class FloatRange(Section):
    float_: tuple[float, float] = Field(alias="float", description="[low, high]")
    log: bool = Field(False, description="sample on a log scale (low must be > 0)")


class Choice(Section):
    choice: list[str | int | float | bool | None] = Field(min_length=1)


def _search_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((kind for kind in ("int", "float", "choice") if kind in value), None)
    return next((kind for kind in ("int", "float", "choice") if hasattr(value, kind + "_") or
                 (kind == "choice" and hasattr(value, "choice"))), None)


SearchParam = Annotated[
    Annotated[IntRange, Tag("int")] | Annotated[FloatRange, Tag("float")] | Annotated[Choice, Tag("choice")],
    Discriminator(_search_kind, custom_error_type="bad-tune",
                  custom_error_message="a search parameter is {int: [low, high]}, {float: [low, high]} "
                                       "or {choice: [a, b, ...]}"),
]


class Tune(Section):
    """Hyperparameter search (Optuna), cross-validated on the training split, as parallel Airflow tasks."""

    trials: int = Field(20, ge=1, le=10_000)
    parallel: int = Field(1, ge=1, le=64, description="mapped tasks the trials spread over")
    metric: str | None = Field(None, description="default: evaluate.champion.metric, else the first metric")
    cv: int = Field(3, ge=2, le=20, description="folds of the training split (the test split is never used)")
    timeout: Duration | None = Field(None, description="per search task; unfinished trials are not started")
    seed: int | None = Field(None, description="default: ingest.split.seed")
    space: dict[str, SearchParam] = Field(min_length=1, description="estimator parameter -> range or choice")


class Train(Section):
    estimator: str | None = Field(None, description="dotted path of a scikit-learn-API estimator class")
    entrypoint: str | None = Field(None, description="file.py:function(X_train, y_train, params) -> model")
    params: dict[str, Any] = {}
    runner: Annotated[LocalRunner | DockerRunner, Field(discriminator="type")] = LocalRunner()
    cache: bool = Field(
        True, description="reuse the model of an earlier run with the same data, ingest/transform/train "
        "sections, entrypoint file and ML library versions instead of training again"
    )
    tune: Tune | None = None

    @field_validator("estimator")
    @classmethod
    def _estimator_allowed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$", value):
            raise _fail(
                "bad-import-path", f"{value!r} is not a dotted import path like sklearn.linear_model.Ridge"
            )
        allowed = _context(info).get("allowed_modules")
        if allowed is not None and not any(value == m or value.startswith(m + ".") for m in allowed):
            raise _fail(
                "module-not-allowed",
                f"module of {value!r} is not in the allow-list ({', '.join(allowed)}); "
                "an operator can extend it with [mlops] allowed_modules",
            )
        return value

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        path, sep, func = value.partition(":")
        if not sep or not path.endswith(".py") or not func.isidentifier():
            raise _fail("bad-entrypoint", f"{value!r} is not of the form path/to/file.py:function")
        check_inside_root(path, info, must_exist=True)
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Train:
        if (self.estimator is None) == (self.entrypoint is None):
            raise _fail("estimator-or-entrypoint", "set exactly one of train.estimator and train.entrypoint")
        return self


class NumericSteps(Section):
    """How numeric feature columns are prepared (scikit-learn's SimpleImputer, then a scaler)."""

    impute: Literal["mean", "median", "most_frequent", "constant"] | None = Field(
        "median", description="fill missing values; null: leave them (the estimator must cope)"
    )
    fill_value: float | None = Field(None, description="with impute: constant (default 0)")
    scale: Literal["standard", "minmax", "robust"] | None = "standard"


class CategoricalSteps(Section):
    """How categorical feature columns are prepared (SimpleImputer, then an encoder)."""

    impute: Literal["most_frequent", "constant"] | None = "most_frequent"
    fill_value: str | None = Field(None, description='with impute: constant (default "missing")')
    encode: Literal["onehot", "ordinal"] = Field(
        "onehot", description="unseen categories at scoring time: all-zero one-hot / code -1, never an error"
    )


class TransformColumns(Section):
    numeric: list[str] | None = Field(None, description="default: the feature columns holding numbers")
    categorical: list[str] | None = Field(
        None, description="default: the feature columns holding strings, categories or booleans"
    )
    drop: list[str] = Field([], description="never used as features (ids, free text, leakage)")


class Transform(Section):
    """Preprocessing fitted with the estimator and logged with it as one scikit-learn Pipeline."""

    columns: TransformColumns = TransformColumns()
    numeric: NumericSteps = NumericSteps()
    categorical: CategoricalSteps = CategoricalSteps()


class Bound(Section):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Bound:
        if self.min is None and self.max is None:
            raise _fail("bad-threshold", "a threshold needs min or max")
        return self


class Champion(Section):
    metric: str | None = Field(None, description="default: the first metric")
    min_delta: float = Field(0.0, ge=0)
    enabled: bool = True


class Evaluate(Section):
    metrics: list[str] | None = Field(None, description="default per task, see METRICS")
    thresholds: dict[str, Bound] = {}
    champion: Champion = Champion()
    positive_class: str | int | bool | None = Field(
        None, description="binary classification: the label precision/recall/f1/roc_auc are about; "
        "default: the second of the two labels, sorted"
    )


def _check_alias(alias: str) -> str:
    if not re.match(r"^[A-Za-z_][\w-]*$", alias) or re.match(r"^[vV]\d+$", alias) or alias == "latest":
        raise _fail(
            "bad-alias",
            f"{alias!r} is not a valid MLflow alias (letters, digits, _ and -; not 'latest' or v<N>)",
        )
    return alias


class Register(Section):
    aliases: list[Annotated[str, AfterValidator(_check_alias)]] = ["challenger"]
    tags: dict[str, str] = {}


class HealthCheck(Section):
    """How a serving target proves it serves the candidate before any alias moves."""

    sample: str | None = Field(
        None,
        description="CSV/parquet file (under the project root) of feature rows to send; "
        "default: rows of the candidate's own test set",
    )
    rows: int = Field(20, ge=1, le=10_000, description="how many sample rows to send")
    tolerance: float = Field(1e-6, ge=0, description="max absolute difference per prediction")
    timeout: Duration = Field(
        dt.timedelta(minutes=3), description="how long the target may take to be healthy"
    )


class DockerTarget(Section):
    """A serving container (MLflow's model server) on a Docker engine, swapped blue/green."""

    type: Literal["docker"]
    name: str | None = Field(
        None,
        description="container name prefix; default: <pipeline>-serving",
        json_schema_extra={"pattern": r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"},
    )
    image: str = Field(description="image with Python and mlflow (the model's requirements) installed")
    python: str = Field("python3", description="the Python inside the image that has mlflow")
    port: int = Field(5001, ge=1, le=65535, description="host port the live container is published on")
    docker_url: str | None = Field(None, description="default: DOCKER_HOST, else unix:///var/run/docker.sock")
    docker_conn_id: str | None = Field(None, description="Airflow docker connection for a private registry")
    network_mode: str | None = None
    mem_limit: str | None = Field(None, description="hard memory limit, e.g. 1g")
    cpus: float | None = Field(None, gt=0, description="hard CPU limit, e.g. 1.5")
    workers: int = Field(1, ge=1, le=64, description="model server worker processes")
    environment: dict[str, str] = {}
    mounts: list[str] = Field([], description="source:/target[:ro|rw]; host sources inside the project root")
    health: HealthCheck = HealthCheck()


class SageMakerTarget(Section):
    """A SageMaker real-time endpoint (model + endpoint config + endpoint), created or updated."""

    type: Literal["sagemaker"]
    endpoint: str | None = Field(
        None,
        description="endpoint name; default: <pipeline> with - for _",
        json_schema_extra={"pattern": r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"},
    )
    image_uri: str = Field(
        description="ECR image serving MLflow pyfunc models (mlflow sagemaker build-and-push-container)"
    )
    execution_role_arn: str = Field(
        description="IAM role SageMaker assumes (arn:aws:iam::<account>:role/...)"
    )
    artifact_bucket: str = Field(description="S3 bucket (optionally bucket/prefix) for model.tar.gz")
    aws_conn_id: str | None = Field("aws_default", description="Airflow AWS connection")
    region: str | None = Field(None, description="default: the connection's region")
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(1, ge=1)
    health: HealthCheck = HealthCheck()
    timeout: Duration = Field(
        dt.timedelta(minutes=30), description="how long the endpoint may take to be InService"
    )


ServingTarget = Annotated[DockerTarget | SageMakerTarget, Field(discriminator="type")]


class Batch(Section):
    """A ``<name>_batch`` DAG that scores new data with ``models:/<model>@<alias>``."""

    schedule: Schedule = "@daily"
    input: str = Field(description="path under the project root, or s3://bucket/key; Jinja-templated")
    output: str = Field(
        description="where predictions go (parquet), path or s3://; templated, e.g. out/{{ ds }}.parquet"
    )
    conn_id: str | None = Field(None, description="Airflow connection for s3:// input/output")
    format: Literal["csv", "parquet"] | None = Field(
        None, description="input format; default: from the suffix"
    )
    chunk_rows: int = Field(100_000, ge=1, description="rows scored per chunk (bounds memory)")

    @field_validator("input", "output")
    @classmethod
    def _inside_root(cls, value: str, info: ValidationInfo) -> str:
        return check_inside_root(value, info)


class Approval(Section):
    """A person approves the promotion in the Airflow UI (human-in-the-loop) after evaluation passed."""

    required: bool = True
    timeout: Duration = Field(
        dt.timedelta(days=1), description="no decision by then: the promotion is rejected"
    )
    assignees: list[str] = Field([], description="Airflow user names allowed to respond; default: anyone")


def _approval(value: Any) -> Any:
    # `approval: required` / `approval: none` are the short forms of the mapping
    if value == "required":
        return {"required": True}
    if value in ("none", None, False):
        return None
    if value is True:
        return {"required": True}
    return value


class Deploy(Section):
    alias: Annotated[str, AfterValidator(_check_alias)] = "champion"
    approval: Annotated[Approval | None, BeforeValidator(_approval)] = Field(
        None, description="'required' (or a mapping) to wait for a person's approval before promotion"
    )
    targets: list[ServingTarget] = Field(
        [], description="serving targets; each is health-checked before the alias moves"
    )
    batch: Batch | None = None


class Drift(Section):
    share: float = Field(0.5, gt=0, le=1)
    method: str | None = Field(
        None, description="Evidently per-column drift method; default: Evidently's choice"
    )
    threshold: float | None = None


AlertEvent = Literal["drift", "failure"]


class SmtpAlert(Section):
    """An e-mail through Airflow's SMTP notifier (``apache-airflow-providers-smtp``)."""

    type: Literal["smtp"]
    to: list[str] = Field(min_length=1, description="recipients")
    on: list[AlertEvent] = Field(["drift", "failure"], description="events that send this alert")
    conn_id: str = Field("smtp_default", description="Airflow SMTP connection (host, port, credentials)")
    from_email: str | None = Field(None, description="default: the connection's from_email")


Alert = Annotated[SmtpAlert, Field(discriminator="type")]


class Monitor(Section):
    schedule: Schedule = "@daily"
    current: str | None = Field(
        None,
        description="data to watch (path or s3://, templated); default: batch input, else ingest.source",
    )
    drift: Drift = Drift()
    retrain: bool = False
    alerts: list[Alert] = Field([], description="notifications on drift or on a failed monitor run")

    @field_validator("current")
    @classmethod
    def _current_inside_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_inside_root(value, info)


class PipelineSpec(Section):
    """A machine-learning pipeline: one YAML file, one training DAG (plus monitor/batch DAGs)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "airflow-provider-mlops pipeline spec",
        },
    )

    version: int = Field(description="spec format version; only 1 exists")
    name: str = Field(
        max_length=200,
        description="the training DAG's id: [a-z][a-z0-9_]*",
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    task: Literal["classification", "regression"]
    description: str | None = None
    owner: str = "mlops"
    tags: list[str] = []
    schedule: Schedule = None
    start_date: dt.date = dt.date(2024, 1, 1)
    catchup: bool = False
    defaults: Defaults = Defaults()
    mlflow: MLflowSection = MLflowSection()
    ingest: Ingest
    validate_: Validate = Field(Validate(), alias="validate")
    transform: Transform | None = None
    train: Train
    evaluate: Evaluate = Evaluate()
    register_: Register = Field(Register(), alias="register")
    deploy: Deploy = Deploy()
    monitor: Monitor | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _supported_version(cls, value: Any) -> Any:
        if value != SPEC_VERSION or isinstance(value, bool):
            raise _fail(
                "unsupported-version",
                f"unsupported spec version {value!r}; this release reads version {SPEC_VERSION}",
            )
        return value

    @field_validator("name")
    @classmethod
    def _dag_id_safe(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):
            suggestion = re.sub(r"[^a-z0-9_]+", "_", value.lower()).strip("_")
            raise _fail(
                "bad-name",
                f"{value!r} is not a valid pipeline name: use lowercase letters, digits and "
                f"underscores, starting with a letter (e.g. {suggestion!r})",
            )
        if value in RESERVED_NAMES:
            raise _fail(
                "bad-name",
                f"{value!r} is reserved: the loader uses it for the DAG that reports invalid specs",
            )
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.date()
        return value

    # ---- derived values (defaults that depend on other keys) -------------------------------------

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment or self.name

    @property
    def model_name(self) -> str:
        return self.mlflow.model or self.name

    @property
    def metrics(self) -> list[str]:
        return self.evaluate.metrics if self.evaluate.metrics is not None else DEFAULT_METRICS[self.task]

    @property
    def champion_metric(self) -> str:
        return self.evaluate.champion.metric or self.metrics[0]

    @property
    def dag_ids(self) -> dict[str, str]:
        """Every DAG id this pipeline produces → its kind (:data:`~mlops_provider.spec.kinds.DAG_KINDS`)."""
        from mlops_provider.spec.kinds import DAG_KINDS

        return {kind.dag_id(self.name): kind.name for kind in DAG_KINDS if kind.present(self)}

    @property
    def tune_metric(self) -> str | None:
        tune = self.train.tune
        if tune is None:
            return None
        return tune.metric or (self.champion_metric if self.evaluate.champion.enabled else self.metrics[0])

    @property
    def stratify(self) -> bool:
        return self.task == "classification" and self.ingest.split.stratify


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec, for editors (yaml-language-server) and CI bots."""
    return PipelineSpec.model_json_schema(by_alias=True)
