"""Which live version answers a request: production, or the canary for its share of traffic.

With a canary served beside production, a request goes to the canary with probability
`traffic` (C1: `state.json` `models[name].canary.traffic`). A request that carries an
`X-Canary-Key` header is sticky instead: the key's sha256 decides, so the same key
always lands on the same side for a given share. With one version only (no canary, or a
folder pulled with `--stage canary`), that version answers everything.
"""

from __future__ import annotations

import hashlib
import random
from typing import TypeVar

__all__ = ["CANARY_KEY_HEADER", "choose", "draw"]

CANARY_KEY_HEADER = "X-Canary-Key"

T = TypeVar("T")


def draw(key: str | None, rng: random.Random) -> float:
    """A number in [0, 1): from the key when there is one, else random."""
    if key is None:
        return rng.random()
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose(current: T | None, canary: T | None, traffic: float, key: str | None, rng: random.Random) -> T | None:
    """`canary` for a `traffic` share of requests, `current` for the rest; whichever exists if only one does."""
    if canary is None:
        return current
    if current is None:
        return canary
    return canary if draw(key, rng) < traffic else current
