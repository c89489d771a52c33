"""What a file's bytes say it is: the one content sniffer of the scan and the format gate.

Each test here is the test a natural loader applies, so that the scan reads the
bytes the way the loaders do: numpy.load and torch.load take a zip by its first
four bytes, torch.load takes a tar when `tarfile` accepts its first header,
joblib.load takes a compressed stream by the prefixes it registers (zlib ``x``,
gzip, bz2, xz, lzma ``]\\x00``, and ``ZF`` for its old zlib format), numpy.load
takes ``\\x93NUMPY``. Inside a zip, `zip_layout` names the loaders that read it by its
members: torch.export.load takes a ``.pt2`` archive by its ``archive_format`` member
(``pt2``) in the folder of the first member, skops.io.load takes any zip by its
top-level ``schema.json``. Where a loader is looser than the format (joblib's one-byte
zlib prefix), the sniffer is too, and the scan refuses what does not decode.

Whether content is a pickle is decided by `registry.artifacts.scan`, which walks it
as the unpicklers would; `scan.identify_file` puts the two together and is what the
format gate (through `registry.artifacts.identify.sniff`, which also tells ONNX models
from other protobuf with `is_onnx_model`) and ``registry scan`` both use. Files are
opened for sniffing one way, `open_regular`.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final

from registry.errors import ValidationError

__all__ = [
    "MAX_SAFETENSORS_HEADER",
    "compressed_kind",
    "container_kind",
    "is_gguf",
    "is_onnx_model",
    "is_protobuf",
    "is_tar",
    "is_text",
    "joblib_zfile_start",
    "looks_like_safetensors",
    "open_regular",
    "pt2_root",
    "weak_compressed_kind",
    "zip_layout",
]

StrPath = str | Path

# The safetensors crate's own limit (MAX_HEADER_SIZE in tensor.rs).
MAX_SAFETENSORS_HEADER: Final = 100_000_000
_CHUNK: Final = 1 << 20
# C0 controls and DEL other than \t \n \v \f \r and ESC: text never holds them.
_TEXT_CONTROL: Final = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
# joblib's old format: "ZF", the length in hex padded to len(hex(2**64)), zlib data.
_ZFILE_LENGTH: Final = len(f"{2**64:#x}")


def container_kind(head: bytes) -> str | None:
    """Archives and containers that a loader recognises from the first bytes."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if is_tar(head):
        return "tar"
    return None


SKOPS_SCHEMA: Final = "schema.json"
PT2_FORMAT_MEMBER: Final = "archive_format"


def pt2_root(names: list[str], read_small: Callable[[str], bytes | None]) -> str | None:
    """The archive folder of a torch.export ``.pt2`` archive, as
    ``torch.export.pt2_archive.is_pt2_package`` finds it: the folder of the first
    member holds ``archive_format`` reading ``pt2``."""
    if not names:
        return None
    root = names[0].split("/", 1)[0]
    marker = f"{root}/{PT2_FORMAT_MEMBER}"
    return root if marker in names and read_small(marker) == b"pt2" else None


def zip_layout(names: list[str], read_small: Callable[[str], bytes | None]) -> str | None:
    """What loads this zip by its members: ``pt2`` (torch.export.load), ``skops``
    (skops.io.load reads ``schema.json``, whatever else is there), or None.
    ``read_small`` gives a member's bytes when it is a few bytes long."""
    if pt2_root(names, read_small) is not None:
        return "pt2"
    if SKOPS_SCHEMA in names:
        return "skops"
    return None


