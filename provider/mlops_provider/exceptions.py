"""Every error this package raises, in one place.

Errors from *misuse* (a spec or a deployment setting that is wrong) are kept apart from errors at *run
time* (a server that is down, data that fails validation). A spec error always knows where it is: file,
line, column and the path of keys, so every message can point at the exact place to fix.

Whether retrying can help is a property of the error (:attr:`MlopsError.retryable`), decided here and
nowhere else: the stage operators' base class turns every non-retryable error into Airflow's no-retry
failure, so a bad dataset or a failed gate fails at once and a server that is down is retried. So does
a server that refuses the credentials (:func:`refused_credentials`), whoever's exception it raised.

    MlopsError                        retryable: no, unless said otherwise
    ├── SpecError                     misuse: a spec file is invalid; carries one or more SpecIssue
    ├── NotAllowedError               misuse: an import path or file path is outside what is allowed
    └── StageError                    a pipeline stage failed at run time
        ├── ServiceUnavailableError   MLflow / S3 / Docker could not be reached      (retryable)
        ├── DataValidationError       the dataset failed its expectations
        ├── GateFailedError           the candidate model failed a threshold or the champion check
        ├── ChampionChangedError      the alias moved after evaluate compared against its holder: the
        │                             comparison is stale, deploy refuses (re-run evaluate)
        ├── NoAliasHolderError        no version of the registered model holds the alias (yet)
        ├── LineageMissingError       a model version's run does not record what a stage needs
        ├── DeploymentCheckError      a serving target failed to start or its health check; the alias
        │   │                         did not move
        │   └── TargetBusyError       a serving target is in the middle of another change (an endpoint
        │                             Updating): nothing was touched              (retryable)
        └── WatchFailedError          a watched model version reached a failed status (sensor/trigger)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ChampionChangedError",
    "DataValidationError",
    "DeploymentCheckError",
    "GateFailedError",
    "LineageMissingError",
    "MlopsError",
    "NoAliasHolderError",
    "NotAllowedError",
    "ServiceUnavailableError",
    "SpecError",
    "SpecIssue",
    "StageError",
    "TargetBusyError",
    "WatchFailedError",
    "describe",
    "refused_credentials",
]


class MlopsError(Exception):
    """Base class of every error raised by mlops_provider."""

    #: can a retry of the same task succeed? (only when something outside may change: a server comes back)
    retryable: bool = False


@dataclass(frozen=True)
class SpecIssue:
    """One problem in one spec file, located precisely enough for an editor to jump to it."""

    file: str
    line: int
    column: int
    message: str
    key_path: tuple[str | int, ...] = ()
    hint: str | None = None
    code: str = "invalid"

    @property
    def dotted_path(self) -> str:
        out = ""
        for part in self.key_path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        what = f"{self.dotted_path}: {self.message}" if self.key_path else self.message
        return f"{where}: {what}" + (f" (hint: {self.hint})" if self.hint else "")

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.dotted_path,
            "message": self.message,
            "hint": self.hint,
            "code": self.code,
        }


@dataclass
class SpecError(MlopsError):
    """A spec (or several) is invalid. ``str()`` lists every issue, one per line.

    The first line counts and names the invalid files (and, given ``specs_checked``, says of how many),
    so a reader of Airflow's import errors sees at a glance how many pipelines are broken and which.
    """

    issues: list[SpecIssue] = field(default_factory=list)
    specs_checked: int | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def files(self) -> list[str]:
        return sorted({i.file for i in self.issues})

    def __str__(self) -> str:
        files = self.files
        counts = {f: sum(1 for i in self.issues if i.file == f) for f in files}
        named = ", ".join(f"{f} ({n} error{'s' if n > 1 else ''})" for f, n in counts.items())
        if self.specs_checked is None:
            head = f"{len(files)} invalid pipeline spec file{'s' if len(files) != 1 else ''}: {named}"
        else:
            head = (f"{len(files)} of {self.specs_checked} pipeline specs invalid, their DAGs not loaded "
                    f"(the other pipelines are unaffected): {named}")
        return head + "\n" + "\n".join(i.format() for i in self.issues)


class NotAllowedError(MlopsError):
    """A spec names an import path or file path outside what the deployment allows."""


class StageError(MlopsError):
    """A pipeline stage failed at run time."""


class ServiceUnavailableError(StageError):
    """An external service (named in the message) could not be reached; the task should retry."""

    retryable = True


class DataValidationError(StageError):
    """The dataset did not meet its expectations."""


class GateFailedError(StageError):
    """The candidate model failed an evaluation gate; promotion is refused."""


class ChampionChangedError(StageError):
    """Deploy's compare-and-swap failed: the alias no longer points at the version evaluate compared with."""


class NoAliasHolderError(StageError):
    """No version of the registered model holds the alias: nothing was trained and promoted yet."""


class LineageMissingError(StageError):
    """A model version's MLflow run does not record what a stage needs (e.g. the data it learned from)."""


class DeploymentCheckError(StageError):
    """A serving target failed to start or failed its health check; the alias did not move."""


class TargetBusyError(DeploymentCheckError):
    """A serving target is busy with another change (e.g. a SageMaker endpoint ``Updating``); nothing was
    touched and a retry may find it settled."""

    retryable = True


class WatchFailedError(StageError):
    """What a model-version sensor waits for can no longer happen (e.g. the version's registration failed)."""


#: error codes of a server that refused *who* asked: MLflow's (HTTP 401 / 403) and S3's
_REFUSED_CREDENTIALS = frozenset({
    "UNAUTHENTICATED", "PERMISSION_DENIED",  # MlflowException / RestException.error_code
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",  # botocore ClientError
})


def refused_credentials(error: BaseException) -> bool:
    """Did a server refuse the credentials (MLflow's UNAUTHENTICATED / PERMISSION_DENIED, S3's
    AccessDenied...)? It answered, so it is up, and a retry with the same connection cannot help.

    Duck-typed (``error_code``, botocore's ``response``) so that nothing heavy is imported to ask.
    """
    code = getattr(error, "error_code", None)
    response = getattr(error, "response", None)
    if code is None and isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
    return code in _REFUSED_CREDENTIALS


#: the exception Airflow raises for "fail without retrying", wrapped around our non-retryable errors
_AIRFLOW_FAIL = "AirflowFailException"


def describe(error: BaseException | str) -> str:
    """``Type: message`` of an error, naming the stage's own error rather than Airflow's no-retry wrapper."""
    if isinstance(error, str):
        return error.strip()
    if type(error).__name__ == _AIRFLOW_FAIL and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
