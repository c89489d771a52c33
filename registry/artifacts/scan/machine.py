"""The symbolic pickle machine: walks a pickle as the unpicklers would, running nothing.

Every global the stream imports and every call it makes is checked against the
allow-list.
"""

from __future__ import annotations

import _compat_pickle
import math
from typing import Final

from registry.artifacts.scan.allowlist import _CODECS_ENCODE, _JOBLIB_WRAPPER
from registry.artifacts.scan.opcodes import (
    _HIGHEST_PROTOCOL,
    _OPCODE_NAMES,
    ADDITEMS,
    APPEND,
    APPENDS,
    BINBYTES,
    BINBYTES8,
    BINFLOAT,
    BINGET,
    BININT,
    BININT1,
    BININT2,
    BINPERSID,
    BINPUT,
    BINSTRING,
    BINUNICODE,
    BINUNICODE8,
    BUILD,
    BYTEARRAY8,
    DICT,
    DUP,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_SET,
    EMPTY_TUPLE,
    EXT1,
    EXT2,
    EXT4,
    FLOAT,
    FRAME,
    FROZENSET,
    GET,
    GLOBAL,
    INST,
    INT,
    LIST,
    LONG,
    LONG1,
    LONG4,
    LONG_BINGET,
    LONG_BINPUT,
    MARK,
    MEMOIZE,
    NEWFALSE,
    NEWOBJ,
    NEWOBJ_EX,
    NEWTRUE,
    NEXT_BUFFER,
    NONE,
    OBJ,
    PERSID,
    POP,
    POP_MARK,
    PROTO,
    PUT,
    READONLY_BUFFER,
    REDUCE,
    SETITEM,
    SETITEMS,
    SHORT_BINBYTES,
    SHORT_BINSTRING,
    SHORT_BINUNICODE,
    STACK_GLOBAL,
    STOP,
    STRING,
    TUPLE,
    TUPLE1,
    TUPLE2,
    TUPLE3,
    UNICODE,
)
from registry.artifacts.scan.stack import _MachineBase
from registry.artifacts.scan.values import (
    _LITERALS,
    _MAX_KEPT_STRING,
    _NUMPY_RECONSTRUCT,
    _OPAQUE,
    _PERSISTENT,
    _REBUILD_FROM_TYPE,
    _REBUILD_QTENSOR,
    _SIZED_BY_ARGS,
    _SIZED_BY_SHAPE,
    _UNKNOWN_INT,
    _Call,
    _certainly_true_state,
    _Dict,
    _Global,
    _is_dotted_identifier,
    _Malformed,
    _persistent_numel,
    _shape_count,
    _size,
    _sizes_product,
)

# How many opcodes past a joblib array its plain-pickle probe may walk: random array
# bytes end the walk within a few opcodes; a walk that goes on for this long is refused
# (not silently dropped) so that probes stay linear and fail closed.
_PROBE_OVERRUN: Final = 64 * 1024


