"""Every error this package raises, in one place.

Errors from *misuse* (a spec that is wrong) are kept apart from errors at *run time* (a server that is
down, data that fails validation). A spec error always knows where it is: file, line, column and the
path of keys, so every message can point at the exact place to fix.

    MlopsError
    ├── SpecError                 a spec file is invalid; carries one or more SpecIssue
    └── StageError                a pipeline stage failed at run time
        ├── ServiceUnavailableError   MLflow / S3 / Docker could not be reached (retryable)
        ├── DataValidationError       the dataset failed its expectations
        ├── GateFailedError           the candidate model failed a threshold or the champion check
        └── NotAllowedError           an import path or file path a spec names is not allowed
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DataValidationError",
    "GateFailedError",
    "MlopsError",
    "NotAllowedError",
    "ServiceUnavailableError",
    "SpecError",
    "SpecIssue",
    "StageError",
]


class MlopsError(Exception):
    """Base class of every error raised by mlops_provider."""


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


class StageError(MlopsError):
    """A pipeline stage failed at run time."""


class ServiceUnavailableError(StageError):
    """An external service (named in the message) could not be reached; the task should retry."""


class DataValidationError(StageError):
    """The dataset did not meet its expectations."""


class GateFailedError(StageError):
    """The candidate model failed an evaluation gate; promotion is refused."""


class NotAllowedError(StageError):
    """A spec names an import path or file path outside what the deployment allows."""


class DeploymentCheckError(StageError):
    """A serving target failed to start or failed its health check; the alias did not move."""
