"""The pull-request gates: one module per gate, each with `run(ctx) -> list[GateResult]`.

A gate module may declare `REQUIRES`: the gates that `registry check` always runs before
it, whatever `--gate` selects (see `registry.gates.run.with_prerequisites`). What a gate
answers is in `registry.gates.result`, the helpers gates share in `registry.gates.common`;
this package names neither `run` nor a gate module, so `run` may ask it for the gates.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry.gates.result import GateResult

# A gate's `run`: it takes the check's context (registry.gates.run.CheckContext, which this
# package does not import: run imports it).
GateFn = Callable[[Any], "list[GateResult]"]


def load(name: str) -> GateFn:
    module = importlib.import_module(f"registry.gates.{name}")
    return module.run  # type: ignore[no-any-return]


def requires(name: str) -> tuple[str, ...]:
    """The gates this one declares it needs run before it (its module's REQUIRES)."""
    module = importlib.import_module(f"registry.gates.{name}")
    return tuple(getattr(module, "REQUIRES", ()))
