"""One exception root. The CLI turns each into one clear line and an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class RegistryError(Exception):
    """Root of every error the registry reports to a user. Exit code 1."""

    exit_code = 1


class UsageError(RegistryError):
    """The command was called wrongly (bad option, bad name). Exit code 2."""

    exit_code = 2


class NotARegistryError(RegistryError):
    """The directory is not a registry (no registry.yaml at its git root)."""


class GitError(RegistryError):
    """A git command failed in a way the user has to act on."""


class StorageError(RegistryError):
    """DVC could not track, push or fetch an artifact."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: where it is, which field, what to do."""

    path: str
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ValidationError(RegistryError):
    """One or more files are invalid. Each problem names file, line and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def one(
        cls, path: str | Path, message: str, line: int | None = None, field: str | None = None
    ) -> ValidationError:
        return cls([Problem(str(path), message, line, field)])
