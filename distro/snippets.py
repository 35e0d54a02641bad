"""Butane snippets from the cluster file: inline mappings or files next to it."""

from __future__ import annotations

import re
from pathlib import Path

from .base.errors import Problem, UserError
from .base.types import Location
from .yamlsource import SourceMap, format_location, load_yaml
from .ignition.butane import SnippetError
from .ignition.butane import translate as translate_butane

_KEY_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class SnippetProblem(Exception):
    """A snippet that cannot be translated; carries enough to locate every problem."""

    def __init__(self, problems: list[tuple[SourceMap, Location, str]]):
        self.problems = problems
        super().__init__("; ".join(message for _, _, message in problems))

    def to_problems(self) -> list[Problem]:
        return [source.problem(loc, message) for source, loc, message in self.problems]


def load_snippet(item: object, base_dir: Path, loc: Location, cluster_source: SourceMap | None = None):
    """Translate one snippet item to an Ignition config, or raise SnippetProblem."""
    cluster_source = cluster_source or SourceMap(file="cluster file")
    if isinstance(item, dict):
        return _translate(item, format_location(loc), cluster_source, loc)
    path = (base_dir / str(item)).resolve()
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SnippetProblem([(cluster_source, loc, f"cannot read snippet file {path}: {reason}")]) from None
    try:
        doc, file_source = load_yaml(text, origin)
    except UserError as exc:
        raise SnippetProblem([(SourceMap(file=origin), (), p.message) for p in exc.problems]) from None
    if not isinstance(doc, dict):
        raise SnippetProblem([(file_source, (), "a Butane snippet must be a mapping with storage, systemd or passwd")])
    return _translate(doc, origin, file_source, ())


def _translate(doc: dict, origin: str, source: SourceMap, prefix: Location):
    try:
        return translate_butane(doc, origin)
    except SnippetError as exc:
        raise SnippetProblem(
            [(source, (*prefix, *_parse_key_path(key_path)), f"snippet: {message}") for key_path, message in exc.problems]
        ) from None


def _parse_key_path(key_path: str) -> Location:
    return tuple(int(index) if index else name for name, index in _KEY_PATH_PART.findall(key_path))
