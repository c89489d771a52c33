"""`registry convert`: pickled checkpoints become safetensors equal to what torch loads,
and nothing in the input ever runs; every refusal writes nothing."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry.artifacts.convert.entries import _Entry
from registry.artifacts.convert.results import TensorInfo
from registry.artifacts.convert.storages import _Storages
from registry.artifacts.convert.tensors import _DTYPES
from registry.artifacts.convert.unpickler import _unpickle
from registry.artifacts.convert.writer import _header, _write
from registry.errors import ValidationError
from tests.conftest import Result, snapshot

CLI = Callable[..., Result]
TORCH_REASON = "torch is needed to write real checkpoints"


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch", reason=TORCH_REASON)


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """Where the payload leaves a file if it ever runs."""
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"


class Payload:
    """Unpickling this runs a shell command (os.system)."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {marker}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def refused(cli: CLI, root: Path, *args: str, code: int = 1) -> str:
    """Run convert expecting a refusal; nothing under root may change. Returns stderr."""
    before = snapshot(root)
    result = cli("convert", *args)
    assert result.code == code, (result.out, result.err)
    assert result.out == ""
    assert "Traceback" not in result.err
    assert snapshot(root) == before, "a refused conversion changed files"
    return result.err


def model_state(torch: Any) -> Any:
    """A real state_dict plus tensors of every kind the converter must handle."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 3),
        torch.nn.Conv2d(2, 3, 3),
        torch.nn.LayerNorm(5),
        torch.nn.Embedding(10, 4),
    )
    state = model.state_dict()  # an OrderedDict carrying _metadata (set by BUILD)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state.update(
        {
            "half": torch.randn(3, 4).half(),
            "bf16": torch.randn(5, 2).bfloat16(),
            "int8": torch.randint(-128, 128, (7,), dtype=torch.int8),
            "mask": torch.rand(6) > 0.5,
            "view": base.t()[1:, ::2],  # non-contiguous, at an offset into base's storage
            "shared_a": base[0],  # two more tensors on the same storage
            "shared_b": base[1:3],
            "param": torch.nn.Parameter(torch.randn(2, 2)),
            "uint16": torch.tensor([1, 65535], dtype=torch.uint16),  # _rebuild_tensor_v3
            "fp8": torch.tensor([0.5, -2.0], dtype=torch.float8_e4m3fn),
            "scalar": torch.tensor(3.5),
            "empty": torch.zeros(0, 3),
        }
    )
    return state


def assert_same_tensors(torch: Any, path: Path, expected: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    loaded = load_file(str(path))
    assert sorted(loaded) == sorted(expected)
    for name, tensor in expected.items():
        tensor = tensor.detach()
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        if tensor.dtype.is_floating_point and tensor.element_size() == 1:  # no eq for float8
            assert torch.equal(loaded[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(loaded[name], tensor), name


# -- PyTorch checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_checkpoint_converts_to_equal_tensors(
    torch: Any, tmp_path: Path, cli: CLI, fmt: str
) -> None:
    state = model_state(torch)
    source = tmp_path / "model.pt"
    torch.save(state, source, _use_new_zipfile_serialization=fmt == "zip")

    result = cli("convert", str(source), "--to", "safetensors")

    assert result.code == 0, result.err
    output = tmp_path / "model.safetensors"
    assert f"Converted {source} (torch-{fmt}) to {output}: {len(state)} tensors" in result.out
    assert "shared storage, written as separate copies: shared_a, shared_b, view" in result.out
    assert_same_tensors(torch, output, dict(state))
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "model.safetensors"]  # no temp left


def test_json_output_describes_the_file(torch: Any, tmp_path: Path, cli: CLI) -> None:
    source = tmp_path / "ckpt.bin"
    torch.save({"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.bfloat16)}, source)
    out = tmp_path / "out" / "weights.safetensors"
    out.parent.mkdir()

    result = cli("convert", str(source), "--to", "safetensors", "--out", str(out), "--json")

    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["source"] == str(source) and data["output"] == str(out)
    assert data["format"] == "torch-zip"
    assert data["tensors"] == [
        {"name": "w", "dtype": "F32", "shape": [2, 3], "bytes": 24},
        {"name": "b", "dtype": "BF16", "shape": [3], "bytes": 6},
    ]
    assert data["size"] == out.stat().st_size
    assert data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert data["metadata"] == {} and data["shared_storage"] == []


def test_nested_checkpoint_is_flattened_and_scalars_become_metadata(
    torch: Any, tmp_path: Path, cli: CLI
) -> None:
    from safetensors import safe_open

    model = torch.nn.Linear(3, 2)
    source = tmp_path / "checkpoint.pt"
    torch.save(
        {"model": model.state_dict(), "epoch": 7, "lr": 0.001, "arch": "linear", "best": True},
        source,
    )

    result = cli("convert", str(source), "--to", "safetensors")

    assert result.code == 0, result.err
    output = tmp_path / "checkpoint.safetensors"
    assert_same_tensors(torch, output, {f"model.{k}": v for k, v in model.state_dict().items()})
    with safe_open(str(output), framework="pt") as handle:
        assert handle.metadata() == {"epoch": "7", "lr": "0.001", "arch": "linear", "best": "true"}
    assert "metadata epoch = 7" in result.out


# -- pickled dicts of NumPy arrays ---------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_dict_pickle_converts(tmp_path: Path, cli: CLI, protocol: int) -> None:
    from safetensors.numpy import load_file

    rng = np.random.default_rng(0)
    arrays = {
        "weight": rng.random((3, 4), dtype=np.float32),
        "fortran": np.asfortranarray(rng.random((2, 3))),
        "big_endian": np.arange(5, dtype=">i4"),
        "mask": np.array([True, False, True]),
        "scalar": np.array(42, dtype=np.int64),
        "half": rng.random(4).astype(np.float16),
        "bytes": np.arange(256, dtype=np.uint8),
        "complex": (rng.random(3) + 1j).astype(np.complex64),
    }
    source = tmp_path / "arrays.pkl"
    source.write_bytes(pickle.dumps(arrays, protocol=protocol))

    result = cli("convert", str(source), "--to", "safetensors")

    assert result.code == 0, result.err
    loaded = load_file(str(tmp_path / "arrays.safetensors"))
    assert sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype.newbyteorder("<"), name
        assert loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array)


def test_the_reference_reader_reads_every_dtype_the_writer_writes(tmp_path: Path) -> None:
    """The writer is ours (see registry.artifacts.convert); the safetensors package is
    the reader that has to agree with it, torch or not, for every dtype it can write."""
    from safetensors import safe_open

    entries = []
    for dtype in _DTYPES.values():
        if dtype.safetensors is None or dtype.carrier is None:
            continue
        array = np.arange(6).reshape(2, 3).astype(dtype.carrier)
        info = TensorInfo(dtype.torch_name, dtype.safetensors, (2, 3), array.nbytes)
        entries.append((_Entry(info, lambda array=array: array), array))
    path = tmp_path / "all.safetensors"
    metadata = {"epoch": "7"}
    with open(path, "wb") as handle:
        _write(handle, _header([e for e, _ in entries], metadata), [e for e, _ in entries])

    with safe_open(str(path), framework="numpy") as reader:
        assert reader.metadata() == metadata
        assert sorted(reader.keys()) == sorted(e.info.name for e, _ in entries)
        for entry, array in entries:
            written = reader.get_slice(entry.info.name)
            assert (written.get_dtype(), written.get_shape()) == (entry.info.dtype, [2, 3])
            if entry.info.dtype != "BF16" and not entry.info.dtype.startswith("F8"):  # NumPy has neither
                np.testing.assert_array_equal(reader.get_tensor(entry.info.name), array)


# -- malicious input: refused, never run -------------------------------------------------


def test_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """Guards the tests below: the payload is a working exploit for pickle.load."""
    live = tmp_path / "LIVE"
    data = pickle.dumps({"x": Payload(live)})
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=data, check=True)
    assert live.exists()


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path, cli: CLI, marker: Path) -> None:
    source = tmp_path / "evil.pkl"
    source.write_bytes(pickle.dumps({"w": np.zeros(2), "x": Payload(marker)}))

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert "refused: the security scan could not show that unpickling this file runs no code" in err
    assert "system" in err  # the offending global, named (posix.system on Linux)
    assert not (tmp_path / "evil.safetensors").exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_malicious_checkpoint_is_refused_and_never_run(
    torch: Any, tmp_path: Path, cli: CLI, marker: Path, fmt: str
) -> None:
    source = tmp_path / "evil.pt"
    torch.save(
        {"w": torch.zeros(2), "x": Payload(marker)},
        source,
        _use_new_zipfile_serialization=fmt == "zip",
    )

    err = refused(cli, tmp_path, str(source), "--to", "safetensors", "--force")

    assert "system" in err and "refused" in err


def test_refusal_with_json_is_an_error_object(tmp_path: Path, cli: CLI, marker: Path) -> None:
    source = tmp_path / "evil.pkl"
    source.write_bytes(pickle.dumps({"x": Payload(marker)}))
    before = snapshot(tmp_path)

    result = cli("convert", str(source), "--to", "safetensors", "--json")

    assert result.code == 1
    assert "refused" in json.loads(result.out)["error"]
    assert snapshot(tmp_path) == before


def test_restricted_unpickler_refuses_code_even_without_the_scan(marker: Path) -> None:
    """Defence in depth: the unpickler alone never imports what is not allowed."""
    data = pickle.dumps({"x": Payload(marker)})

    with pytest.raises(ValidationError, match=r"(posix|os)\.system: not allowed"):
        _unpickle(io.BytesIO(data), _Storages(), "evil.pkl")


# -- content the scan lets through but safetensors cannot hold -----------------------------


class Pickled:
    """Pickles as a call to an arbitrary (safe) global, as some libraries write."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


