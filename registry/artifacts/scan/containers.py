"""Layers that hold other content: zip and tar archives, compressed streams.

Zip layouts include PyTorch checkpoints, torch.export ``.pt2`` and skops files. Each
layer is opened within the scan's limits and each member handed back to the scan.
"""

from __future__ import annotations

import bz2
import io
import itertools
import json
import lzma
import re
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from typing import Final

from registry.artifacts import sniff
from registry.artifacts.scan.allowlist import SAFE_GLOBALS
from registry.artifacts.scan.base import _join, _Refused, _ScanBase

_ZIP_LOCAL_HEADER: Final = struct.Struct("<4s5H3L2H")
_TORCH_DATA_MEMBER: Final = re.compile(r"data/[0-9]+")
# torch.export.pt2_archive's payload configs (data/weights/<model>_weights_config.json,
# data/constants/<model>_constants_config.json in torch 2.13; the names have changed
# between releases): every JSON member there is read as one, so that a member any of
# them says torch.load reads is scanned as content.
_PT2_CONFIG: Final = re.compile(r"data/(weights|constants)/[^/]+\.json")
_CHUNK: Final = 1 << 20
# Compressed input is fed in small pieces so that a bomb shows its ratio early.
_INPUT_CHUNK: Final = 64 * 1024


