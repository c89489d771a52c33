"""The format gate's safetensors check: the header, validated strictly, tensors unread.

A 1 GiB file costs one `stat` and two small reads.

Every problem is a `ValidationError` naming the file, the field (the tensor) and what
is wrong. The scan runs the same checks on safetensors content it finds.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from registry.artifacts.sniff import MAX_SAFETENSORS_HEADER, StrPath, open_regular
from registry.errors import Problem, ValidationError

__all__ = [
    "DTYPE_BITS",
    "MAX_HEADER_BYTES",
    "SafetensorsInfo",
    "validate_safetensors",
    "validate_safetensors_bytes",
]

# The safetensors crate's own limit (MAX_HEADER_SIZE = 100_000_000 in tensor.rs), a
# little under 100 MiB: a header between the two could never be loaded, so refuse it.
MAX_HEADER_BYTES = MAX_SAFETENSORS_HEADER

# Bits per element, exactly the `Dtype` enum of the safetensors crate (0.6 onwards, same
# list in the 0.8 Python wheel). All are accepted, because files using them load with
# the reference implementation. The sub-byte ones (F4, F6_*) are handled as the crate
# does: a tensor's bit count must be a whole number of bytes, otherwise it is refused.
DTYPE_BITS: Mapping[str, int] = MappingProxyType(
    {
        "BOOL": 8,
        "F4": 4,
        "F6_E2M3": 6,
        "F6_E3M2": 6,
        "U8": 8,
        "I8": 8,
        "F8_E5M2": 8,
        "F8_E4M3": 8,
        "F8_E8M0": 8,
        "F8_E4M3FNUZ": 8,
        "F8_E5M2FNUZ": 8,
        "I16": 16,
        "U16": 16,
        "F16": 16,
        "BF16": 16,
        "I32": 32,
        "U32": 32,
        "F32": 32,
        "C64": 64,
        "F64": 64,
        "I64": 64,
        "U64": 64,
    }
)

_BITS = dict(DTYPE_BITS)
_METADATA_KEY = "__metadata__"
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_LENGTH_PREFIX = 8
# A file with thousands of broken tensors gets the first ones and a count, not a wall.
_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class SafetensorsInfo:
    """What a valid safetensors header says, read without touching the tensors."""

    path: str
    header_bytes: int
    tensor_count: int
    total_bytes: int
    """Size of the data section: the sum of every tensor's bytes."""
    metadata: Mapping[str, str]



class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if isinstance(value, bool | type(None) | dict | list | str):
        return names[type(value)]
    return "number"