def compressed_kind(head: bytes) -> str | None:
    """Compressed streams with an unambiguous magic number (joblib reads them all).
    zlib and lzma "alone" have weak magic: see `weak_compressed_kind`."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if (
        head[:3] == b"BZh"
        and head[3:4] in b"123456789"
        and head[4:10]
        in (
            b"1AY&SY",
            b"\x17rE8P\x90",
        )
    ):
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return None


def weak_compressed_kind(head: bytes) -> str | None:
    """joblib's one- and two-byte prefixes: ``x`` is zlib, ``]\\x00`` lzma "alone".
    Text can start with ``x``: the caller checks that the data really decodes."""
    if head[:1] == b"x":
        return "zlib"
    if head[:2] == b"]\x00":
        return "lzma"
    return None


def joblib_zfile_start(head: bytes) -> int | None:
    """Where the zlib data of a joblib <= 0.9.3 "ZF" file starts, if ``head`` has
    the header joblib.load parses (a hex length, then an optional space)."""
    if head[:2] != b"ZF" or len(head) < 2 + _ZFILE_LENGTH:
        return None
    try:
        int(head[2 : 2 + _ZFILE_LENGTH], 16)
    except ValueError:
        return None
    start = 2 + _ZFILE_LENGTH
    return start + 1 if head[start : start + 1] == b" " else start


def is_tar(head: bytes) -> bool:
    """`tarfile` (which torch.load's legacy reader uses) accepts the first header:
    checksum signed or unsigned, with or without the ustar magic."""
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except Exception:  # any refusal: tarfile.open refuses the archive
        return False
    return True


def looks_like_safetensors(view: memoryview) -> bool:
    """An 8-byte header length that fits the file, then ``{``: the safetensors
    layout, to be validated (`safetensors.validate_safetensors_bytes`)."""
    if len(view) < 10 or view[8] != ord("{"):
        return False
    length = int.from_bytes(view[:8], "little")
    return 2 <= length <= MAX_SAFETENSORS_HEADER and 8 + length <= len(view)


def is_gguf(head: bytes) -> bool:
    return head[:4] == b"GGUF"


def is_text(view: memoryview) -> bool:
    """UTF-8 throughout, without control characters other than whitespace and ESC."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for pos in range(0, len(view), _CHUNK):
            chunk = view[pos : pos + _CHUNK]
            text = decoder.decode(bytes(chunk), final=pos + _CHUNK >= len(view))
            if _TEXT_CONTROL.search(text):
                return False
    except UnicodeDecodeError:
        return False
    return True


def _varint(view: memoryview, pos: int) -> tuple[int, int] | None:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(view):
            return None
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    return None


def is_protobuf(view: memoryview) -> bool:
    """Top-level protobuf fields walk cleanly to the last byte (ONNX, sentencepiece)."""
    pos = 0
    fields = 0
    while pos < len(view):
        tag = _varint(view, pos)
        if tag is None or tag[0] >> 3 == 0:
            return False
        wire, pos = tag[0] & 7, tag[1]
        if wire == 0:
            value = _varint(view, pos)
            if value is None:
                return False
            pos = value[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length = _varint(view, pos)
            if length is None:
                return False
            pos = length[1] + length[0]
        else:
            return False
        fields += 1
        if fields > 1_000_000:
            return False
    return pos == len(view) and fields > 0


@contextmanager
def open_regular(path: StrPath) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file for reading; unreadable paths are the user's problem (the
    format gate's checks and the scan's `identify_file` open files this one way).

    Checked before opening too: opening a FIFO for reading would block forever.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValidationError.one(path, "not a regular file")
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the yield
    except OSError as exc:
        raise ValidationError.one(path, f"cannot read: {exc.strerror or exc}") from None
    with handle:
        yield handle, os.fstat(handle.fileno()).st_size


# ModelProto's top-level fields and their protobuf wire types (0 varint, 2 bytes),
# from onnx.proto. Unknown field numbers are allowed for newer ONNX versions.
_MODEL_PROTO_WIRE_TYPES = {
    1: 0,  # ir_version
    2: 2,  # producer_name
    3: 2,  # producer_version
    4: 2,  # domain
    5: 0,  # model_version
    6: 2,  # doc_string
    7: 2,  # graph
    8: 2,  # opset_import
    14: 2,  # metadata_props
    20: 2,  # training_info
    25: 2,  # functions
    26: 2,  # configuration
}
_MAX_TOP_LEVEL_FIELDS = 100_000


def _read_varint(handle: BinaryIO) -> int | None:
    value = 0
    for shift in range(0, 70, 7):
        byte = handle.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None


def is_onnx_model(handle: BinaryIO, size: int) -> bool:
    """Walk the top-level protobuf fields (seeking past their bodies, so only a few
    bytes are read): well-formed to the last byte, with an ir_version and a graph."""
    handle.seek(0)
    seen: set[int] = set()
    ir_version = 0
    for _ in range(_MAX_TOP_LEVEL_FIELDS):
        if handle.tell() == size:
            return {1, 7} <= seen and 0 < ir_version < 1000
        tag = _read_varint(handle)
        if tag is None:
            return False
        field, wire = tag >> 3, tag & 7
        if field == 0 or _MODEL_PROTO_WIRE_TYPES.get(field, wire) != wire:
            return False
        if wire == 0:
            value = _read_varint(handle)
            if value is None:
                return False
            if field == 1:
                ir_version = value
        elif wire in (1, 2, 5):
            length = {1: 8, 5: 4}.get(wire) or _read_varint(handle)
            if length is None or handle.tell() + length > size:
                return False
            handle.seek(length, io.SEEK_CUR)
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            return False
        seen.add(field)
    return False