class _ViewFile(io.RawIOBase):
    """A seekable read-only file over a memoryview, so zipfile and tarfile read
    members in place instead of copying the archive."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the data")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        stop = len(self._view) if size is None or size < 0 else self._pos + size
        data = bytes(self._view[self._pos : stop])
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)



class _Containers(_ScanBase):
    def zip_archive(self, view: memoryview, member: str | None, depth: int) -> str:
        if not self.enter(member, depth, "zip archive"):
            return "zip"
        try:
            archive = zipfile.ZipFile(_ViewFile(view))
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            self.flag(member, None, f"malformed zip archive: {exc}")
            return "zip"
        if not self.count_members(member, len(infos)):
            return "zip"
        problems = _zip_layout_problems(view, archive, infos)
        for problem in problems:
            self.flag(member, None, f"zip archive: {problem}")
        if problems:
            return "zip"
        names = [info.filename for info in infos]
        root = _torch_root(names)
        # torch.load reads <folder of the first member>/data.pkl, whatever else is there.
        torch_pickle = f"{names[0].split('/', 1)[0]}/data.pkl" if names else None
        kind = "torch-zip" if root is not None else "zip"
        if root is not None and (
            f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names)
        ):
            kind = "torchscript"
            self.flag(
                member,
                None,
                "TorchScript archive: its code/ runs when loaded (torch.load hands it to "
                "torch.jit.load); not supported",
            )
        for info in infos:
            if info.is_dir() and info.file_size:
                self.flag(_join(member, info.filename), None, "directory entry with data")
        layout = sniff.zip_layout(names, _small_member(archive))
        raw: set[str] = set()  # pt2 weights read as raw bytes, never unpickled
        unpickled: set[str] = set()  # pt2 members that pickle.loads reads
        if layout == "pt2":
            kind = "pt2"
            pt2_root = sniff.pt2_root(names, _small_member(archive))
            assert pt2_root is not None
            raw, unpickled = self.pt2_payloads(view, archive, infos, member, pt2_root)
        elif layout == "skops" and kind == "zip":
            kind = "skops"
        # skops.io.load reads a top-level schema.json from any zip, whatever else it is.
        skops_schema = sniff.SKOPS_SCHEMA in names
        storages = [
            info
            for info in infos
            if root is not None and _TORCH_DATA_MEMBER.fullmatch(info.filename[len(root) + 1 :])
        ]
        for info in storages:
            if info.compress_type != zipfile.ZIP_STORED:
                # torch writes storages stored; a compressed one would be inflated to
                # its declared size by torch.load, unchecked: read it like any member.
                self.flag(
                    _join(member, info.filename),
                    None,
                    "tensor storage member is compressed (torch.save stores them as is)",
                )
        to_read = [
            info
            for info in infos
            if not info.is_dir()
            and not (info in storages and info.compress_type == 0)
            and info.filename not in raw
        ]
        declared = sum(i.file_size for i in to_read if i.compress_type != zipfile.ZIP_STORED)
        if self.inflated + declared > self.limits.max_total_bytes:
            self.flag(
                member,
                None,
                f"zip archive declares {declared} decompressed bytes, over the limit of "
                f"{self.limits.max_total_bytes} (zip bomb?)",
            )
            return kind
        if to_read and all(i.filename.endswith(".npy") for i in to_read) and kind == "zip":
            kind = "npz"
        for info in to_read:
            child = _join(member, info.filename)
            data = self.zip_member(view, archive, info, child)
            if data is None:
                continue
            if info.filename == torch_pickle or info.filename in unpickled:
                self.pickle_file(data, child, 0)  # read by an unpickler, whatever it holds
            else:
                self.content(data, child, depth + 1)
        if skops_schema:
            self.skops_types(view, member)
        return kind

    def pt2_payloads(
        self,
        view: memoryview,
        archive: zipfile.ZipFile,
        infos: list[zipfile.ZipInfo],
        member: str | None,
        root: str,
    ) -> tuple[set[str], set[str]]:
        """A torch.export archive (torch.export.save, MLflow 3's default PyTorch
        format): which members torch.export.load reads as raw tensor bytes (listed
        with ``use_pickle: false`` in every payload config that names them) and which
        it hands to pickle.loads (``opaque_obj_*``). Everything else is scanned by its
        content; compiled code (AOTInductor) and TorchBind objects are refused."""
        raw: set[str] = set()
        loaded: set[str] = set()
        unpickled: set[str] = set()
        refused: set[str] = set()  # flagged here: not read again
        for info in infos:
            rel = info.filename[len(root) + 1 :]
            child = _join(member, info.filename)
            if rel.startswith("data/aotinductor/") and not info.is_dir():
                self.flag(
                    child,
                    None,
                    "pt2 archive: AOTInductor compiled code (torch loads and runs it as a "
                    "shared library); not supported",
                )
                refused.add(info.filename)
            elif rel.startswith("data/constants/custom_obj_"):
                self.flag(
                    child,
                    None,
                    "pt2 archive: TorchBind object (loaded by TorchScript's unpickler, which "
                    "runs registered C++ classes); not supported",
                )
                refused.add(info.filename)
            elif rel.startswith("data/constants/opaque_obj_"):
                unpickled.add(info.filename)
            found = _PT2_CONFIG.fullmatch(rel)
            if found is None:
                continue
            data = self.zip_member(view, archive, info, child)
            if data is None:
                continue
            try:
                parsed = json.loads(bytes(data))
            except (ValueError, RecursionError):
                parsed = None
            entries = parsed.get("config") if isinstance(parsed, dict) else None
            if not isinstance(entries, dict):
                continue  # not a payload config: it marks nothing raw
            for meta in entries.values():
                path = meta.get("path_name") if isinstance(meta, dict) else None
                if not isinstance(path, str):
                    self.flag(child, None, "pt2 archive: payload entry without a path_name")
                    continue
                name = f"{root}/data/{found.group(1)}/{path}"
                assert isinstance(meta, dict)
                if meta.get("use_pickle") is False and isinstance(meta.get("tensor_meta"), dict):
                    raw.add(name)
                else:
                    loaded.add(name)  # torch.load reads it: scanned as content
        return (raw - loaded) | refused, unpickled - refused

    def skops_types(self, view: memoryview, member: str | None) -> None:
        """A skops file: every type its schema declares must be trusted without being
        loaded (skops' own ``get_untrusted_types`` reads only the schema): skops'
        defaults, the scan profiles and ``scan.allow_globals``. Its arrays were
        scanned as members."""
        child = _join(member, sniff.SKOPS_SCHEMA)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from skops.io import get_untrusted_types
        except ImportError:
            self.flag(
                child,
                None,
                "skops file: its declared types cannot be checked without the skops "
                "package (pip install 'gitops-registry[sklearn]')",
            )
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                untrusted = get_untrusted_types(data=bytes(view))
        except Exception as exc:  # skops cannot read it: neither can skops.io.load
            self.flag(child, None, f"malformed skops file: {type(exc).__name__}: {exc}")
            return
        trusted = self.allowed - SAFE_GLOBALS
        for name in untrusted:
            if name not in trusted:
                self.flag(
                    child,
                    None,
                    "skops file declares a type that is not trusted (not in skops' defaults, "
                    "the scan profiles or scan.allow_globals)",
                    name,
                )

    def zip_member(
        self, view: memoryview, archive: zipfile.ZipFile, info: zipfile.ZipInfo, child: str
    ) -> memoryview | None:
        if info.flag_bits & 0x1:
            self.flag(child, None, "encrypted zip member cannot be scanned")
            return None
        if info.compress_type == zipfile.ZIP_STORED:
            start = _zip_data_start(view, info)
            return view[start : start + info.compress_size]
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > self.limits.ratio_floor and ratio > self.limits.max_ratio:
            self.flag(
                child,
                None,
                f"compression ratio {ratio:.0f}:1 is over {self.limits.max_ratio}:1 (zip bomb?)",
            )
            return None
        out = bytearray()
        try:
            with archive.open(info) as handle:
                while chunk := handle.read(_CHUNK):
                    out += chunk
                    self.charge(len(chunk))
        except _Refused as exc:
            self.flag(child, None, str(exc))
            return None
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as exc:
            self.flag(child, None, f"zip member cannot be decompressed: {exc}")
            return None
        except (zlib.error, lzma.LZMAError) as exc:
            self.flag(child, None, f"zip member cannot be decompressed: {exc}")
            return None
        return memoryview(out)

    def tar_archive(self, view: memoryview, member: str | None, depth: int) -> str:
        if not self.enter(member, depth, "tar archive"):
            return "tar"
        entries: list[tuple[str, memoryview]] = []
        try:
            with tarfile.open(fileobj=_ViewFile(view), mode="r:") as archive:
                for info in archive:
                    if not self.count_members(member, 1):
                        return "tar"
                    if not info.isreg():
                        continue  # directories, links, devices hold no bytes to load
                    child = _join(member, info.name)
                    if info.sparse is not None:
                        self.flag(child, None, "sparse tar member cannot be scanned")
                        continue
                    if info.offset_data + info.size > len(view):
                        self.flag(child, None, "tar member is truncated")
                        continue
                    entries.append((child, view[info.offset_data : info.offset_data + info.size]))
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            self.flag(member, None, f"malformed tar archive: {exc}")
            return "tar"
        for child, data in entries:
            if child.rpartition("!")[2] == "pickle":
                # torch.load's legacy tar reader unpickles this member, whatever it holds.
                self.pickle_file(data, child, 0)
            else:
                self.content(data, child, depth + 1)
        return "tar"

    def decompressed(self, kind: str, view: memoryview, member: str | None, depth: int) -> str:
        if not self.enter(member, depth, f"{kind} stream"):
            return kind
        child = _join(member, f"[{kind}]")
        try:
            data = self.inflate(kind, view)
        except _Refused as exc:
            self.flag(child, None, str(exc))
            return kind
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            self.flag(child, None, f"malformed {kind} stream: {exc}")
            return kind
        return f"{kind}/{self.content(memoryview(data), child, depth + 1)}"

    def inflate(self, kind: str, view: memoryview, *, trailing_ok: bool = False) -> bytearray:
        """Decompress every stream in ``view`` (gzip, bz2 and xz allow several back to
        back), within the size and ratio limits; trailing garbage is refused."""
        out = bytearray()
        pos = 0
        while True:
            decompressor = _Decompressor(kind)
            idle = 0
            while not decompressor.eof:
                chunk = b""
                if decompressor.needs_input and pos < len(view):
                    chunk = bytes(view[pos : pos + _INPUT_CHUNK])
                    pos += len(chunk)
                piece = decompressor.decompress(chunk, _CHUNK)
                idle = 0 if piece or chunk else idle + 1
                if idle > 2:
                    raise _Refused(f"truncated {kind} stream")
                out += piece
                self.charge(len(piece))
                if len(out) > self.limits.ratio_floor and len(out) > self.limits.max_ratio * pos:
                    raise _Refused(
                        f"{kind} stream expands more than {self.limits.max_ratio}:1 "
                        "(decompression bomb?)"
                    )
            pos -= len(decompressor.unused_data)
            rest = view[pos:]
            if not rest or trailing_ok:
                return out
            if kind in ("gzip", "bz2", "xz") and sniff.compressed_kind(bytes(rest[:16])) == kind:
                continue
            if kind == "gzip" and not bytes(rest).strip(b"\x00"):  # gzip skips zero padding
                return out
            raise _Refused(f"unrecognised data after the end of the {kind} stream")


class _Decompressor:
    """One interface over zlib, bz2 and lzma decompressors (as bz2/lzma have it)."""

    def __init__(self, kind: str) -> None:
        self._zlib: zlib._Decompress | None = None
        self._other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = None
        if kind in ("gzip", "zlib"):
            self._zlib = zlib.decompressobj(31 if kind == "gzip" else 15)
        elif kind == "bz2":
            self._other = bz2.BZ2Decompressor()
        else:
            fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
            self._other = lzma.LZMADecompressor(fmt)

    @property
    def eof(self) -> bool:
        return self._zlib.eof if self._zlib is not None else bool(self._other and self._other.eof)

    @property
    def needs_input(self) -> bool:
        if self._zlib is not None:
            return not self._zlib.unconsumed_tail
        assert self._other is not None
        return self._other.needs_input

    @property
    def unused_data(self) -> bytes:
        if self._zlib is not None:
            return self._zlib.unused_data
        assert self._other is not None
        return self._other.unused_data

    def decompress(self, data: bytes, limit: int) -> bytes:
        if self._zlib is not None:
            return self._zlib.decompress(data or self._zlib.unconsumed_tail, limit)
        assert self._other is not None
        return self._other.decompress(data, limit)


def _starts_decompressing(kind: str, view: memoryview) -> bool:
    """The first 4 KiB decompress cleanly: text that happens to start like a zlib
    header does not get this far."""
    try:
        _Decompressor(kind).decompress(bytes(view[:4096]), 64 * 1024)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
        return False
    return True



def _zip_data_start(view: memoryview, info: zipfile.ZipInfo) -> int:
    header = _ZIP_LOCAL_HEADER.unpack_from(view, info.header_offset)
    name_size, extra_size = int(header[9]), int(header[10])
    return info.header_offset + _ZIP_LOCAL_HEADER.size + name_size + extra_size


def _zip_layout_problems(
    view: memoryview, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]
) -> list[str]:
    """What makes different zip readers see different members: duplicate names,
    local headers that disagree with the directory, overlapping or prefixed data."""
    problems: list[str] = []
    seen: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    directory_start = getattr(archive, "start_dir", len(view))
    for info in infos:
        name = info.filename
        if name in seen:
            problems.append(f"member {name!r} appears twice (readers disagree on which counts)")
        seen.add(name)
        offset = info.header_offset
        if offset < 0 or offset + _ZIP_LOCAL_HEADER.size > len(view):
            problems.append(f"member {name!r} has no local header")
            continue
        header = _ZIP_LOCAL_HEADER.unpack_from(view, offset)
        if header[0] != b"PK\x03\x04":
            problems.append(f"member {name!r} has no local header")
            continue
        name_start = offset + _ZIP_LOCAL_HEADER.size
        raw_name = bytes(view[name_start : name_start + header[9]])
        encoding = "utf-8" if header[1] & 0x800 else "cp437"
        if raw_name.decode(encoding, "replace") != info.orig_filename:
            problems.append(f"member {name!r} has a different name in its local header")
        data_end = name_start + header[9] + header[10] + info.compress_size
        if data_end > directory_start:
            problems.append(f"member {name!r} runs into the central directory")
        spans.append((offset, data_end, name))
    spans.sort()
    if spans and spans[0][0] != 0:
        problems.append("data before the first member (a different file may hide there)")
    for (_, previous_end, previous), (start, _, name) in itertools.pairwise(spans):
        if start < previous_end:
            problems.append(f"members {previous!r} and {name!r} overlap (zip bomb?)")
    return problems


def _small_member(archive: zipfile.ZipFile) -> Callable[[str], bytes | None]:
    """Reads a member of at most 64 bytes (a marker such as pt2's archive_format)."""

    def read(name: str) -> bytes | None:
        try:
            info = archive.getinfo(name)
            if info.file_size > 64 or info.compress_size > 1024 or info.flag_bits & 0x1:
                return None
            return archive.read(info)
        except (KeyError, zipfile.BadZipFile, NotImplementedError, OSError, EOFError,
                ValueError, zlib.error, lzma.LZMAError):
            return None

    return read


def _zip_kind(view: memoryview) -> str:
    """``zip``, or the loader that reads it by its members (`sniff.zip_layout`)."""
    try:
        archive = zipfile.ZipFile(_ViewFile(view))
        names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return "zip"
    return sniff.zip_layout(names, _small_member(archive)) or "zip"


def _torch_root(names: list[str]) -> str | None:
    """The archive folder of a PyTorch zip checkpoint: every member under one folder
    that holds data.pkl. (torch reads the folder of the first member.)"""
    if not names:
        return None
    root = names[0].split("/", 1)[0]
    if not all(name.startswith(f"{root}/") for name in names):
        return None
    return root if f"{root}/data.pkl" in names else None

