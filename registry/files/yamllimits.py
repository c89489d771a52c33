"""The limits every YAML reader applies to files a pull request controls (size, aliases, integers).

Apart from `yamlio` so that the PyYAML-backed parser (`_yaml`, imported on first parse)
and `yamlio` (imported at start-up) both read them without importing each other."""

from __future__ import annotations

from registry.errors import ValidationError

MAX_YAML_BYTES = 1 << 20
# Nodes a document may expand to once aliases are followed.
MAX_EXPANDED_NODES = 100_000
# Python's default limit on int <-> str conversions (sys.get_int_max_str_digits).
MAX_INT_DIGITS = 4300


def too_big(display: str, size: int) -> ValidationError:
    return ValidationError.one(display, f"file is {size} bytes, over the {MAX_YAML_BYTES}-byte limit for YAML files")
