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