def _utf8_problem(text: str) -> str | None:
    """JSON escapes can smuggle lone surrogates in; the crate refuses them."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{text!r} is not valid UTF-8 (lone surrogate escape)"
    return None



def _header_length(path: StrPath, prefix: bytes, size: int) -> int:
    """The header length a safetensors file's first 8 bytes give, checked against
    the file size (``size``: the whole file, prefix included)."""
    if len(prefix) < _LENGTH_PREFIX:
        raise ValidationError.one(
            path,
            f"file is {size} bytes, too short for the 8-byte header length "
            "a safetensors file starts with",
        )
    (length,) = struct.unpack("<Q", prefix[:_LENGTH_PREFIX])
    if length < 2:
        raise ValidationError.one(
            path, f"header length {length} is too small to hold a JSON object ({{}})"
        )
    if length > MAX_HEADER_BYTES:
        raise ValidationError.one(
            path,
            f"header length {length} exceeds the {MAX_HEADER_BYTES}-byte limit; "
            "the file is not safetensors or is corrupt",
        )
    if _LENGTH_PREFIX + length > size:
        raise ValidationError.one(
            path,
            f"header length {length} runs past the end of the file "
            f"({size} bytes; the header needs {_LENGTH_PREFIX + length}): truncated?",
        )
    return int(length)


def _read_header(path: StrPath) -> tuple[bytes, int]:
    """Return the header bytes and the file size, checking the length prefix."""
    with open_regular(path) as (handle, size):
        length = _header_length(path, handle.read(_LENGTH_PREFIX), size)
        header = handle.read(length)
        if len(header) != length:
            raise ValidationError.one(path, "file shrank while being read")
        return header, size


def _parse_header(path: StrPath, raw: bytes) -> dict[str, Any]:
    def refuse(message: str) -> ValidationError:
        return ValidationError.one(path, f"header {message}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"is not UTF-8 (bad byte at offset {_LENGTH_PREFIX + exc.start})") from None
    try:
        parsed = json.loads(
            text, object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant
        )
    except _DuplicateKeyError as exc:
        raise refuse(f"has duplicate key {exc.key!r}; each key may appear once") from None
    except json.JSONDecodeError as exc:
        raise refuse(
            f"is not valid JSON: {exc.msg} at byte {_LENGTH_PREFIX + len(text[: exc.pos].encode())}"
        ) from None
    except ValueError as exc:  # NaN/Infinity, integers past Python's digit limit
        raise refuse(f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise refuse("is not valid JSON: nested too deeply") from None
    if not isinstance(parsed, dict):
        raise refuse(f"is a JSON {_json_type(parsed)}, not an object of tensor entries")
    return parsed


def _metadata_problems(value: object) -> list[str]:
    if not isinstance(value, dict):
        return [f"must be an object of string to string, not a JSON {_json_type(value)}"]
    found: list[str] = []
    for key, item in value.items():
        if not isinstance(item, str):
            found.append(f"value of {key!r} must be a string, not a JSON {_json_type(item)}")
        found.extend(p for p in (_utf8_problem(key), _utf8_problem(str(item))) if p)
    return found


def _valid_span(entry: object) -> tuple[int, int] | None:
    """The span of an entry with nothing wrong, else None. The common case, kept fast:
    a header can list tens of thousands of tensors."""
    if type(entry) is not dict or len(entry) != 3:
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    bits = _BITS.get(dtype) if type(dtype) is str else None
    if bits is None or type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
        return None
    begin, end = offsets
    # `type(x) is int` on purpose: JSON true/false parse to bool, a subclass of int.
    if not (type(begin) is int and type(end) is int and 0 <= begin <= end):
        return None
    if not all(type(d) is int and d >= 0 for d in shape):
        return None
    total_bits = math.prod(shape) * bits
    if total_bits % 8 or total_bits // 8 != end - begin:
        return None
    return begin, end


def _entry_problems(entry: object) -> tuple[list[str], tuple[int, int] | None]:
    """What is wrong with one tensor entry, and its span if the offsets are usable."""
    if not isinstance(entry, dict):
        return [
            f"entry is a JSON {_json_type(entry)}, not an object with dtype, shape, data_offsets"
        ], None
    found: list[str] = []
    missing = sorted(_ENTRY_KEYS - entry.keys())
    extra = sorted(entry.keys() - _ENTRY_KEYS)
    if missing:
        found.append(f"missing key(s) {', '.join(missing)}")
    if extra:
        found.append(
            f"unexpected key(s) {', '.join(map(repr, extra))}; "
            "an entry has exactly dtype, shape, data_offsets"
        )

    dtype = entry.get("dtype")
    bits: int | None = None
    if "dtype" in entry:
        if isinstance(dtype, str) and dtype in DTYPE_BITS:
            bits = DTYPE_BITS[dtype]
        else:
            found.append(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BITS)}")

    shape = entry.get("shape")
    shape_ok = False
    if "shape" in entry:
        if not isinstance(shape, list):
            found.append(f"shape must be a list of integers, not a JSON {_json_type(shape)}")
        elif bad := [d for d in shape if not _is_int(d) or d < 0]:
            found.append(
                f"shape {shape!r} has {bad[0]!r}; dimensions must be non-negative integers"
            )
        else:
            shape_ok = True

    offsets = entry.get("data_offsets")
    span: tuple[int, int] | None = None
    if "data_offsets" in entry:
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)
        ):
            found.append(
                f"data_offsets {offsets!r} must be [begin, end], two non-negative integers"
            )
        elif offsets[0] > offsets[1]:
            found.append(f"data_offsets {offsets!r} are reversed: begin is after end")
        else:
            span = (offsets[0], offsets[1])

    if bits is not None and shape_ok and span is not None:
        assert isinstance(shape, list)
        total_bits = math.prod(shape) * bits
        if total_bits % 8:
            found.append(
                f"shape {shape!r} of {dtype} is {total_bits} bits, not a whole number of bytes"
            )
        elif (needed := total_bits // 8) != span[1] - span[0]:
            found.append(
                f"data_offsets {offsets!r} span {span[1] - span[0]} bytes, "
                f"but shape {shape!r} of {dtype} needs {needed}"
            )
    return found, span


def _layout_problems(
    path: str, spans: list[tuple[int, int, str]], data_bytes: int
) -> list[Problem]:
    """Spans sorted by offset must tile [0, data_bytes) exactly: no gap, no overlap."""
    found: list[Problem] = []
    covered = 0
    previous = ""
    for begin, end, name in sorted(spans):
        if begin > covered:
            found.append(
                Problem(
                    path,
                    f"gap: bytes {covered}..{begin} before this tensor belong to no tensor",
                    field=name,
                )
            )
        elif begin < covered:
            found.append(
                Problem(
                    path,
                    f"overlap: data_offsets [{begin}, {end}] overlap tensor {previous!r} "
                    f"which ends at {covered}",
                    field=name,
                )
            )
        if end >= covered:
            covered, previous = end, name
    if covered < data_bytes:
        found.append(
            Problem(
                path,
                f"trailing bytes: {data_bytes - covered} bytes after the last tensor "
                f"(data section is {data_bytes} bytes, tensors cover {covered})",
            )
        )
    elif covered > data_bytes:
        found.append(
            Problem(
                path,
                f"missing bytes: tensors need {covered} bytes of data but the file holds "
                f"{data_bytes} after the header: truncated?",
            )
        )
    return found


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= _MAX_PROBLEMS:
        return problems
    rest = len(problems) - _MAX_PROBLEMS
    return [*problems[:_MAX_PROBLEMS], Problem(problems[0].path, f"... and {rest} more problems")]


def validate_safetensors(path: StrPath) -> SafetensorsInfo:
    """Check a safetensors file strictly from its header; never reads tensor bytes.

    Stricter than the safetensors loader where the loader is lenient: duplicate keys,
    unknown keys in an entry and a null `__metadata__` are refused.
    """
    raw, size = _read_header(path)
    return _validate(str(path), raw, size)


def validate_safetensors_bytes(data: bytes | memoryview, name: str) -> SafetensorsInfo:
    """`validate_safetensors` on content already in memory (an archive member, a
    mapped file): the same checks, so the scan and the format gate agree."""
    length = _header_length(name, bytes(data[:_LENGTH_PREFIX]), len(data))
    raw = bytes(data[_LENGTH_PREFIX : _LENGTH_PREFIX + length])
    return _validate(name, raw, len(data))


def _validate(name: str, raw: bytes, size: int) -> SafetensorsInfo:
    header = _parse_header(name, raw)
    data_bytes = size - _LENGTH_PREFIX - len(raw)

    problems: list[Problem] = []
    spans: list[tuple[int, int, str]] = []
    offsets_complete = True
    metadata: dict[str, str] = {}
    for key, entry in header.items():
        if key == _METADATA_KEY:
            metadata_issues = _metadata_problems(entry)
            problems.extend(Problem(name, issue, field=key) for issue in metadata_issues)
            if not metadata_issues:
                metadata = entry
            continue
        # The slow path is the authority; it runs only when the fast one says no.
        span = _valid_span(entry)
        issues: list[str] = []
        if span is None:
            issues, span = _entry_problems(entry)
        if not key.isascii() and (encoding := _utf8_problem(key)):
            issues.insert(0, f"tensor name {encoding}")
        if issues:
            problems.extend(Problem(name, issue, field=key) for issue in issues)
        if span is None:
            offsets_complete = False
        else:
            spans.append((span[0], span[1], key))

    # Without every span a layout check would report gaps that are not there.
    if offsets_complete:
        problems.extend(_layout_problems(name, spans, data_bytes))
    if problems:
        raise ValidationError(_capped(problems))
    return SafetensorsInfo(
        path=name,
        header_bytes=len(raw),
        tensor_count=len(spans),
        total_bytes=data_bytes,
        metadata=MappingProxyType(metadata),
    )

