"""Files for the scanner tests, built in memory: malicious ones that must be flagged
and benign ones that must pass.

Building them never runs a payload: ``pickle.dumps`` only calls ``__reduce__``,
which returns the callable without calling it, and the rest is assembled opcode by
opcode. Every payload would create ``marker`` (a path in the test's tmp folder) if it
ever ran, so a test can assert that it never did.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import shlex
import struct
import subprocess
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


def command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


class Reduce:
    """Pickles as a call of ``func(*args)``: the shape of every ``__reduce__`` payload."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return self.func, self.args


def payload(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(Reduce(os.system, command(marker)), protocol=protocol)


# -- opcodes, by hand ---------------------------------------------------------------


def proto(version: int) -> bytes:
    return b"\x80" + bytes([version])


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def string0(value: str) -> bytes:
    return b"S" + repr(value).encode() + b"\n"


STOP = b"."
REDUCE = b"R"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"


def call(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` where each argument is already an opcode sequence."""
    return func + b"(" + b"".join(args) + b"t" + REDUCE


def frame(body: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(body)) + body


# -- joblib-like streams, without joblib ---------------------------------------------


def joblib_wrapper(shape: tuple[int, ...], descr: str, *, aligned: bool) -> bytes:
    """A NumpyArrayWrapper as joblib pickles it (NEWOBJ, then BUILD of its dict),
    for a plain dtype; the raw array bytes must follow."""
    flags = 63 if descr.startswith("O") else 0
    dtype = (
        glob("numpy", "dtype")
        + text(descr)
        + b"\x89\x88\x87"  # False, True, TUPLE3
        + REDUCE
        + b"(K\x03"
        + text("<")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
        + b"K"
        + bytes([flags])
        + b"tb"  # TUPLE, BUILD
    )
    shape_ops = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in shape) + b"t"
    state = (
        b"}("
        + text("subclass")
        + glob("numpy", "ndarray")
        + text("shape")
        + shape_ops
        + text("order")
        + text("C")
        + text("dtype")
        + dtype
        + text("allow_mmap")
        + b"\x88"
    )
    if aligned:
        state += text("numpy_array_alignment_bytes") + b"K\x10"
    return glob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"ub"


def joblib_stream(raw_array: bytes, *, aligned: bool, after: bytes = b"") -> bytes:
    """``[array]`` pickled the joblib way: wrapper, raw bytes, then ``after`` opcodes
    (which run once the list is built) and STOP."""
    head = proto(4) + b"](" + joblib_wrapper((len(raw_array),), "u1", aligned=aligned)
    padding = b""
    if aligned:
        pad = 16 - (len(head) + 1) % 16
        padding = bytes([pad]) + b"\xff" * pad
    return head + padding + raw_array + b"e" + after + STOP


# -- archives -------------------------------------------------------------------------


def zip_bytes(
    members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED, *, prefix: str = ""
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(prefix + name, data)
    return buffer.getvalue()


def zip_with_duplicate(name: str, first: bytes, second: bytes) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate, on purpose
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(name, first)
            archive.writestr(name, second)
    return buffer.getvalue()


def patch_central_sizes(data: bytes, uncompressed: int) -> bytes:
    """Make every central directory entry claim ``uncompressed`` bytes."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        struct.pack_into("<I", out, pos + 24, uncompressed)
        pos = out.find(b"PK\x01\x02", pos + 4)
    return bytes(out)


def set_flag_bits(data: bytes, bits: int) -> bytes:
    """OR ``bits`` into every local and central header's general purpose flags."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(signature)
        while pos >= 0:
            (flags,) = struct.unpack_from("<H", out, pos + offset)
            struct.pack_into("<H", out, pos + offset, flags | bits)
            pos = out.find(signature, pos + 4)
    return bytes(out)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == "zlib":
        return zlib.compress(data)
    raise ValueError(kind)


def deflate_zeros(mebibytes: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``mebibytes`` MiB of zeros, built in milliseconds: one
    block compressed once, with the history reset after it, repeated. And its CRC."""
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert again == block
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    return block * mebibytes + compressor.flush(), crc


def zip_bomb(mebibytes: int) -> bytes:
    """One deflated member of ``mebibytes`` MiB of zeros (about 1000:1)."""
    stream, crc = deflate_zeros(mebibytes)
    name = b"zeros.bin"
    size = mebibytes << 20
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        20,
        20,
        0,
        8,
        0,
        0,
        crc,
        len(stream),
        size,
        len(name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + name + stream
    directory = central + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


def gzip_bomb(mebibytes: int) -> bytes:
    stream, crc = deflate_zeros(mebibytes)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + stream + struct.pack("<LL", crc, (mebibytes << 20) & 0xFFFFFFFF)


def bz2_bomb(streams: int) -> bytes:
    """``streams`` bz2 streams of 16 MiB of zeros each, back to back (~100 bytes each)."""
    return bz2.compress(bytes(16 << 20)) * streams


def nested_zips(depth: int, inner: bytes, name: str = "payload.pkl") -> bytes:
    data = zip_bytes({name: inner})
    for level in range(depth - 1):
        data = zip_bytes({f"level{level}.zip": data})
    return data


# -- a canary module: importing it would leave a marker ------------------------------


def write_canary_module(folder: Path, module: str, marker: Path) -> None:
    (folder / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef boom(*args):\n    return None\n"
    )


def run_in_subprocess(data: bytes, folder: Path) -> subprocess.CompletedProcess[str]:
    """Unpickle ``data`` in a child process (to prove a payload is live)."""
    path = folder / "live.pkl"
    path.write_bytes(data)
    code = "import pickle,sys; pickle.load(open(sys.argv[1], 'rb'))"
    return subprocess.run(
        ["python3", "-c", code, str(path)], capture_output=True, text=True, check=False
    )


# -- differential ground truth: what the real loaders do with a file ---------------------

# Run in a child process: for each file given, each available loader loads it once; a
# loader "executes" the file when the payload's marker file appears. Prints JSON
# {file: [loaders that executed it]}. Exceptions are expected (most files are broken
# pickles): only the marker counts.
_LOADERS_SCRIPT = r"""
import contextlib, io, json, os, pickle, sys, warnings
warnings.simplefilter("ignore")
marker = sys.argv[1]
loaders = {}
loaders["pickle"] = lambda p: pickle.load(open(p, "rb"))
try:
    import numpy as np
except ImportError:
    np = None
if np is not None:
    def numpy_load(p):
        value = np.load(p, allow_pickle=True)
        if hasattr(value, "files"):
            for key in value.files:
                value[key]
    loaders["numpy"] = numpy_load
try:
    import joblib
except ImportError:
    joblib = None
if joblib is not None:
    loaders["joblib"] = lambda p: joblib.load(p)
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    loaders["torch"] = lambda p: torch.load(p, weights_only=False)
result = {}
for path in sys.argv[2:]:
    ran = []
    for name, load in loaders.items():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                load(path)
        except BaseException:
            pass
        if os.path.exists(marker):
            ran.append(name)
    result[path] = ran
with contextlib.suppress(FileNotFoundError):
    os.unlink(marker)
print(json.dumps({"loaders": sorted(loaders), "ran": result}))
"""


def loaders_that_execute(paths: list[Path], marker: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Which real loaders (pickle, numpy, joblib, torch when installed) run the payload
    of each file: ground truth for the scanner, found by loading in a child process."""
    import json
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _LOADERS_SCRIPT, str(marker), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed["loaders"], parsed["ran"]


def open_call(marker: Path) -> bytes:
    """Protocol 0 ``builtins.open(marker, "w")``: creates ``marker`` if it runs. ASCII."""
    return glob("builtins", "open") + b"(" + string0(str(marker)) + string0("w") + b"tR"


# Prefixes that leave the unpicklers with nothing to complain about, each followed by
# POP (``0``) of what they left. Found by reading _pickle.c and pickle.py, confirmed by
# the ground truth.
NO_OP_PREFIXES: dict[str, bytes] = {
    "list-build-none": b"]Nb0",
    "tuple-build-none": b")Nb0",
    "dict-build-none": b"}Nb0",
    "int-build-none": b"I7\nNb0",
    "str-build-none": b"S'x'\nNb0",
    "list-build-none-empty-dict": b"]N}\x86b0",
    "list-build-empty-dict": b"]}b0",  # pickle.py only (joblib)
    "list-build-none-zero": b"]NI0\n\x86b0",  # pickle.py only (joblib)
    "list-build-empty-tuple": b"])b0",  # pickle.py only (joblib)
    "none-pop": b"N0",
    "mark-pop": b"(0",
    "marks-pop": b"((00",
    "mark-pop-mark": b"(1",
    "proto-0": b"\x80\x00",
    "proto-1": b"\x80\x01N0",
    "put-get": b"Np0\n0g0\n0",
    "dup": b"N20",
    "float-text": b"F1.5\n0",
    "long-text": b"L12L\n0",
    "unicode-text": b"Vabc\n0",
    "empty-append": b"](e0",
    "empty-setitems": b"}(u0",
    "empty-frame": b"\x95\x00\x00\x00\x00\x00\x00\x00\x00N0",
}


def torch_legacy_tar(pickle_member: bytes) -> bytes:
    """A tar laid out like a torch < 0.4 checkpoint: no storages, no tensors, and
    ``pickle_member`` as the object (read by torch.load's unpickler with its
    persistent_load)."""
    return tar_bytes(
        {
            "storages": b"I0\n.].",  # 0 storages, then no storage views
            "tensors": b"I0\n.",  # 0 tensors
            "pickle": pickle_member,
        }
    )


def npy_object_header() -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - len(header) - 10 % 64) + "\n"
    raw = header.encode()
    pad = (64 - (10 + len(raw)) % 64) % 64
    raw = raw[:-1] + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw


def joblib_zfile(data: bytes) -> bytes:
    """joblib <= 0.9.3's format, which joblib.load still reads: "ZF", hex length, zlib."""
    return b"ZF" + f"{len(data):#x}".ljust(len(f"{2**64:#x}")).encode() + zlib.compress(data)


def differential_samples(marker: Path) -> dict[str, bytes]:
    """Files that hide ``open_call(marker)`` behind prefixes and layers."""
    body = open_call(marker) + STOP
    samples: dict[str, bytes] = {}
    for name, prefix in NO_OP_PREFIXES.items():
        samples[name] = prefix + body
    samples["then-text"] = b"]Nb0" + body + b"\nSome notes about this model.\n"
    samples["tokenizer-lookalike"] = b"(0" + body + b"\n[PAD]\n[UNK]\nthe\nof\n"
    for kind in ("gzip", "zlib", "bz2", "xz", "lzma"):
        samples[f"{kind}-list-build-none"] = compress(kind, b"]Nb0" + body)
        samples[f"{kind}-build-empty-dict"] = compress(kind, b"]}b0" + body)
    samples["joblib-zfile"] = joblib_zfile(b"]Nb0" + body)
    samples["joblib-zfile-all-text"] = text_joblib_zfile(body)
    samples["zlib-all-text"] = text_zlib(body)
    samples["npy-object"] = npy_object_header() + b"]Nb0" + body
    # torch.load's persistent_load returns pid[0] for a tuple pid in a legacy tar.
    samples["torch-tar-persistent"] = torch_legacy_tar(b"(NNNtQ0" + body)
    samples["torch-tar-plain"] = torch_legacy_tar(b"]Nb0" + body)
    samples["torch-zip-stray-root"] = zip_bytes(
        {
            "archive/data.pkl": b"]Nb0" + body,
            "archive/version": b"3\n",
            "other/readme.txt": b"hello\n",
        },
        zipfile.ZIP_STORED,
    )
    return samples


def text_zlib(pickle_body: bytes) -> bytes:
    """A zlib stream that is also valid UTF-8 text without control characters: the
    header ``x^``, one stored deflate block whose length bytes read as text, and an
    Adler-32 that does too. ``pickle_body`` is padded (a string pushed and popped in
    front of it) to the one length that works, 0xC241."""
    length = 0xC241  # bytes 41 C2, then NLEN BE 3D: "A", "¾" (C2 BE), "="
    fixed = len(b"]Nb0S''\n0") + len(pickle_body)
    for attempt in range(10_000):
        salt = "A" * (attempt // 10) + "bcdefghijk"[attempt % 10]
        filler = salt + "a" * (length - fixed - len(salt))
        data = b"]Nb0S'" + filler.encode() + b"'\n0" + pickle_body
        assert len(data) == length
        checksum = struct.pack(">I", zlib.adler32(data))
        if all(0x20 <= byte < 0x7F for byte in checksum):
            block = b"!" + struct.pack("<HH", length, length ^ 0xFFFF)
            stream = b"x^" + block + data + checksum
            assert zlib.decompress(stream) == data
            stream.decode("utf-8")
            return stream
    raise AssertionError("no text-safe checksum found")


def text_joblib_zfile(pickle_body: bytes) -> bytes:
    """``joblib_zfile`` whose bytes are all text (see `text_zlib`)."""
    stream = text_zlib(pickle_body)
    data = zlib.decompress(stream)
    return b"ZF" + f"{len(data):#x}".ljust(len(f"{2**64:#x}")).encode() + stream
