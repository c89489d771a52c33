"""registry: a GitOps model registry. ``reg = registry.open(path)`` is the way in.

Attributes are imported on first use so that ``registry --help`` and small
commands stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.version import __version__ as __version__

__all__ = ["Puller", "Registry", "RegistryError", "UsageError", "ValidationError", "open", "pull"]

if TYPE_CHECKING:
    from registry.api import Registry, open
    from registry.errors import RegistryError, UsageError, ValidationError
    from registry.serving.puller import Puller, pull


def __getattr__(name: str) -> Any:
    if name == "open":
        from registry import api

        return api.open
    if name in ("pull", "Puller"):
        from registry.serving import puller as serving

        return getattr(serving, name)
    if name == "Registry":
        from registry.api import Registry

        return Registry
    if name in ("RegistryError", "UsageError", "ValidationError"):
        from registry import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