class _Machine(_MachineBase):
    """The walk itself: `run` reads opcodes to STOP and checks every global the
    pickle imports and every call it makes against the allow-list."""

    # -- what matters: globals and calls --

    def _global(self, module: str, name: str, offset: int, opname: str) -> None:
        written = f"{module}.{name}"
        if self.proto < 3:  # what Unpickler(fix_imports=True) really imports
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        dotted = f"{module}.{name}"
        if dotted not in self.scan.allowed:
            also = "" if dotted == written else f" (written as {written})"
            self._flag(offset, f"{opname} imports a global that is not allowed{also}", dotted)
        self.stack.append(_Global(dotted))

    def _call(self, func: object, args: object, offset: int, opname: str) -> _Call:
        if not isinstance(func, _Global):
            if not self.strict and isinstance(func, _LITERALS):
                raise _Malformed(f"{opname} calls a literal", offset)  # a TypeError
            self._flag(offset, f"{opname} calls a value that is not an allowed global")
        elif func.dotted == _CODECS_ENCODE and not (
            isinstance(args, tuple | list) and len(args) == 2 and args[1] in ("latin1", "latin-1")
        ):
            self._flag(offset, f"{opname} calls _codecs.encode other than as (str, 'latin1')")
        else:
            self._check_sizes(func.dotted, args, offset, opname)
        return _Call(func, args)

    def _check_sizes(self, dotted: str, args: object, offset: int, opname: str) -> None:
        """Allowed constructors that allocate by a number: that number is bounded by the
        size of the pickle itself. A pickler only writes such a call for data that is
        in the pickle (``_reconstruct`` of shape (0,), a storage that follows it), so
        a real file never needs more, and a 35-byte ``bytearray(3_000_000_000)`` is
        refused instead of costing 3 GB."""
        args = args if isinstance(args, tuple | list) else (args,)
        bound = len(self.buf)
        if dotted == _REBUILD_FROM_TYPE and len(args) >= 3:
            # _rebuild_from_type_v2(func, type, args, state) calls func(*args).
            self._call(args[0], args[2], offset, f"{opname} (through _rebuild_from_type_v2)")
            return
        if dotted in _SIZED_BY_ARGS:  # bytearray(n), torch.Tensor(n, m): data otherwise
            sizes = [arg for arg in args if _size(arg) is not None]
            size = _sizes_product(sizes) if sizes else 0
        elif dotted in _SIZED_BY_SHAPE and len(args) > _SIZED_BY_SHAPE[dotted]:
            size = _shape_count(args[_SIZED_BY_SHAPE[dotted]])
        elif dotted == _REBUILD_QTENSOR and len(args) >= 3:
            # Allocates the tensor by its size before setting it to its storage.
            storage, size = args[0], _shape_count(args[2])
            numel = _persistent_numel(storage)
            if numel is None or size > numel:
                self._flag(
                    offset,
                    f"{opname} of {dotted} with a size that is not within its storage "
                    "(a memory bomb)",
                    dotted,
                )
            return
        else:
            return
        if size > bound:
            shown = "an unknown number of" if size == math.inf else f"{size:.0f}"
            self._flag(
                offset,
                f"{opname} asks {dotted} for {shown} elements, more than the {bound} "
                "bytes the pickle holds (a memory bomb)",
                dotted,
            )

    def _build(self, offset: int, pos: int) -> int:
        state = self._pop(offset)
        target = self._top(offset)
        if not isinstance(target, _Call) or target.func is _PERSISTENT:
            if not self.strict and isinstance(target, _LITERALS):
                # None, bool, int, str, tuple, list and dict have no __setstate__ and no
                # __dict__. pickle.py (joblib's unpickler) then ignores a false state
                # and slot state; _pickle ignores None. Only a state that is certainly
                # true fails in both; anything else may be a no-op: walk on.
                if _certainly_true_state(state):
                    raise _Malformed("BUILD on a literal with a state", offset)
                return pos
            self._flag(
                offset, "BUILD sets state on a value that is not an object made by an allowed call"
            )
            return pos
        if self.mutate:
            target.state = state
        if (
            isinstance(target.func, _Global)
            and target.func.dotted in _NUMPY_RECONSTRUCT
            and isinstance(state, tuple)
            and len(state) >= 2
            and _shape_count(state[1]) > len(self.buf)
        ):
            # ndarray.__setstate__((version, shape, dtype, fortran, data)) allocates
            # by the shape (object arrays before reading their list).
            self._flag(
                offset,
                "BUILD gives an array a shape larger than the pickle (a memory bomb)",
                target.func.dotted,
            )
        if (
            self.joblib
            and isinstance(target.func, _Global)
            and target.func.dotted == _JOBLIB_WRAPPER
        ):
            pos = self.scan.joblib_array(self, target, state, offset, pos)
            self.stack[-1] = _OPAQUE  # joblib replaces the wrapper with the array
        return pos

    # -- the walk --

    def run(self, pos: int) -> int:
        """Walk from ``pos`` to STOP; return the position after it."""
        buf = self.buf
        end = self.end
        while True:
            if pos >= end:
                raise _Malformed("truncated: no STOP opcode before the end", pos, eof=True)
            start = pos
            op = buf[pos]
            pos += 1
            self.ops += 1
            if self.ops > self.max_ops:
                self._flag(
                    start,
                    f"read as pickle.load would, the stream goes on for more than "
                    f"{_PROBE_OVERRUN} opcodes past the array: cannot be shown safe",
                )
                raise _Malformed("walk over its budget", start)
            stack = self.stack
            stack_push = stack.append
            if op == BINPUT:
                self._memo_put(self._uint(pos, 1), start)
                pos += 1
            elif op == BINGET:
                self._memo_get(self._uint(pos, 1), start)
                pos += 1
            elif op == MEMOIZE:
                self.memo[len(self.memo)] = self._top(start)
            elif op == SHORT_BINUNICODE:
                size = self._uint(pos, 1)
                stack_push(self._text(self._take(pos + 1, size), start))
                pos += 1 + size
            elif op in (BINUNICODE, BINUNICODE8):
                width = 4 if op == BINUNICODE else 8
                size = self._uint(pos, width)
                stack_push(self._text(self._take(pos + width, size), start))
                pos += width + size
            elif op == BININT1:
                stack_push(self._uint(pos, 1))
                pos += 1
            elif op == BININT2:
                stack_push(self._uint(pos, 2))
                pos += 2
            elif op == BININT:
                stack_push(int.from_bytes(self._take(pos, 4), "little", signed=True))
                pos += 4
            elif op == MARK:
                if len(self.metastack) >= self.scan.limits.max_marks:
                    # Not an error for the unpicklers: the scan cannot go on, so refuse.
                    self._flag(start, f"more than {self.scan.limits.max_marks} open MARKs")
                    raise _Malformed("too many open MARKs", start)
                self.metastack.append(stack)
                self.stack = []
            elif op in (TUPLE, LIST, FROZENSET):
                items = self._pop_mark(start)
                built: object = tuple(items) if op == TUPLE else items if op == LIST else _OPAQUE
                self.stack.append(built)
            elif op == TUPLE1:
                stack_push((self._pop(start),))
            elif op == TUPLE2:
                second = self._pop(start)
                stack_push((self._pop(start), second))
            elif op == TUPLE3:
                third = self._pop(start)
                second = self._pop(start)
                stack_push((self._pop(start), second, third))
            elif op == EMPTY_TUPLE:
                stack_push(())
            elif op == EMPTY_LIST:
                stack_push([])
            elif op == EMPTY_DICT:
                stack_push(_Dict())
            elif op == EMPTY_SET:
                stack_push(_OPAQUE)
            elif op in (NONE, NEWTRUE, NEWFALSE):
                stack_push(None if op == NONE else op == NEWTRUE)
            elif op == REDUCE:
                args = self._pop(start)
                func = self._top(start)
                stack[-1] = self._call(func, args, start, "REDUCE")
            elif op == NEWOBJ:
                args = self._pop(start)
                cls = self._pop(start)
                stack_push(self._call(cls, args, start, "NEWOBJ"))
            elif op == NEWOBJ_EX:
                self._pop(start)  # kwargs
                args = self._pop(start)
                cls = self._pop(start)
                stack_push(self._call(cls, args, start, "NEWOBJ_EX"))
            elif op == BUILD:
                pos = self._build(start, pos)
            elif op in (GLOBAL, INST):
                opname = "GLOBAL" if op == GLOBAL else "INST"
                raw_module, pos = self._line(pos)
                raw_name, pos = self._line(pos)
                try:
                    module, name = raw_module.decode("utf-8"), raw_name.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Malformed(f"{opname} names that are not UTF-8", start) from None
                if (
                    not self.strict
                    and not _is_dotted_identifier(module)
                    and not (name.isidentifier() and name.endswith("Storage"))
                ):
                    # No module has this name unless a file of that very name was put on
                    # sys.path; pickle.load stops with an ImportError. (torch.load's
                    # find_class answers names with "Storage" without importing.)
                    raise _Malformed(f"{opname} of an unimportable module name", start)
                self._global(module, name, start, opname)  # pickle.py imports first
                if op == INST:
                    cls = self.stack.pop()
                    args = tuple(self._pop_mark(start))
                    self.stack.append(self._call(cls, args, start, opname))
            elif op == STACK_GLOBAL:
                name_value = self._pop(start)
                module_value = self._pop(start)
                if isinstance(module_value, str) and isinstance(name_value, str):
                    self._global(module_value, name_value, start, "STACK_GLOBAL")
                else:
                    not_str = (type(None), bool, int, tuple, list, dict, _Global)
                    if not self.strict and (
                        isinstance(module_value, not_str) or isinstance(name_value, not_str)
                    ):
                        raise _Malformed("STACK_GLOBAL of values that are not strings", start)
                    self._flag(
                        start,
                        "STACK_GLOBAL imports a global whose name is not a literal string "
                        "(cannot be determined without running the pickle)",
                    )
                    stack_push(_Global("<unknown>"))
            elif op == OBJ:
                items = self._pop_mark(start)
                if not items:
                    raise _Malformed("stack underflow", start)
                self.stack.append(self._call(items[0], tuple(items[1:]), start, "OBJ"))
            elif op in (EXT1, EXT2, EXT4):
                width = {EXT1: 1, EXT2: 2, EXT4: 4}[op]
                code = self._uint(pos, width)
                pos += width
                self._flag(
                    start,
                    f"{_OPCODE_NAMES[op]} loads extension code {code} from the copyreg "
                    "registry, whose target cannot be known from the file",
                )
                stack_push(_Global(f"<extension {code}>"))
            elif op in (PERSID, BINPERSID):
                # pickle.load has no persistent_load and raises here, but torch.load's
                # unpicklers have one (a legacy tar's "pickle" member, a zip's data.pkl
                # whatever its layout; both are scanned strictly anyway): walk on in
                # probes too, but what follows is no evidence that this is a pickle.
                if self.ops_before_persid is None:
                    self.ops_before_persid = self.ops - 1
                if op == PERSID:
                    raw, pos = self._line(pos)
                    if not raw.isascii():
                        raise _Malformed("a persistent id that is not ASCII", start)
                    pid: object = raw.decode("ascii")
                else:
                    pid = self._pop(start)
                self._note_storage(pid)
                self.stack.append(_Call(_PERSISTENT, pid))
            elif op == SETITEM:
                value = self._pop(start)
                key = self._pop(start)
                self._setitems(self._top(start), [key, value], start)
            elif op == SETITEMS:
                items = self._pop_mark(start)
                self._setitems(self._top(start), items, start)
            elif op == APPEND:
                value = self._pop(start)
                target = self._top(start)
                if self.mutate and isinstance(target, list):
                    target.append(value)
            elif op == APPENDS:
                items = self._pop_mark(start)
                target = self._top(start)
                if self.mutate and isinstance(target, list):
                    target.extend(items)
            elif op == ADDITEMS:
                self._pop_mark(start)
                self._top(start)
            elif op == DICT:
                items = self._pop_mark(start)
                if len(items) % 2:
                    raise _Malformed("odd number of items for DICT", start)
                mapping = _Dict()
                self._setitems(mapping, items, start, force=True)
                self.stack.append(mapping)
            elif op in (LONG_BINPUT, LONG_BINGET):
                key = self._uint(pos, 4)
                pos += 4
                if op == LONG_BINPUT:
                    self._memo_put(key, start)
                else:
                    self._memo_get(key, start)
            elif op in (PUT, GET):
                raw, pos = self._line(pos)
                try:
                    key = int(raw)
                except ValueError:
                    raise _Malformed("a memo key that is not a number", start) from None
                if op == PUT:
                    self._memo_put(key, start)
                else:
                    self._memo_get(key, start)
            elif op in (SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8):
                width = {SHORT_BINBYTES: 1, BINBYTES: 4, BINBYTES8: 8, BYTEARRAY8: 8}[op]
                size = self._uint(pos, width)
                self._take(pos + width, size)
                pos += width + size
                stack_push(_OPAQUE)
            elif op in (SHORT_BINSTRING, BINSTRING):
                width = 1 if op == SHORT_BINSTRING else 4
                size = int.from_bytes(self._take(pos, width), "little", signed=op == BINSTRING)
                if size < 0:
                    raise _Malformed("BINSTRING with a negative length", start)
                raw_view = self._take(pos + width, size)
                pos += width + size
                stack_push(self._legacy_string(bytes(raw_view)))
            elif op == STRING:
                raw, pos = self._line(pos)
                stack_push(self._quoted_string(raw, start))
            elif op == UNICODE:
                raw, pos = self._line(pos)
                try:
                    text = raw.decode("raw-unicode-escape")
                except UnicodeDecodeError:
                    raise _Malformed("UNICODE argument that does not decode", start) from None
                stack_push(text if len(text) <= _MAX_KEPT_STRING else _OPAQUE)
            elif op in (INT, LONG):
                raw, pos = self._line(pos)
                stack_push(self._parse_int(raw, op == LONG, start))
            elif op == FLOAT:
                raw, pos = self._line(pos)
                try:
                    float(raw)
                except ValueError:
                    self._soft("FLOAT argument that is not a number", start)
                stack_push(_OPAQUE)
            elif op == BINFLOAT:
                self._take(pos, 8)
                pos += 8
                stack_push(_OPAQUE)
            elif op in (LONG1, LONG4):
                width = 1 if op == LONG1 else 4
                size = int.from_bytes(self._take(pos, width), "little", signed=op == LONG4)
                if size < 0:
                    raise _Malformed("LONG4 with a negative length", start)
                raw_view = self._take(pos + width, size)
                pos += width + size
                stack_push(
                    int.from_bytes(raw_view, "little", signed=True) if size <= 64 else _UNKNOWN_INT
                )
            elif op == POP:
                if self.stack:
                    self.stack.pop()
                else:
                    self._pop_mark(start)
            elif op == POP_MARK:
                self._pop_mark(start)
            elif op == DUP:
                stack_push(self._top(start))
            elif op == PROTO:
                self.proto = self._uint(pos, 1)
                pos += 1
                if self.proto > _HIGHEST_PROTOCOL:
                    raise _Malformed(f"unsupported pickle protocol {self.proto}", start)
            elif op == FRAME:
                size = self._uint(pos, 8)
                pos += 8
                if pos < self.frame_end:
                    self._soft("a FRAME starts before the previous frame ends", start)
                if pos + size > end:
                    if self.strict:
                        raise _Malformed("truncated: a FRAME longer than the data", start, eof=True)
                    # _pickle raises; pickle.py (joblib) reads what there is as the frame.
                    size = end - pos
                self.frame_end = pos + size
            elif op == READONLY_BUFFER:
                self._top(start)
            elif op == NEXT_BUFFER:
                raise _Malformed(
                    "NEXT_BUFFER refers to an out-of-band buffer that is not in the file", start
                )
            elif op == STOP:
                self.value = self._pop(start)
                if pos < self.frame_end:
                    self._soft("STOP before the end of its frame", start)
                return pos
            else:
                raise _Malformed(f"invalid opcode 0x{op:02x}", start)

