"""The Python API's entry points. Everything else hangs off the Registry object.

    import registry
    reg = registry.open("path/to/registry")
    reg.models(); reg.card("credit-approval", "1.2.0"); reg.resolve("credit-approval")
    reg.manifest("production"); reg.log("credit-approval")
"""

from __future__ import annotations

from pathlib import Path

from registry.repo.registry import Registry


def open(path: str | Path = ".") -> Registry:
    """The registry whose work tree contains path."""
    return Registry.find(path)


def init(path: str | Path = ".", dvc_remote: str | None = None) -> Registry:
    from registry.changes import init as create

    return create.init(Path(path), dvc_remote)


