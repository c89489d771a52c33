"""Safe YAML in and out.

Loading: the libyaml safe loader where available, duplicate keys refused, aliases
bounded (a "billion laughs" document is refused before anything expands it), files
over a size limit refused before parsing, timestamps kept as strings (the schemas
check their format), and every error located by file, line and field.

Writing: a ``# yaml-language-server: $schema=…`` header, stable key order, atomic
replace (temp file in the same directory, fsync, rename).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from registry.errors import Problem, ValidationError

MAX_YAML_BYTES = 1 << 20
# Where `registry init` copies the JSON Schemas inside a registry, for editors.
REPO_SCHEMA_DIR = ".registry/schemas"
# Nodes a document may expand to once aliases are followed.
MAX_EXPANDED_NODES = 100_000

try:
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe loader that refuses duplicate keys and keeps dates as text."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _STR_TAG:
                key: Any = key_node.value  # a str scalar constructs to exactly its value
            elif key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not allowed", key_node.start_mark
                )
            else:
                key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                ) from None
            if duplicate:
                raise _DuplicateKey(key, seen[key], key_node)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_STR_TAG = "tag:yaml.org,2002:str"


def _construct_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _construct_text)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: yaml.Node, again: yaml.Node) -> None:
        self.key, self.first, self.again = key, first, again


def _check_expansion(root: yaml.Node, path: str) -> None:
    """Refuse documents whose aliases would expand past MAX_EXPANDED_NODES."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if depth > 200:
            raise ValidationError.one(path, "nesting is deeper than 200 levels", node.start_mark.line + 1)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k, depth + 1) + size(v, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
        if total > MAX_EXPANDED_NODES:
            raise ValidationError.one(
                path,
                f"aliases expand to more than {MAX_EXPANDED_NODES} nodes (an alias bomb?); "
                "write the values out instead of using anchors",
                node.start_mark.line + 1,
            )
        sizes[id(node)] = total
        return total

    size(root, 0)


def loads(text: str | bytes, path: str = "<string>") -> Any:
    """Parse one YAML document safely. Errors raise ValidationError naming file and line."""
    if len(text) > MAX_YAML_BYTES:
        raise ValidationError.one(
            path, f"file is {len(text)} bytes, over the {MAX_YAML_BYTES}-byte limit for YAML files"
        )
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            # Only documents that use anchors pay for the expansion walk.
            has_alias = (b"*" in text) if isinstance(text, bytes) else ("*" in text)
            if has_alias:
                _check_expansion(node, path)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _DuplicateKey as dup:
        raise ValidationError.one(
            path,
            f"duplicate key {dup.key!r} (first defined on line {dup.first.start_mark.line + 1}); "
            "keep one of them",
            dup.again.start_mark.line + 1,
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        if mark is not None and "cannot start any token" in what and _char_at(text, mark.line, mark.column) == "\t":
            what += " (a tab: YAML indents with spaces)"
        raise ValidationError.one(path, f"invalid YAML: {what}", line) from None
    except yaml.YAMLError as exc:
        raise ValidationError.one(path, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ValidationError.one(path, "invalid YAML: nested too deeply") from None


def _char_at(text: str | bytes, line: int, column: int) -> str | None:
    lines = (text.decode(errors="replace") if isinstance(text, bytes) else text).splitlines()
    return lines[line][column] if line < len(lines) and column < len(lines[line]) else None


def read_bytes(path: Path, display: str | None = None) -> bytes:
    """The bytes of a YAML file, after the checks that come before parsing (exists, size)."""
    shown = display or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValidationError.one(shown, "file not found") from None
    except OSError as exc:
        raise ValidationError.one(shown, f"cannot read: {exc.strerror}") from None
    if size > MAX_YAML_BYTES:
        raise ValidationError.one(
            shown, f"file is {size} bytes, over the {MAX_YAML_BYTES}-byte limit for YAML files"
        )
    if not path.is_file():
        raise ValidationError.one(shown, "not a regular file")
    return path.read_bytes()


def load_file(path: Path, display: str | None = None) -> Any:
    return loads(read_bytes(path, display), display or str(path))


def line_of(text: str | bytes, field_path: Sequence[str | int]) -> int | None:
    """Line (1-based) of the node at field_path, or of its deepest existing parent.

    Used only after a check failed, so the happy path never composes twice.
    """
    try:
        node = yaml.compose(text, Loader=_BaseLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in field_path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def schema_header(schema_ref: str) -> str:
    return f"# yaml-language-server: $schema={schema_ref}\n"


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dumps(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def atomic_write(path: Path, text: str | bytes) -> None:
    """Replace path with text: temp file beside it, fsync, rename. Never half-written."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a registry file gets the mode any new file would get.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def problems_text(problems: Iterable[Problem]) -> str:
    return "\n".join(str(p) for p in problems)
