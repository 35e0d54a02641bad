"""YAML loading that remembers where every value came from.

Validation messages must point at a line, so the cluster file is composed into
PyYAML's node tree (which carries marks) and converted to plain Python data
while recording the line of every mapping key and sequence item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .base.errors import Problem, UserError
from .base.types import Location


@dataclass
class SourceMap:
    """Line numbers (1-based) of every key and item, by their path from the document root."""

    file: str
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, loc: Location) -> int | None:
        # A missing field has no line of its own: point at the closest parent that exists.
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Location, message: str) -> Problem:
        return Problem(file=self.file, line=self.line_of(loc), path=format_location(loc), message=message)


def format_location(loc: Location) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's parser where available) without the timestamp resolver: dates stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# A cluster file nests a handful of levels; anything deeper is hostile or broken,
# and the YAML composer recurses once per level.
MAX_DEPTH = 64
# Aliases can expand a small file exponentially ("billion laughs"); no real
# cluster file comes near this many values.
MAX_VALUES = 500_000

_OPENING = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
            yaml.FlowSequenceStartToken)
_CLOSING = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


class _TooLarge(Exception):
    pass


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data and its source map.

    Syntax errors, several documents, duplicate keys, non-string keys, hostile
    nesting and alias bombs are user errors, each reported with its line.
    """
    source = SourceMap(file=file)
    last_line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))

    def line_at(mark: Any) -> int | None:
        return min(mark.line + 1, last_line) if mark is not None else None

    loader = _Loader(text)
    try:
        _check_depth(text, file, line_at)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        detail = exc.problem or str(exc).splitlines()[0]
        raise UserError(Problem(file, line_at(exc.problem_mark or exc.context_mark), "", f"YAML syntax error: {detail}")) from None
    except yaml.reader.ReaderError as exc:
        line = min(text.count("\n", 0, exc.position) + 1, last_line) if isinstance(exc.position, int) else None
        character = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise UserError(Problem(file, line, "", f"character {character!r} is not allowed in YAML; remove it")) from None
    except yaml.YAMLError as exc:
        raise UserError(Problem(file, None, "", f"YAML error: {str(exc).splitlines()[0]}")) from None
    finally:
        loader.dispose()
    if root is None:
        return None, source
    problems: list[Problem] = []
    converter = _Converter(loader, source, problems, line_at)
    try:
        data = converter.convert(root, ())
    except _TooLarge:
        raise UserError(Problem(file, None, "", f"the document expands to more than {MAX_VALUES} values "
                                "(through aliases); write it out without aliases")) from None
    if problems:
        raise UserError(problems)
    return data, source


def _check_depth(text: str, file: str, line_at: Any) -> None:
    """Refuse deep nesting before the recursive composer sees it (the scanner is iterative)."""
    depth = 0
    scanner = _Loader(text)
    try:
        while scanner.check_token():
            token = scanner.get_token()
            if isinstance(token, _OPENING):
                depth += 1
                if depth > MAX_DEPTH:
                    raise UserError(Problem(file, line_at(token.start_mark), "",
                                            f"nested more than {MAX_DEPTH} levels deep; a cluster file needs far fewer"))
            elif isinstance(token, _CLOSING):
                depth -= 1
    finally:
        scanner.dispose()


class _Converter:
    def __init__(self, loader: _Loader, source: SourceMap, problems: list[Problem], line_at: Any):
        self.loader, self.source, self.problems, self.line_at = loader, source, problems, line_at
        self.values = 0
        self.open: set[int] = set()  # nodes being converted: an alias back to one of them is a cycle

    def problem(self, node: yaml.Node, loc: Location, message: str) -> None:
        self.problems.append(Problem(self.source.file, self.line_at(node.start_mark), format_location(loc), message))

    def convert(self, node: yaml.Node, loc: Location) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooLarge
        self.source.lines.setdefault(loc, self.line_at(node.start_mark))
        if id(node) in self.open:
            self.problem(node, loc, "an alias refers to a value that contains it; remove the cycle")
            return None
        if isinstance(node, yaml.MappingNode):
            self.open.add(id(node))
            try:
                return self._mapping(node, loc)
            finally:
                self.open.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.open.add(id(node))
            try:
                return [self.convert(item, (*loc, index)) for index, item in enumerate(node.value)]
            finally:
                self.open.discard(id(node))
        return self._scalar(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Location) -> dict[str, Any]:
        if _merged_size(node, {}, set()) > MAX_VALUES:
            raise _TooLarge
        try:
            self.loader.flatten_mapping(node)
        except (yaml.YAMLError, TypeError, ValueError) as exc:
            self.problem(node, loc, f"invalid merge key '<<': {getattr(exc, 'problem', None) or exc}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = self.line_at(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, loc, "a key must be a plain string, not a list or mapping")
                continue
            key = self._scalar(key_node, loc)
            if not isinstance(key, str):
                if key is not None:
                    self.problem(key_node, loc, f"key {key!r} is not a string; quote it")
                continue
            if key in result:
                self.problems.append(Problem(self.source.file, line, format_location((*loc, key)),
                                             f"duplicate key (first defined on line {self.source.lines[(*loc, key)]}); remove one"))
                continue
            self.source.lines[(*loc, key)] = line
            result[key] = self.convert(value_node, (*loc, key))
        return result

    def _scalar(self, node: yaml.Node, loc: Location) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node, loc, str(getattr(exc, "problem", None) or exc).splitlines()[0])
        except Exception as exc:  # PyYAML's constructors raise IndexError, KeyError, AttributeError... on bad tagged scalars
            kind = node.tag.rsplit(":", 1)[-1]
            self.problem(node, loc, f"value {str(node.value)[:40]!r} cannot be read as {kind} ({type(exc).__name__}); "
                                    "remove the tag or fix the value")
        return None


def _merged_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """How many key/value pairs a mapping has once its merge keys ('<<') are expanded.

    Merges can reference merges, doubling at every level; PyYAML would build
    every pair before anything could count them. Memoized per node, so the
    count itself stays linear in the document.
    """
    if not isinstance(node, yaml.MappingNode):
        return 0
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in active:
        return 0  # a cycle; the converter reports it
    active.add(id(node))
    total = 0
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            total += sum(_merged_size(source, memo, active) for source in sources)
            if total > MAX_VALUES:
                break
        else:
            total += 1
    active.discard(id(node))
    memo[id(node)] = total
    return total