@pytest.mark.parametrize(
    ("content", "protocol", "message"),
    [
        ({"w": np.zeros(2), "s": {1, 2}}, 2, "__builtin__.set: not allowed"),
        ({"w": np.zeros(2), "n": np.float32(1.5)}, 4, "NumPy scalars are not arrays"),
        (
            {"w": np.zeros(2), "opt": {"param_groups": [{"lr": 0.1}]}},
            4,
            "opt.param_groups: a list is not a tensor",
        ),
        ({"w": np.zeros(2), "none": None}, 4, "none: None is not a tensor"),
        ({"w": np.zeros(2), 3: np.ones(1)}, 4, "3: keys must be non-empty strings"),
        ({"a.b": np.zeros(1), "a": {"b": np.ones(1)}}, 4, "a.b: two entries flatten"),
        ({"__metadata__": np.zeros(1)}, 4, "__metadata__ is reserved"),
        ({"epoch": 3}, 4, "no tensors to convert"),
        ([np.zeros(2)], 4, "holds a list, not a dict of tensors"),
        ({"t": np.array(["a", "b"])}, 4, "NumPy dtype <U1 has no safetensors equivalent"),
        ({"t": np.zeros(2, dtype=np.complex128)}, 4, "complex128 has no safetensors"),
        ({"t": np.array([1, None], dtype=object)}, 2, "object arrays are refused"),
    ],
    ids=[
        "set",
        "numpy-scalar",
        "list",
        "none",
        "int-key",
        "flatten-clash",
        "reserved",
        "no-tensors",
        "not-a-dict",
        "strings",
        "complex128",
        "object-array",
    ],
)
def test_unconvertible_pickles_are_refused(
    tmp_path: Path, cli: CLI, content: object, protocol: int, message: str
) -> None:
    source = tmp_path / "state.pkl"
    source.write_bytes(pickle.dumps(content, protocol=protocol))

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert message in err


