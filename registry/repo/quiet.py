"""Libraries we call (DVC, MLflow) log as if they were the command; as libraries they stay quiet."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise these loggers to `level` for the block, then put their levels back."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(level)
    try:
        yield
    finally:
        for log, previous in zip(loggers, levels, strict=True):
            log.setLevel(previous)
