"""PyYAML behind registry.yamlio: imported on the first parse or dump, not at start-up.

The read paths that thousands of files go through (canonical stages.yaml, cached
cards) never need it, and importing PyYAML is a fifth of a small command's start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from registry.errors import ValidationError
from registry.files.yamllimits import MAX_EXPANDED_NODES, MAX_INT_DIGITS, MAX_YAML_BYTES, too_big

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


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """An integer Python can also print: at most MAX_INT_DIGITS decimal digits (any base).

    Past that, Python refuses int <-> str conversions (sys.get_int_max_str_digits), so a
    longer one would fail later, far from its line, in whatever prints or compares it.
    """
    text = str(loader.construct_scalar(node))
    decimal = not text.lstrip("+-").startswith(("0x", "0o", "0b"))
    too_long = decimal and sum(c.isdigit() for c in text) > MAX_INT_DIGITS
    value: int = 0 if too_long else yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    if too_long or (not decimal and value.bit_length() > _MAX_INT_BITS):
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer this long is not allowed (at most {MAX_INT_DIGITS} digits)", node.start_mark
        )
    return value


# 2**_MAX_INT_BITS < 10**MAX_INT_DIGITS: a value within the bits prints in at most that many digits.
_MAX_INT_BITS = int(MAX_INT_DIGITS * 3.3219)

_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
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
        raise too_big(path, len(text))
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


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dumps(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
