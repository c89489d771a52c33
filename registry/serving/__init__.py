"""`registry pull`: the verified, atomic client that keeps a serving folder at what a stage says.

    from registry.serving import Puller, pull, stop_on_signals

The names load on first use, so importing one of this package's modules stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["PullResult", "Puller", "pull", "stop_on_signals"]

if TYPE_CHECKING:
    from registry.serving.puller import Puller, PullResult, pull, stop_on_signals


def __getattr__(name: str) -> Any:
    if name in __all__:
        from registry.serving import puller

        return getattr(puller, name)
    raise AttributeError(f"module 'registry.serving' has no attribute {name!r}")
