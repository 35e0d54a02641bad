"""YAML loading that remembers where every value came from.

Validation messages must point at a line, so the cluster file is composed into
PyYAML's node tree (which carries marks) and converted to plain Python data
while recording the line of every mapping key and sequence item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem, UserError

Location = tuple[str | int, ...]


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


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data and its source map.

    Syntax errors, several documents, duplicate keys and non-string keys are user
    errors, each reported with its line.
    """
    source = SourceMap(file=file)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        detail = exc.problem or str(exc)
        raise UserError(Problem(file, line, "", f"YAML syntax error: {detail}")) from None
    except yaml.YAMLError as exc:
        raise UserError(Problem(file, None, "", f"YAML error: {exc}")) from None
    finally:
        loader.dispose()
    if root is None:
        return None, source
    problems: list[Problem] = []
    data = _convert(loader, root, (), source, problems)
    if problems:
        raise UserError(problems)
    return data, source


def _convert(loader: _Loader, node: yaml.Node, loc: Location, source: SourceMap, problems: list[Problem]) -> Any:
    source.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                problems.append(Problem(source.file, line, format_location(loc), f"key {key!r} is not a string; quote it"))
                continue
            if key in result:
                problems.append(
                    Problem(source.file, line, format_location((*loc, key)),
                            f"duplicate key (first defined on line {source.lines[(*loc, key)]}); remove one")
                )
                continue
            source.lines[(*loc, key)] = line
            result[key] = _convert(loader, value_node, (*loc, key), source, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, (*loc, index), source, problems) for index, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        problems.append(Problem(source.file, node.start_mark.line + 1, format_location(loc), str(exc.problem)))
        return None