def test_joblib_dump_is_refused(tmp_path: Path, cli: CLI) -> None:
    joblib = pytest.importorskip("joblib", reason="joblib writes the dump")
    source = tmp_path / "arrays.joblib"
    joblib.dump({"w": np.zeros(3)}, source)

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert "joblib dumps are not supported" in err


def test_safetensors_input_is_refused(tmp_path: Path, cli: CLI) -> None:
    from safetensors.numpy import save_file

    source = tmp_path / "already.st"
    save_file({"w": np.zeros(2, np.float32)}, str(source))

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert "already a safetensors file" in err


def _quantized(torch: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized creation is deprecated
        return torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t.zeros(3), "holds a single tensor, not a dict"),
        (lambda t: {"q": _quantized(t)}, "quantized tensors are not supported"),
        (lambda t: {"s": t.eye(3).to_sparse()}, "sparse tensors are not supported"),
        (lambda t: {"c": t.zeros(2, dtype=t.complex128)}, "torch.complex128 has no safetensors"),
        (lambda t: {"c": t.ones(2, dtype=t.complex64).conj()}, "lazy conj bit"),
        (lambda t: {"w": t.zeros(2), "step": t.tensor(1).item(), "o": [1]}, "o: a list"),
    ],
    ids=["bare-tensor", "quantized", "sparse", "complex128", "conj", "list"],
)
def test_unconvertible_checkpoints_are_refused(
    torch: Any, tmp_path: Path, cli: CLI, make: Callable[[Any], Any], message: str
) -> None:
    source = tmp_path / "model.pt"
    torch.save(make(torch), source)

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert message in err


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
def test_truncated_file_is_refused(torch: Any, tmp_path: Path, cli: CLI, fmt: str) -> None:
    source = tmp_path / "model.pt"
    if fmt == "pickle":
        source.write_bytes(pickle.dumps({"w": np.arange(100.0)}))
    else:
        torch.save(model_state(torch), source, _use_new_zipfile_serialization=fmt == "zip")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) * 2 // 3])

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert err.startswith("error: ")


