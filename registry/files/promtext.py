"""Prometheus text exposition format, as the pull client's --metrics-file and `registry evaluate --textfile` write it."""

from __future__ import annotations

__all__ = ["label_value"]


def label_value(value: str) -> str:
    """A label value inside double quotes: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
