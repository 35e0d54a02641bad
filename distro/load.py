"""Reading a cluster file: YAML with positions, the typed model, then cross-field checks.

Everything wrong is collected and raised as one UserError, one located problem
per line, so an operator fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .base.errors import Problem, UserError
from .spec import Cluster
from .base.types import Location
from .yamlsource import SourceMap, load_yaml


@dataclass(frozen=True)
class LoadedCluster:
    cluster: Cluster
    source: SourceMap
    path: Path


def load_cluster(path: Path) -> LoadedCluster:
    """Load a cluster file and check it on its own; raise UserError listing every problem. Patches are checked
    against the objects they change, after the plan: stellwerk.manifests.load_checked does both."""
    from .validation import check_cluster  # validation imports components; keep the base load import-light

    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Problem(display, None, "", "no such file; create one with 'stellwerk init DIR'")) from None
    except IsADirectoryError:
        raise UserError(Problem(display, None, "", "is a directory; name the cluster file inside it")) from None
    except UnicodeDecodeError as exc:
        raise UserError(Problem(display, None, "", f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")) from None
    except OSError as exc:
        raise UserError(Problem(display, None, "", f"cannot read: {exc.strerror}")) from None
    cluster, source = parse_cluster(text, display)
    problems = check_cluster(cluster, source, path.parent)
    if problems:
        raise UserError(problems)
    return LoadedCluster(cluster=cluster, source=source, path=path)


def parse_cluster(text: str, file: str) -> tuple[Cluster, SourceMap]:
    data, source = load_yaml(text, file)
    if data is None:
        raise UserError(Problem(file, None, "", "the file is empty; start from 'stellwerk init DIR'"))
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise UserError(Problem(file, 1, "", f"the document is {kind}; a cluster file is a mapping with apiVersion, kind, metadata and spec"))
    try:
        return Cluster.model_validate(data), source
    except ValidationError as exc:
        raise UserError(_problems_from(exc, data, source)) from None


def _problems_from(exc: ValidationError, data: Any, source: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[Location, str]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if part != "[key]")
        message = _message(error, loc)
        if (loc, message) in seen:
            continue
        seen.add((loc, message))
        problems.append(source.problem(loc, message))
    problems.sort(key=lambda p: (p.line or 0, p.path))
    return problems


def _message(error: dict[str, Any], loc: Location) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, not {_describe(error.get('input'))}"
    if kind == "list_type":
        return f"must be a list, not {_describe(error.get('input'))}"
    if kind == "literal_error":
        return f"{error.get('input')!r} is not allowed; {error['msg'][0].lower()}{error['msg'][1:]}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return message


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def _allowed_keys(loc: Location) -> list[str]:
    model = _model_at(Cluster, loc)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(model: Any, loc: Location) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
            current = field.annotation if field else None
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    # Strip Optional[...] and Annotated[...] down to the type that holds fields.
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
