"""format gate: each artifact's bytes are the format its name says (a safetensors header inside the file)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.gates.conftest import (
    check,
    failures,
    register,
)


def test_format_gate_header_past_the_end(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    broken = tmp_path / "broken" / "weights.safetensors"
    broken.parent.mkdir()
    header = b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'
    broken.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    register(cli, gated, tmp_path, "1.1.0", extra=[broken])
    fails = failures(check(cli, gated, tmp_path))
    assert any(m.startswith("models/m/1.1.0/weights.safetensors:") for m in fails["format"])
