"""The format gate's checkers, against real files written by the real libraries."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
import struct
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from registry.artifacts.identify import sniff
from registry.artifacts.onnx import ONNX_MISSING, check_onnx
from registry.artifacts.safetensors import (
    DTYPE_BITS,
    MAX_HEADER_BYTES,
    SafetensorsInfo,
    validate_safetensors,
)
from registry.errors import ValidationError

ONNX_REASON = "onnx not installed; pip install gitops-registry[onnx]"


def write_raw(path: Path, header: bytes | dict[str, Any] | list[Any], data: int | bytes) -> Path:
    """A safetensors-shaped file with any header and `data` zero bytes (or these bytes)."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    tail = bytes(data) if isinstance(data, int) else data
    path.write_bytes(struct.pack("<Q", len(body)) + body + tail)
    return path


def entry(dtype: str, shape: list[Any], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def refused(path: Path, *issue: str) -> ValidationError:
    """Validation fails, naming the file and every fragment of `issue`."""
    with pytest.raises(ValidationError) as caught:
        validate_safetensors(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in issue:
        assert fragment in message, message
    assert all(problem.path == str(path) for problem in caught.value.problems)
    return caught.value


# -- valid safetensors ---------------------------------------------------------------

NUMPY_DTYPES = [
    np.bool_,
    np.uint8,
    np.int8,
    np.int16,
    np.uint16,
    np.float16,
    np.int32,
    np.uint32,
    np.float32,
    np.float64,
    np.int64,
    np.uint64,
    np.complex64,
]


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_files_saved_by_safetensors_pass(tmp_path: Path, dtype: type[Any]) -> None:
    tensors = {
        "matrix": np.arange(12).reshape(3, 4).astype(dtype),
        "scalar": np.array(7).astype(dtype),
        "empty": np.zeros((0,), dtype=dtype),
        "empty_rows": np.zeros((3, 0, 2), dtype=dtype),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))

    info = validate_safetensors(path)

    itemsize = np.dtype(dtype).itemsize
    assert info == SafetensorsInfo(str(path), info.header_bytes, 4, 13 * itemsize, {})
    assert info.total_bytes == path.stat().st_size - 8 - info.header_bytes


def test_metadata_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": np.ones(3, np.float32)}, str(path), metadata={"format": "np", "é": "ü"})

    info = validate_safetensors(path)

    assert dict(info.metadata) == {"format": "np", "é": "ü"}
    assert info.tensor_count == 1


def test_no_tensors_at_all_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    save_file({}, str(path))
    assert validate_safetensors(path).tensor_count == 0


# Dtypes numpy cannot write, laid out by hand; the reference loader must agree.
HAND_MADE = [
    ("BF16", [2, 3], 12),
    ("F8_E5M2", [4], 4),
    ("F8_E4M3", [4], 4),
    ("F8_E8M0", [1], 1),
    ("F8_E4M3FNUZ", [2], 2),
    ("F8_E5M2FNUZ", [2], 2),
    ("F4", [2, 2], 2),
    ("F6_E2M3", [4], 3),
    ("F6_E3M2", [8], 6),
    ("C64", [], 8),
]


@pytest.mark.parametrize(("dtype", "shape", "size"), HAND_MADE, ids=[c[0] for c in HAND_MADE])
def test_newer_dtypes_pass_like_the_reference_loader(
    tmp_path: Path, dtype: str, shape: list[int], size: int
) -> None:
    path = write_raw(tmp_path / "x.safetensors", {"t": entry(dtype, shape, 0, size)}, size)

    assert validate_safetensors(path).total_bytes == size
    with safe_open(str(path), "np") as loaded:
        assert list(loaded.keys()) == ["t"]


def test_every_known_dtype_is_covered() -> None:
    numpy_names = {"BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "F64"}
    numpy_names |= {"I64", "U64", "C64"}
    assert numpy_names | {d for d, _, _ in HAND_MADE} == set(DTYPE_BITS)


def test_header_is_read_not_the_tensors(tmp_path: Path) -> None:
    """A sparse 64 MiB file validates: only the header is ever looked at."""
    size = 64 * 1024 * 1024
    path = write_raw(tmp_path / "big.safetensors", {"t": entry("U8", [size], 0, size)}, b"")
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size + size)
    assert validate_safetensors(path).total_bytes == size


# -- invalid safetensors ---------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"")
    refused(path, "file is 0 bytes", "too short")


def test_seven_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x02" + bytes(6))
    refused(path, "file is 7 bytes", "too short")


def test_header_length_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 500) + b"{}")
    refused(path, "header length 500 runs past the end of the file (10 bytes")


