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

Whether content is a pickle is decided by `registry.scan`, which walks it as the
unpicklers would; `registry.scan.identify_file` puts the two together and is what
the format gate and ``registry scan`` both use.
"""

from __future__ import annotations

import codecs
import re
import tarfile
from collections.abc import Callable
from typing import Final

__all__ = [
    "MAX_SAFETENSORS_HEADER",
    "compressed_kind",
    "container_kind",
    "is_gguf",
    "is_protobuf",
    "is_tar",
    "is_text",
    "joblib_zfile_start",
    "looks_like_safetensors",
    "pt2_root",
    "weak_compressed_kind",
    "zip_layout",
]

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
    layout, to be validated (`registry.formats.validate_safetensors_bytes`)."""
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
