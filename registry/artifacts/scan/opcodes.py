"""The pickle opcodes as plain ints, the way the symbolic machine compares them."""

from __future__ import annotations

import pickletools
from typing import Final

_OP: Final = {opcode.name: ord(opcode.code) for opcode in pickletools.opcodes}
_OPCODE_NAMES: Final = {code: name for name, code in _OP.items()}
# The opcodes as plain ints (the walk compares one byte against them).
MARK, STOP, POP, POP_MARK, DUP, NONE = (
    _OP[n] for n in ("MARK", "STOP", "POP", "POP_MARK", "DUP", "NONE")
)
FLOAT, INT, BININT, BININT1, BININT2 = (
    _OP[n] for n in ("FLOAT", "INT", "BININT", "BININT1", "BININT2")
)
LONG, LONG1, LONG4, BINFLOAT = (_OP[n] for n in ("LONG", "LONG1", "LONG4", "BINFLOAT"))
NEWTRUE, NEWFALSE, PROTO, FRAME = (_OP[n] for n in ("NEWTRUE", "NEWFALSE", "PROTO", "FRAME"))
STRING, BINSTRING, SHORT_BINSTRING = (_OP[n] for n in ("STRING", "BINSTRING", "SHORT_BINSTRING"))
UNICODE, BINUNICODE, BINUNICODE8 = (_OP[n] for n in ("UNICODE", "BINUNICODE", "BINUNICODE8"))
SHORT_BINUNICODE = _OP["SHORT_BINUNICODE"]
BINBYTES, SHORT_BINBYTES, BINBYTES8 = (_OP[n] for n in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"))
BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER = (
    _OP[n] for n in ("BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER")
)
GLOBAL, STACK_GLOBAL, INST, OBJ = (_OP[n] for n in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ"))
REDUCE, BUILD, NEWOBJ, NEWOBJ_EX = (_OP[n] for n in ("REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX"))
EXT1, EXT2, EXT4, PERSID, BINPERSID = (
    _OP[n] for n in ("EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID")
)
TUPLE, EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3 = (
    _OP[n] for n in ("TUPLE", "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3")
)
LIST, EMPTY_LIST, APPEND, APPENDS = (_OP[n] for n in ("LIST", "EMPTY_LIST", "APPEND", "APPENDS"))
DICT, EMPTY_DICT, SETITEM, SETITEMS = (
    _OP[n] for n in ("DICT", "EMPTY_DICT", "SETITEM", "SETITEMS")
)
EMPTY_SET, ADDITEMS, FROZENSET = (_OP[n] for n in ("EMPTY_SET", "ADDITEMS", "FROZENSET"))
GET, BINGET, LONG_BINGET = (_OP[n] for n in ("GET", "BINGET", "LONG_BINGET"))
PUT, BINPUT, LONG_BINPUT, MEMOIZE = (_OP[n] for n in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"))

_HIGHEST_PROTOCOL: Final = 5
