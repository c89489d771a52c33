"""The unpickler state a symbolic pickle walk keeps, and how it reads opcode arguments.

Stack, marks, memo and frame, read the way the unpicklers read them.
"""

from __future__ import annotations

import codecs
import sys
import warnings
from typing import Protocol

from registry.artifacts.scan.results import ScanLimits
from registry.artifacts.scan.values import (
    _MAX_KEPT_STRING,
    _OPAQUE,
    _UNKNOWN_INT,
    _Call,
    _Dict,
    _Global,
    _Malformed,
    _size,
)


class _Walker(Protocol):
    """The scan of one file, as a machine sees it: where findings go, and the reader
    of the array data joblib writes after a pickled NumpyArrayWrapper."""

    allowed: frozenset[str]
    limits: ScanLimits

    def flag(
        self, member: str | None, offset: int | None, message: str, global_name: str | None = None
    ) -> None: ...

    def joblib_array(
        self, machine: _MachineBase, wrapper: _Call, state: object, offset: int, pos: int
    ) -> int: ...



class _MachineBase:
    """Walks one pickle stream, keeping the unpickler's stack, marks and memo.

    ``strict``: the data is known to be a pickle; anything malformed is a finding.
    Otherwise (a probe of content that may not be a pickle at all) the walk just ends
    at the first point where the real unpickler would certainly raise; values it
    cannot parse are taken as unknown and the walk goes on (so it may report more,
    never less). ``mutate``: apply APPEND/SETITEM/BUILD to tracked containers (off in
    probes that share containers with another walk). ``end``: where the walk stops.
    """

    def __init__(
        self,
        scan: _Walker,
        buf: memoryview,
        member: str | None,
        *,
        strict: bool,
        nesting: int = 0,
        end: int | None = None,
        note: str = "",
    ) -> None:
        self.scan = scan
        self.buf = buf
        self.member = member
        self.strict = strict
        self.nesting = nesting
        self.end = len(buf) if end is None else end
        self.note = note
        self.mutate = True
        # joblib.load reads raw array data after a NumpyArrayWrapper's BUILD; probes
        # model plain pickle.load, which does not.
        self.joblib = strict
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.frame_end = -1
        self.value: object = None
        self.ops = 0
        self.soft_problem: tuple[str, int] | None = None
        self.storages: dict[str, str] = {}  # legacy torch: storage key -> storage type
        self.storage_sizes: dict[str, float | None] = {}  # ... -> numel in its id
        self.saw_joblib_array = False
        self.ops_before_persid: int | None = None
        self.max_ops = sys.maxsize  # probes of joblib array data have a budget

    # -- small helpers --

    def _flag(self, offset: int, message: str, global_name: str | None = None) -> None:
        self.scan.flag(self.member, offset, self.note + message, global_name)

    def _soft(self, message: str, offset: int) -> None:
        """A value the real unpickler would reject: malformed in strict mode."""
        if self.strict:
            raise _Malformed(message, offset)
        if self.soft_problem is None:
            self.soft_problem = (message, offset)

    def _take(self, pos: int, size: int) -> memoryview:
        stop = pos + size
        if size < 0 or stop > self.end:
            raise _Malformed(f"truncated: {size} bytes needed at offset {pos}", pos, eof=True)
        if pos < self.frame_end < stop:
            self._soft("an opcode's argument runs past the end of its frame", pos)
        return self.buf[pos:stop]

    def _uint(self, pos: int, size: int) -> int:
        return int.from_bytes(self._take(pos, size), "little")

    def _line(self, pos: int) -> tuple[bytes, int]:
        """The line at ``pos`` without its newline, and the position after it."""
        look = pos
        step = 256
        while True:
            stop = min(self.end, look + step)
            found = bytes(self.buf[look:stop]).find(b"\n")
            if found >= 0:
                line_end = look + found
                self._take(pos, line_end + 1 - pos)  # frame check
                return bytes(self.buf[pos:line_end]), line_end + 1
            if stop >= self.end:
                raise _Malformed("truncated: a line without its newline", pos, eof=True)
            look = stop
            step = min(step * 2, 1 << 20)

    def _pop(self, offset: int) -> object:
        if not self.stack:
            raise _Malformed("stack underflow", offset)
        return self.stack.pop()

    def _top(self, offset: int) -> object:
        if not self.stack:
            raise _Malformed("stack underflow", offset)
        return self.stack[-1]

    def _pop_mark(self, offset: int) -> list[object]:
        if not self.metastack:
            raise _Malformed("no MARK to pop", offset)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _text(self, raw: bytes | memoryview, offset: int) -> object:
        try:
            text = str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise _Malformed("a string that is not valid UTF-8", offset) from None
        return text if len(text) <= _MAX_KEPT_STRING else _OPAQUE

    def _memo_get(self, key: int, offset: int) -> None:
        try:
            self.stack.append(self.memo[key])
        except KeyError:
            raise _Malformed(f"memo key {key} was never stored", offset) from None

    def _memo_put(self, key: int, offset: int) -> None:
        if key < 0:
            raise _Malformed("negative memo key", offset)
        value = self._top(offset)
        if key > len(self.buf):
            # _pickle keeps the memo in an array of 2 * key slots, zeroed: a memory bomb.
            # Picklers number memo entries from 0, one per object, so never this high.
            # (In a probe, only once the content proves to be a pickle: text such as
            # "Copyright (c)" reads as BINBYTES then a LONG_BINPUT of "f Te".)
            message = f"memo key {key} is larger than the pickle (a memory bomb)"
            if self.strict:
                self._flag(offset, message)
            elif self.soft_problem is None:
                self.soft_problem = (message, offset)
        self.memo[key] = value

    def _setitems(
        self, target: object, items: list[object], offset: int, *, force: bool = False
    ) -> None:
        if len(items) % 2:
            raise _Malformed("odd number of items for SETITEMS", offset)
        if isinstance(target, _Dict) and (self.mutate or force):
            for index in range(0, len(items), 2):
                key = items[index]
                # Only flat keys: the scan needs no others, and hashing a tuple nested a
                # million deep would overflow the C stack.
                if type(key) in (str, int):
                    target[key] = items[index + 1]
                elif not isinstance(key, type(None) | bool | tuple):
                    # A computed key (a numpy str_ scalar, say) may equal, and
                    # replace, a literal one: the dict is no longer known.
                    target.exact = False

    def _note_storage(self, pid: object) -> None:
        if (
            isinstance(pid, tuple)
            and len(pid) >= 3
            and pid[0] == "storage"
            and isinstance(pid[1], _Global)
            and isinstance(pid[2], str)
        ):
            self.storages.setdefault(pid[2], pid[1].dotted)
            # A legacy checkpoint's unpickler allocates numel elements right here.
            numel = pid[4] if len(pid) >= 5 else None
            self.storage_sizes.setdefault(pid[2], _size(numel) if numel is not None else None)

    def _legacy_string(self, raw: bytes) -> object:
        # Decoded with the loader's encoding (ASCII for pickle, UTF-8 for torch): only
        # pure ASCII reads the same under all of them.
        if raw.isascii() and len(raw) <= _MAX_KEPT_STRING:
            return raw.decode("ascii")
        return _OPAQUE

    def _quoted_string(self, raw: bytes, offset: int) -> object:
        if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
            raise _Malformed("STRING argument is not quoted", offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes only warn
            try:
                value, _ = codecs.escape_decode(raw[1:-1])
            except ValueError:
                raise _Malformed("STRING argument with a bad escape", offset) from None
        return self._legacy_string(bytes(value))

    def _parse_int(self, raw: bytes, is_long: bool, offset: int) -> object:
        if not is_long and raw in (b"00", b"01"):
            return raw == b"01"
        text = raw[:-1] if is_long and raw.endswith(b"L") else raw
        for base in (0, 10):
            try:
                return int(text, base)
            except ValueError:
                continue
        self._soft("INT/LONG argument that is not a number", offset)
        return _UNKNOWN_INT