def test_huge_header_length(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    refused(path, f"header length {2**63} exceeds the {MAX_HEADER_BYTES}-byte limit")


def test_header_length_too_small(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 1) + b"{")
    refused(path, "header length 1 is too small")


def test_header_not_json(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", b"{not json}", 0)
    refused(path, "header is not valid JSON", "at byte 9")


def test_header_not_utf8(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", b'{"\xff": 1}', 0)
    refused(path, "header is not UTF-8", "offset 10")


def test_header_nan_is_not_json(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", b'{"t": NaN}', 0)
    refused(path, "header is not valid JSON", "NaN")


def test_header_nested_too_deeply(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", b'{"t": ' + b"[" * 200_000 + b"}", 0)
    refused(path, "header is not valid JSON")


def test_header_is_an_array(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", [entry("U8", [1], 0, 1)], 1)
    refused(path, "header is a JSON array, not an object")


def test_duplicate_tensor_name(tmp_path: Path) -> None:
    body = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
    body += b'"w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
    path = write_raw(tmp_path / "m.safetensors", body, 2)
    refused(path, "duplicate key 'w'")


def test_duplicate_key_inside_an_entry(tmp_path: Path) -> None:
    body = b'{"w": {"dtype": "U8", "dtype": "F32", "shape": [1], "data_offsets": [0, 1]}}'
    path = write_raw(tmp_path / "m.safetensors", body, 1)
    refused(path, "duplicate key 'dtype'")


def test_unknown_dtype(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"w": entry("F128", [1], 0, 16)}, 16)
    error = refused(path, "w: unknown dtype 'F128'", "known: BOOL")
    assert [p.field for p in error.problems] == ["w"]


@pytest.mark.parametrize(
    ("shape", "issue"),
    [
        ([-1], "has -1"),
        (["2"], "has '2'"),
        ([2.0], "has 2.0"),
        ([True], "has True"),
        ([None], "has None"),
        ({"rows": 2}, "shape must be a list of integers, not a JSON object"),
        ("2", "not a JSON string"),
    ],
    ids=["negative", "string", "float", "bool", "null", "object", "not-a-list"],
)
def test_bad_shape(tmp_path: Path, shape: Any, issue: str) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"w": entry("U8", shape, 0, 2)}, 2)
    error = refused(path, "w: ", issue)
    assert [p.field for p in error.problems] == ["w"]


def test_offsets_reversed(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"w": entry("U8", [4], 4, 0)}, 4)
    refused(path, "w: data_offsets [4, 0] are reversed")


@pytest.mark.parametrize("offsets", [[0], [0, 1, 2], [0, -1], [0, 1.5], "0,1", [False, 1]], ids=str)
def test_offsets_malformed(tmp_path: Path, offsets: Any) -> None:
    header = {"w": {"dtype": "U8", "shape": [1], "data_offsets": offsets}}
    path = write_raw(tmp_path / "m.safetensors", header, 1)
    refused(path, "w: data_offsets", "must be [begin, end], two non-negative integers")


def test_size_mismatch(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"w": entry("F32", [2, 3], 0, 20)}, 20)
    refused(path, "w: data_offsets [0, 20] span 20 bytes, but shape [2, 3] of F32 needs 24")


