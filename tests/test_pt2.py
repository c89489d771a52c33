"""MLflow 3's default PyTorch format: torch.export archives (.pt2). Recognised by their
layout, raw weight members read as data, anything torch would unpickle scanned strictly,
compiled code refused; and `convert` says what is true of raw weight bytes."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry.artifacts import scan
from registry.artifacts.identify import sniff
from tests.conftest import Result, snapshot


class SystemCall:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("touch /tmp/registry-pt2-pwned",))


EVIL = pickle.dumps(SystemCall())


def _meta(path_name: str, *, use_pickle: bool = False) -> dict[str, object]:
    return {
        "path_name": path_name,
        "is_param": True,
        "use_pickle": use_pickle,
        "tensor_meta": {"dtype": 7, "sizes": [{"as_int": 4}], "requires_grad": True,
                        "device": {"type": "cpu", "index": None},
                        "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7},
    }


def _weights() -> bytes:
    # Raw float32 storage as torch writes it: no header, nothing a loader recognises.
    return np.array([0.1234, -7.5, 3.25e-3, 1.0e6], dtype=np.float32).tobytes()


def pt2(
    *,
    root: str = "model",
    configs: dict[str, object] | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """The layout of torch.export.save (torch 2.13): every member under one folder."""
    members: dict[str, bytes] = {
        "data/weights/weight_0": _weights(),
        "models/model.json": json.dumps({"exported_program": {"graph_module": {}}}).encode(),
        "data/sample_inputs/model.pt": pickle.dumps(((), {}), protocol=2),
        "archive_format": b"pt2",
        "archive_version": b"0",
        ".data/version": b"6\n",
        "byteorder": b"little",
        ".data/serialization_id": b"0123456789abcdef0123456789abcdef01234567",
    }
    given = configs if configs is not None else {
        "data/weights/model_weights_config.json": {"config": {"l.weight": _meta("weight_0")}},
        "data/constants/model_constants_config.json": {"config": {}},
    }
    members.update({name: json.dumps(body).encode() for name, body in given.items()})
    members.update(extra or {})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{root}/{name}", data)
    return out.getvalue()


def test_a_pt2_archive_is_recognised_and_its_raw_weights_read_as_data(tmp_path: Path) -> None:
    """Before: every weight member was "unrecognised content"."""
    path = tmp_path / "model.bin"  # by its bytes, not its name
    path.write_bytes(pt2())
    report = scan.scan_file(path)
    assert report.safe, [str(f) for f in report.findings]
    assert report.kind == "pt2"
    assert scan.identify_file(path) == "pt2"
    assert sniff(path) == "pt2"


def test_a_weight_torch_would_unpickle_is_scanned_strictly(tmp_path: Path) -> None:
    configs = {
        "data/weights/model_weights_config.json": {
            "config": {"l.weight": _meta("weight_0", use_pickle=True)}
        },
    }
    path = tmp_path / "model.pt2"
    path.write_bytes(pt2(configs=configs, extra={"data/weights/weight_0": EVIL}))
    report = scan.scan_file(path)
    assert {f.global_name for f in report.findings} == {"posix.system"}
    assert report.findings[0].member == "model/data/weights/weight_0"


def test_one_config_saying_pickle_wins_over_another_saying_raw(tmp_path: Path) -> None:
    configs = {
        "data/weights/model_weights_config.json": {"config": {"a": _meta("weight_0")}},
        "data/weights/other_weights_config.json": {
            "config": {"b": _meta("weight_0", use_pickle=True)}
        },
    }
    path = tmp_path / "model.pt2"
    path.write_bytes(pt2(configs=configs, extra={"data/weights/weight_0": EVIL}))
    assert {f.global_name for f in scan.scan_file(path).findings} == {"posix.system"}


def test_a_member_no_config_lists_is_scanned_by_its_content(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(pt2(extra={"data/weights/weight_9": _weights()}))
    report = scan.scan_file(path)
    assert [f.member for f in report.findings] == ["model/data/weights/weight_9"]
    assert "unrecognised content" in report.findings[0].message


@pytest.mark.parametrize(
    ("member", "data", "expected"),
    [
        ("data/constants/opaque_obj_0", EVIL, "posix.system"),  # pickle.loads
        ("data/sample_inputs/model.pt", EVIL, "posix.system"),  # torch.load
        ("data/aotinductor/model/abc.so", b"\x7fELF", "AOTInductor compiled code"),
        ("data/constants/custom_obj_0", b"PK", "TorchBind object"),
    ],
)
def test_what_torch_would_run_is_refused(
    tmp_path: Path, member: str, data: bytes, expected: str
) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(pt2(extra={member: data}))
    report = scan.scan_file(path)
    assert any(
        expected in (f.global_name or "") or expected in f.message for f in report.findings
    ), [str(f) for f in report.findings]
    assert any(f.member == f"model/{member}" for f in report.findings)
    assert not Path("/tmp/registry-pt2-pwned").exists()


def test_a_zip_without_the_pt2_marker_is_a_plain_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    data = pt2(extra={"archive_format": b"not"})
    path.write_bytes(data)
    report = scan.scan_file(path)
    assert report.kind == "zip"
    assert any("unrecognised content" in f.message for f in report.findings)


def test_real_torch_export_archive_passes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (CI installs it)")

    class Model(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)
            self.register_buffer("offset", torch.ones(2))

        def forward(self, x: object) -> object:
            return self.linear(x) + self.offset

    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(Model(), (torch.randn(3, 4),)), path)
    report = scan.scan_file(path)
    assert report.safe, [str(f) for f in report.findings]
    assert report.kind == "pt2"
    assert sniff(path) == "pt2"


def test_convert_says_raw_weights_are_unrecognised_not_code(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    raw = tmp_path / "weight_0"
    raw.write_bytes(_weights())
    before = snapshot(tmp_path)
    result = cli("convert", str(raw), "--to", "safetensors", cwd=tmp_path)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "could run code" not in result.err
    assert "unpickl" not in result.err.splitlines()[0]
    assert "could not show this file safe to read (unknown content" in result.err
    assert snapshot(tmp_path) == before