def crafted_checkpoint(
    torch: Any,
    path: Path,
    *,
    size: tuple[int, ...] = (4,),
    stride: tuple[int, ...] = (1,),
    offset: int = 0,
    numel: int = 4,
    data: bytes | None = None,
    key: str = "0",
    byteorder: bytes = b"little",
) -> None:
    """A zip checkpoint whose tensor has exactly the layout given (torch.save would not)."""

    class Storage:
        pass

    storage = Storage()

    class Tensor:
        def __reduce__(self) -> tuple[Any, ...]:
            args = (storage, offset, size, stride, False, collections.OrderedDict())
            return (torch._utils._rebuild_tensor_v2, args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", torch.FloatStorage, key, "cpu", numel) if obj is storage else None

    pickled = io.BytesIO()
    Pickler(pickled, protocol=2).dump({"w": Tensor()})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled.getvalue())
        archive.writestr("archive/byteorder", byteorder)
        archive.writestr(
            "archive/data/0", np.arange(numel, dtype="<f4").tobytes() if data is None else data
        )
        archive.writestr("archive/version", "3\n")


def test_crafted_checkpoint_helper_makes_loadable_files(
    torch: Any, tmp_path: Path, cli: CLI
) -> None:
    """Guards the layout tests below: with a valid layout, torch and convert agree."""
    source = tmp_path / "ok.pt"
    crafted_checkpoint(torch, source, size=(2, 2), stride=(1, 2), offset=0)

    assert cli("convert", str(source), "--to", "safetensors").code == 0
    assert_same_tensors(torch, tmp_path / "ok.safetensors", torch.load(source))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"size": (3,), "stride": (2,)}, "reaches element 4 of a storage of 4"),
        ({"size": (2,), "offset": 3}, "reaches element 4 of a storage of 4"),
        ({"size": (2, 2), "stride": (1,)}, "differ in length"),
        ({"stride": (-1,)}, "must be a non-negative integer"),
        ({"data": bytes(8)}, "holds 8 bytes, the checkpoint declares 16"),
        ({"key": "7"}, "no member archive/data/7"),
        ({"byteorder": b"big"}, "only little-endian is supported"),
        ({"size": (10**9,), "stride": (0,), "numel": 1}, "over the limit"),
    ],
    ids=[
        "past-end",
        "offset-past-end",
        "rank",
        "negative-stride",
        "short-storage",
        "missing-storage",
        "big-endian",
        "expansion-bomb",
    ],
)
def test_bad_tensor_layouts_are_refused(
    torch: Any, tmp_path: Path, cli: CLI, layout: dict[str, Any], message: str
) -> None:
    source = tmp_path / "model.pt"
    crafted_checkpoint(torch, source, **layout)

    err = refused(cli, tmp_path, str(source), "--to", "safetensors")

    assert message in err


# -- the output file -----------------------------------------------------------------------


def test_existing_output_needs_force(tmp_path: Path, cli: CLI) -> None:
    from safetensors.numpy import load_file

    source = tmp_path / "arrays.pkl"
    source.write_bytes(pickle.dumps({"w": np.arange(3.0)}))
    output = tmp_path / "arrays.safetensors"
    output.write_text("keep me")

    err = refused(cli, tmp_path, str(source), "--to", "safetensors", code=2)

    assert f"{output}: already exists; pass --force" in err
    result = cli("convert", str(source), "--to", "safetensors", "--force")
    assert result.code == 0, result.err
    np.testing.assert_array_equal(load_file(str(output))["w"], np.arange(3.0))
    assert sorted(os.listdir(tmp_path)) == ["arrays.pkl", "arrays.safetensors"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing option '--to'"),
        (("--to", "onnx"), "Invalid value for '--to'"),
        (("--to", "safetensors", "--out", "missing/out.safetensors"), "does not exist"),
        (("--to", "safetensors", "--out", "."), "is a folder"),
        (("--to", "safetensors", "--out", "arrays.pkl", "--force"), "is the input file"),
    ],
    ids=["no-to", "bad-to", "missing-folder", "folder", "input"],
)
def test_usage_errors(
    tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "arrays.pkl").write_bytes(pickle.dumps({"w": np.arange(3.0)}))
    monkeypatch.chdir(tmp_path)

    err = refused(cli, tmp_path, "arrays.pkl", *args, code=2)

    assert message in err


@pytest.mark.parametrize("name", ["missing.pt", "."], ids=["missing", "folder"])
def test_input_must_be_a_file(
    tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)

    err = refused(cli, tmp_path, name, "--to", "safetensors", "--out", "x.safetensors", code=2)

    assert "no such file" in err or "not a regular file" in err


def test_help(cli: CLI) -> None:
    result = cli("convert", "--help")
    assert result.code == 0
    assert "--to" in result.out and "--force" in result.out