def test_sub_byte_tensor_not_whole_bytes(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"w": entry("F4", [3], 0, 2)}, 2)
    refused(path, "w: shape [3] of F4 is 12 bits, not a whole number of bytes")


def test_gap_between_tensors(tmp_path: Path) -> None:
    header = {"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 6, 10)}
    path = write_raw(tmp_path / "m.safetensors", header, 10)
    error = refused(path, "b: gap: bytes 4..6 before this tensor belong to no tensor")
    assert [p.field for p in error.problems] == ["b"]


def test_gap_before_the_first_tensor(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": entry("U8", [4], 2, 6)}, 6)
    refused(path, "a: gap: bytes 0..2")


def test_overlapping_tensors(tmp_path: Path) -> None:
    header = {"a": entry("U8", [8], 0, 8), "b": entry("U8", [4], 4, 8)}
    path = write_raw(tmp_path / "m.safetensors", header, 8)
    refused(path, "b: overlap: data_offsets [4, 8] overlap tensor 'a' which ends at 8")


def test_empty_tensor_inside_another_overlaps(tmp_path: Path) -> None:
    header = {"a": entry("U8", [8], 0, 8), "z": entry("U8", [0], 4, 4)}
    path = write_raw(tmp_path / "m.safetensors", header, 8)
    refused(path, "z: overlap")


def test_trailing_bytes_after_last_tensor(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": entry("U8", [4], 0, 4)}, 7)
    refused(path, "trailing bytes: 3 bytes after the last tensor")


def test_missing_bytes(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": entry("F32", [4], 0, 16)}, 10)
    refused(path, "missing bytes: tensors need 16 bytes of data but the file holds 10")


def test_truncated_real_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-5])
    refused(path, "missing bytes")


def test_metadata_with_non_string_value(tmp_path: Path) -> None:
    header = {"__metadata__": {"epochs": 3}, "a": entry("U8", [1], 0, 1)}
    path = write_raw(tmp_path / "m.safetensors", header, 1)
    error = refused(path, "__metadata__: value of 'epochs' must be a string, not a JSON number")
    assert [p.field for p in error.problems] == ["__metadata__"]


@pytest.mark.parametrize("metadata", [None, ["a"], "a"], ids=str)
def test_metadata_not_an_object(tmp_path: Path, metadata: Any) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"__metadata__": metadata}, 0)
    refused(path, "__metadata__: must be an object of string to string")


def test_extra_key_in_tensor_entry(tmp_path: Path) -> None:
    header = {"a": {**entry("U8", [1], 0, 1), "offset": 0}}
    path = write_raw(tmp_path / "m.safetensors", header, 1)
    refused(path, "a: unexpected key(s) 'offset'; an entry has exactly dtype, shape, data_offsets")


