"""The public Python API: `registry.open(path)` and the operations the CLI runs.

    import registry
    reg = registry.open("path/to/registry")
    reg.models(); reg.card("credit-approval", "1.2.0"); reg.resolve("credit-approval")
    reg.manifest("production"); reg.log("credit-approval")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import Problem
from registry.repo import registry as repo

if TYPE_CHECKING:  # the modules load on first call, so `import registry` stays fast
    from registry.changes.promote import Promoted
    from registry.changes.register import Registered
    from registry.queries.audit import AuditEntry
    from registry.queries.shapes import ModelSummary


class Registry(repo.Registry):
    """A registry with the queries and changes the CLI runs, for serving code and notebooks.

    Its paths and file readers are `registry.repo.registry.Registry`'s, which the layers
    below the API take; this class adds the operations on top of them."""

    def models(self, stage: str | None = None, tag: tuple[str, str] | None = None) -> list[ModelSummary]:
        from registry.queries import inventory

        return inventory.list_models(self, stage=stage, tag=tag)

    def manifest(self, stage: str = "production", at: str = "HEAD", as_of: str | None = None) -> dict[str, Any]:
        """as_of (ISO 8601 time): the manifest of the last first-parent commit of `at` at or before then."""
        from registry.queries import manifest

        return manifest.build(self, stage=stage, at=at, as_of=as_of).as_json()

    def log(self, name: str | None = None, version: str | None = None, since: str | None = None,
            **filters: Any) -> list[AuditEntry]:
        from registry.queries import audit

        return audit.log(self, name=name, version=version, since=since, **filters)

    def validate(self, paths: list[Path] | None = None) -> list[Problem]:
        from registry.queries import validate

        return validate.validate(self, paths)

    def register(self, name: str, version: str | None, card: Path, artifacts: list[Path], **options: Any) -> Registered:
        from registry.changes import register

        return register.register(self, name, version, card, artifacts, **options)

    def promote(self, name: str, version: str, to: str, reason: str, **options: Any) -> Promoted:
        from registry.changes import promote

        return promote.promote(self, name, version, to, reason, **options)


def open(path: str | Path = ".") -> Registry:
    """The registry whose work tree contains path."""
    return Registry(repo.Registry.find(path).root)


def init(path: str | Path = ".", dvc_remote: str | None = None) -> Registry:
    from registry.changes import init as create

    return Registry(create.init(Path(path), dvc_remote).root)