def test_missing_key_in_tensor_entry(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": {"dtype": "U8", "shape": [1]}}, 1)
    refused(path, "a: missing key(s) data_offsets")


def test_entry_not_an_object(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": [0, 1]}, 0)
    refused(path, "a: entry is a JSON array")


def test_lone_surrogate_tensor_name(tmp_path: Path) -> None:
    body = b'{"\\ud800": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = write_raw(tmp_path / "m.safetensors", body, 1)
    refused(path, "not valid UTF-8")


def test_every_broken_tensor_is_reported(tmp_path: Path) -> None:
    header = {"a": entry("X", [1], 0, 1), "b": entry("U8", [-1], 1, 2), "c": entry("U8", [1], 2, 3)}
    path = write_raw(tmp_path / "m.safetensors", header, 3)
    error = refused(path, "a: unknown dtype", "b: shape [-1]")
    assert [p.field for p in error.problems] == ["a", "b"]


def test_problem_list_is_capped(tmp_path: Path) -> None:
    header = {f"t{i}": entry("X", [1], i, i + 1) for i in range(50)}
    path = write_raw(tmp_path / "m.safetensors", header, 50)
    error = refused(path, "and 30 more problems")
    assert len(error.problems) == 21


def test_pickle_named_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    refused(path, "exceeds the")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    refused(path, "cannot read")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a regular file"):
        validate_safetensors(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "m.safetensors"
    os.mkfifo(pipe)
    for check in (validate_safetensors, sniff, check_onnx):
        with pytest.raises(ValidationError, match="not a regular file"):
            check(pipe)


# -- ONNX ------------------------------------------------------------------------------


def onnx_model(path: Path, second_input: list[int] | None = None, wire: str = "X") -> Path:
    """Relu(X) -> Y, or Add(X, B) when `second_input` gives B's shape."""
    onnx = pytest.importorskip("onnx", reason=ONNX_REASON)
    helper, proto = onnx.helper, onnx.TensorProto
    x = helper.make_tensor_value_info("X", proto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("Y", proto.FLOAT, [2, 3])
    inputs, node = [x], helper.make_node("Relu", [wire], ["Y"])
    if second_input is not None:
        inputs.append(helper.make_tensor_value_info("B", proto.FLOAT, second_input))
        node = helper.make_node("Add", ["X", "B"], ["Y"])
    graph = helper.make_graph([node], "g", inputs, [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_valid_model_passes(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "m.onnx")
    result = check_onnx(path)
    assert (result.status, result.format, result.path) == ("pass", "onnx", str(path))
    assert "full check" in result.message


def test_onnx_broken_graph_is_refused(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "m.onnx", wire="Z")
    with pytest.raises(ValidationError) as caught:
        check_onnx(path)
    assert str(caught.value).startswith(f"{path}: ONNX checker: ")
    assert "topologically sorted" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_onnx_shape_error_needs_the_full_check(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "m.onnx", second_input=[4, 5])
    assert check_onnx(path, full_check=False).status == "pass"
    with pytest.raises(ValidationError, match=r"ONNX checker: .*Incompatible dimensions") as caught:
        check_onnx(path)
    assert str(path) in str(caught.value)


def test_onnx_garbage_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason=ONNX_REASON)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ValidationError, match="ir_version") as caught:
        check_onnx(path)
    assert str(path) in str(caught.value)


def test_onnx_missing_file_is_refused_even_without_onnx(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read"):
        check_onnx(tmp_path / "absent.onnx")


def test_onnx_skips_with_a_reason_when_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07")
    for name in ("onnx", "onnx.checker", "onnx.shape_inference"):
        monkeypatch.setitem(sys.modules, name, None)
    result = check_onnx(path)
    assert (result.status, result.message) == ("skip", ONNX_REASON)
    assert ONNX_MISSING == ONNX_REASON


# -- sniff -------------------------------------------------------------------------------


def _write(data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def _safetensors(path: Path) -> None:
    save_file({"w": np.ones(3, np.float32)}, str(path))


def _npy(path: Path) -> None:
    with path.open("wb") as handle:
        np.save(handle, np.arange(3))


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}))


def _empty_zip(path: Path) -> None:
    zipfile.ZipFile(path, "w").close()


def _tar(fmt: int, *, magic: bool = True) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        member = path.parent / "member.txt"
        member.write_text("hello")
        with tarfile.open(path, "w", format=fmt) as archive:
            archive.add(member, arcname="member.txt")
        if not magic:  # a v7 header: no "ustar", checksum redone (tarfile reads it)
            block = bytearray(path.read_bytes())
            block[257:265] = bytes(8)
            block[148:156] = b" " * 8
            block[148:155] = f"{sum(block[:512]):06o}\0".encode()
            path.write_bytes(bytes(block))

    return write


def _safetensors_header(size: int) -> bytes:
    """A valid safetensors file whose header is ``size`` bytes (640 starts 80 02)."""
    body = json.dumps({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}).encode()
    return struct.pack("<Q", size) + body.ljust(size) + b"\x00"


# Smallest ModelProto the walk accepts: ir_version 8 and an empty graph.
MINIMAL_ONNX = b"\x08\x08" + b"\x3a\x00"

SNIFF_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("safetensors", _safetensors, "safetensors"),
    ("npy", _npy, "npy"),
    ("zip", _zip, "zip"),
    ("empty-zip", _empty_zip, "zip"),
    ("gzip", _write(gzip.compress(b"x" * 100)), "gzip"),
    ("bz2", _write(bz2.compress(b"x" * 100)), "bz2"),
    ("bz2-empty", _write(bz2.compress(b"")), "bz2"),
    ("xz", _write(lzma.compress(b"x" * 100)), "xz"),
    ("tar-ustar", _tar(tarfile.USTAR_FORMAT), "tar"),
    ("tar-gnu", _tar(tarfile.GNU_FORMAT), "tar"),
    ("tar-pax", _tar(tarfile.PAX_FORMAT), "tar"),
    *[
        (f"pickle-{p}", _write(pickle.dumps({"w": [1.5, "x"], "n": None}, protocol=p)), "pickle")
        for p in range(6)
    ],
    ("pickle-list-0", _write(pickle.dumps([1, 2], protocol=0)), "pickle"),
    ("pickle-int-0", _write(pickle.dumps(42, protocol=0)), "pickle"),
    ("pickle-global-0", _write(b"cos\nsystem\n(S'echo pwned'\ntR."), "pickle"),
    ("pickle-big-0", _write(pickle.dumps(list(range(50_000)), protocol=0)), "pickle"),
    ("pickle-trailing-junk", _write(pickle.dumps([1], protocol=0) + b"\x00junk"), "pickle"),
    ("onnx-minimal", _write(MINIMAL_ONNX), "onnx"),
    ("text", _write("name: résumé\nversion: 1.0\n\ttabs ok\n".encode()), "text"),
    ("text-json", _write(b'{"a": [1, 2]}\n'), "text"),
    ("text-cut-multibyte", _write(("é" * 40_000).encode()), "text"),
    ("empty", _write(b""), "empty"),
    ("binary", _write(bytes(range(256)) * 4), "unknown"),
    ("nul-text", _write(b"hello\x00world"), "unknown"),
    ("not-onnx-no-graph", _write(b"\x08\x08"), "protobuf"),
    ("not-onnx-trailing", _write(MINIMAL_ONNX + b"\x3a\x05ab"), "unknown"),
    ("safetensors-lookalike-too-long", _write(struct.pack("<Q", 99) + b"{}"), "unknown"),
    # The scan's sniffer is the only one: what used to differ between the two.
    ("zlib", _write(zlib.compress(b"x" * 100)), "zlib"),
    ("lzma-alone", _write(lzma.compress(b"x" * 100, format=lzma.FORMAT_ALONE)), "lzma"),
    ("joblib-zfile", _write(b"ZF" + b"0x64".ljust(19) + zlib.compress(b"x" * 100)), "joblib-zfile"),
    ("tar-v7", _tar(tarfile.USTAR_FORMAT, magic=False), "tar"),
    ("pickle-behind-no-op-build", _write(b"]Nb0cos\nsystem\n(S'echo pwned'\ntR."), "pickle"),
    ("safetensors-header-640", _write(_safetensors_header(640)), "safetensors"),
]


@pytest.mark.parametrize(
    ("make", "expected"), [c[1:] for c in SNIFF_CASES], ids=[c[0] for c in SNIFF_CASES]
)
def test_sniff_by_bytes(tmp_path: Path, make: Callable[[Path], None], expected: str) -> None:
    path = tmp_path / "artifact.bin"
    make(path)
    assert sniff(path) == expected


def test_sniff_ignores_extension(tmp_path: Path) -> None:
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    plain = tmp_path / "weights.onnx"
    _safetensors(plain)
    assert (sniff(disguised), sniff(plain)) == ("pickle", "safetensors")


def test_sniff_real_onnx_model(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "model.bin")
    assert sniff(path) == "onnx"


def test_sniff_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read"):
        sniff(tmp_path / "absent")
