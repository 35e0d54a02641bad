"""A Butane-compatible snippet translator (variant flatcar, version 1.0.0), subset.

Users extend node configs with small Butane documents. Only the parts of
Butane's flatcar 1.0.0 spec that map one to one onto the model are accepted:
storage files, directories and links, systemd units, passwd users and groups.
Everything else is reported, not ignored, so a snippet never half-applies.
Field names follow Butane (snake_case); meanings follow Ignition 3.3.0, which is
what Butane flatcar 1.0.0 produces.

All problems in one snippet are collected and raised together as one
SnippetError, each located by a key path such as ``storage.files[0].mode``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

from stellwerk.base.problems import ProblemCollector

from .model import Config, Directory, Dropin, File, Group, Link, Unit, User, decode_data_url

VARIANT = "flatcar"
VERSION = "1.0.0"

_UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap",
    ".target", ".path", ".timer", ".snapshot", ".slice", ".scope",
)  # fmt: skip
_HASH = re.compile(r"^(sha512-[0-9a-f]{128}|sha256-[0-9a-f]{64})$")


class SnippetError(Exception):
    """One snippet with one or more problems; `problems` holds (key_path, message) pairs."""

    def __init__(self, origin: str, key_path: str | list[tuple[str, str]], message: str | None = None):
        self.origin = origin
        self.problems: list[tuple[str, str]] = (
            list(key_path) if isinstance(key_path, list) else [(key_path, message or "invalid")]
        )
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One printable line per problem: ``origin: key.path: message``."""
        return [f"{self.origin}: {path}: {msg}" if path else f"{self.origin}: {msg}" for path, msg in self.problems]


# --------------------------------------------------------------------------- checking


class _Checker(ProblemCollector):
    """Typed access to the parsed YAML that records problems instead of raising."""

    def mapping(
        self, value: Any, path: str, allowed: tuple[str, ...], hints: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """`value` as a mapping; keys outside `allowed` are problems, explained by `hints` when known."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping with keys {_names(allowed)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = (hints or {}).get(str(key))
                extra = f"; {hint}" if hint else ""
                # A key that would not survive in a dotted path is named in the message, at its parent.
                where = _join(path, str(key)) if _PLAIN_KEY.fullmatch(str(key)) else path
                self.problem(where, f"unknown key {str(key)!r}; allowed here: {_names(allowed)}{extra}")
        return value

    def string(self, obj: dict[str, Any], key: str, path: str, required: bool = False) -> str | None:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.problem(where, "is required (a string)")
            return None
        if not isinstance(value, str):
            self.problem(where, f"must be a string, got {_type_name(value)}")
            return None
        if required and not value:
            self.problem(where, "must not be empty")
            return None
        return value

    def boolean(self, obj: dict[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            self.problem(_join(path, key), f"must be true or false, got {_type_name(value)}")
            return None
        return value

    def integer(self, obj: dict[str, Any], key: str, path: str) -> int | None:
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.problem(_join(path, key), f"must be an integer, got {_type_name(value)}")
            return None
        return value

    def strings(self, obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(where, f"must be a list of strings, got {_type_name(value)}")
            return ()
        good = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                good.append(item)
            else:
                self.problem(f"{where}[{i}]", f"must be a string, got {_type_name(item)}")
        return tuple(good)

    def items(self, obj: dict[str, Any], key: str, path: str, parse: Callable[[Any, str], Any]) -> tuple[Any, ...]:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(where, f"must be a list, got {_type_name(value)}")
            return ()
        parsed = []
        for i, item in enumerate(value):
            # Every list parsed here holds mappings; a wrong entry is one problem, not many.
            if isinstance(item, dict):
                parsed.append(parse(item, f"{where}[{i}]"))
            else:
                self.problem(f"{where}[{i}]", f"must be a mapping, got {_type_name(item)}")
        return tuple(p for p in parsed if p is not None)

    def build(self, where: str, factory: Callable[..., Any], /, **kwargs: Any) -> Any:
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            self.problem(where, str(exc))
            return None


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _names(keys: tuple[str, ...]) -> str:
    return ", ".join(keys)


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}


# --------------------------------------------------------------------------- modes


def _typical_mode(mode: int) -> bool:
    """A mode one would write on purpose: readable by someone, each class a subset of the one before."""
    perms = ((mode >> 6) & 7, (mode >> 3) & 7, mode & 7)
    if mode == 0:
        return True
    if any(p not in (0, 4, 5, 6, 7) for p in perms):
        return False  # write- or execute-only permissions are rare
    return perms[0] & perms[1] == perms[1] and perms[1] & perms[2] == perms[2]


def _mode(c: _Checker, obj: dict[str, Any], path: str) -> int | None:
    value = obj.get("mode")
    where = _join(path, "mode")
    if value is None:
        return None
    if isinstance(value, str):
        hint = "write it unquoted with a leading zero, e.g. mode: 0644"
        c.problem(where, f"must be an integer, got the string {value!r}; {hint}")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        c.problem(where, f"must be an integer such as 0644, got {_type_name(value)}")
        return None
    digits = str(value)
    if 0 <= value <= 0o777 and _typical_mode(value):
        return value
    if set(digits) <= set("01234567") and len(digits) <= 4 and _typical_mode(int(digits, 8)):
        c.problem(where, f"{value} is decimal here; write 0{digits} (a leading zero makes YAML read it as octal)")
    elif not 0 <= value <= 0o777:
        c.problem(where, "must be between 0 and 0777 (Ignition 3.3.0 does not support setuid, setgid or sticky bits)")
    else:
        return value  # unusual but valid, e.g. 0200
    return None


# --------------------------------------------------------------------------- resources


def _owner(c: _Checker, obj: dict[str, Any], key: str, path: str) -> str | int | None:
    where = _join(path, key)
    owner = c.mapping(obj.get(key), where, ("id", "name"))
    uid = c.integer(owner, "id", where)
    name = c.string(owner, "name", where)
    if uid is not None and name is not None:
        c.problem(where, "set id or name, not both")
        return None
    return uid if uid is not None else name


def _verification(c: _Checker, res: dict[str, Any], path: str) -> str | None:
    where = _join(path, "verification")
    hash_ = c.string(c.mapping(res.get("verification"), where, ("hash",)), "hash", where)
    if hash_ is not None and not _HASH.match(hash_):
        c.problem(_join(where, "hash"), "must be sha512-<128 hex digits> or sha256-<64 hex digits>")
        return None
    return hash_


def _check_inline_hash(c: _Checker, data: bytes, hash_: str | None, path: str) -> None:
    # Inline bytes are known now, so a wrong hash is reported now, not at boot.
    if hash_ is None:
        return
    algorithm, _, expected = hash_.partition("-")
    if hashlib.new(algorithm, data).hexdigest() != expected:
        c.problem(_join(path, "verification.hash"), "does not match the inline contents")


_RESOURCE_HINTS = {"local": "local files are not read in snippets: put the text in inline"}


def _contents(c: _Checker, obj: dict[str, Any], path: str) -> dict[str, Any]:
    """File keyword arguments from a Butane `contents` resource."""
    where = _join(path, "contents")
    res = c.mapping(obj.get("contents"), where, ("inline", "source", "compression", "verification"), _RESOURCE_HINTS)
    inline = c.string(res, "inline", where)
    source = c.string(res, "source", where)
    compression = c.string(res, "compression", where)
    verification = _verification(c, res, where)
    if inline is not None and source is not None:
        c.problem(where, "set inline or source, not both")
        return {}
    if compression not in (None, "", "gzip"):
        c.problem(_join(where, "compression"), "must be gzip or empty")
    if inline is not None:
        if compression:
            c.problem(_join(where, "compression"), "applies to source only; inline text is never compressed")
        data = inline.encode("utf-8")
        _check_inline_hash(c, data, verification, where)
        return {"contents": data, "verification": verification}
    if source is not None:
        return {"source": source, "compression": compression or None, "verification": verification}
    return {}


def _append_item(c: _Checker, value: Any, path: str) -> bytes | None:
    res = c.mapping(value, path, ("inline", "source", "compression", "verification"), _RESOURCE_HINTS)
    inline = c.string(res, "inline", path)
    source = c.string(res, "source", path)
    verification = _verification(c, res, path)
    if res.get("compression"):
        c.problem(_join(path, "compression"), "is not supported for appended fragments; append plain text")
    if (inline is None) == (source is None):
        c.problem(path, "set exactly one of inline or source")
        return None
    if inline is not None:
        data = inline.encode("utf-8")
    else:
        # The model holds appended fragments as bytes, so only data: URLs fit.
        try:
            data = decode_data_url(source or "")
        except ValueError:
            c.problem(_join(path, "source"), "only data: URLs can be appended here; use inline for text")
            return None
    _check_inline_hash(c, data, verification, path)
    return data


# --------------------------------------------------------------------------- storage


_NODE_KEYS = ("path", "overwrite", "user", "group")


def _node(c: _Checker, obj: dict[str, Any], path: str) -> dict[str, Any]:
    node_path = c.string(obj, "path", path, required=True)
    if node_path is not None and not node_path.startswith("/"):
        c.problem(_join(path, "path"), f"must be an absolute path, got {node_path!r}")
        node_path = None
    return {
        "path": node_path,
        "overwrite": c.boolean(obj, "overwrite", path),
        "user": _owner(c, obj, "user", path),
        "group": _owner(c, obj, "group", path),
    }


def _file(c: _Checker, value: Any, path: str) -> File | None:
    obj = c.mapping(value, path, (*_NODE_KEYS, "contents", "append", "mode"))
    kwargs = _node(c, obj, path)
    kwargs.update(_contents(c, obj, path))
    kwargs["append"] = c.items(obj, "append", path, lambda v, p: _append_item(c, v, p))
    # Absent fields stay None, as Butane leaves them out of the Ignition JSON
    # (Ignition then uses 0644, no overwrite); the model's defaults are for templates.
    kwargs["mode"] = _mode(c, obj, path)
    if kwargs["overwrite"] and "contents" not in kwargs and "source" not in kwargs:
        c.problem(_join(path, "overwrite"), "true needs contents (inline or source)")
        return None
    return c.build(path, File, **kwargs) if kwargs["path"] else None


def _directory(c: _Checker, value: Any, path: str) -> Directory | None:
    obj = c.mapping(value, path, (*_NODE_KEYS, "mode"))
    kwargs = _node(c, obj, path)
    kwargs["mode"] = _mode(c, obj, path)
    return c.build(path, Directory, **kwargs) if kwargs["path"] else None


def _link(c: _Checker, value: Any, path: str) -> Link | None:
    obj = c.mapping(value, path, (*_NODE_KEYS, "target", "hard"))
    kwargs = _node(c, obj, path)
    kwargs["target"] = c.string(obj, "target", path, required=True)
    kwargs["hard"] = c.boolean(obj, "hard", path)
    return c.build(path, Link, **kwargs) if kwargs["path"] and kwargs["target"] else None


# --------------------------------------------------------------------------- systemd and passwd


def _dropin(c: _Checker, value: Any, path: str) -> Dropin | None:
    obj = c.mapping(value, path, ("name", "contents"))
    name = c.string(obj, "name", path, required=True)
    contents = c.string(obj, "contents", path)
    if name is not None and not name.endswith(".conf"):
        c.problem(_join(path, "name"), f"must end in .conf, got {name!r}")
        return None
    return Dropin(name=name, contents=contents) if name else None


def _unit(c: _Checker, value: Any, path: str) -> Unit | None:
    obj = c.mapping(value, path, ("name", "enabled", "mask", "contents", "dropins"))
    name = c.string(obj, "name", path, required=True)
    if name is not None and not name.endswith(_UNIT_SUFFIXES):
        c.problem(_join(path, "name"), f"must end in a unit type such as .service or .timer, got {name!r}")
        name = None
    kwargs = {
        "enabled": c.boolean(obj, "enabled", path),
        "mask": c.boolean(obj, "mask", path),
        "contents": c.string(obj, "contents", path),
        "dropins": c.items(obj, "dropins", path, lambda v, p: _dropin(c, v, p)),
    }
    return c.build(path, Unit, name=name, **kwargs) if name else None


_USER_FIELDS: tuple[tuple[str, str], ...] = (
    ("password_hash", "string"),
    ("uid", "integer"),
    ("gecos", "string"),
    ("home_dir", "string"),
    ("no_create_home", "boolean"),
    ("primary_group", "string"),
    ("no_user_group", "boolean"),
    ("shell", "string"),
    ("system", "boolean"),
)


def _user(c: _Checker, value: Any, path: str) -> User | None:
    keys = ("name", "ssh_authorized_keys", "groups", *(k for k, _ in _USER_FIELDS))
    obj = c.mapping(value, path, keys)
    name = c.string(obj, "name", path, required=True)
    kwargs: dict[str, Any] = {k: getattr(c, kind)(obj, k, path) for k, kind in _USER_FIELDS}
    keys_ = c.strings(obj, "ssh_authorized_keys", path)
    if len(set(keys_)) != len(keys_):
        c.problem(_join(path, "ssh_authorized_keys"), "every key must be unique")
    kwargs["ssh_authorized_keys"] = keys_
    kwargs["groups"] = c.strings(obj, "groups", path)
    return c.build(path, User, name=name, **kwargs) if name else None


def _group(c: _Checker, value: Any, path: str) -> Group | None:
    obj = c.mapping(value, path, ("name", "gid", "password_hash", "system"))
    name = c.string(obj, "name", path, required=True)
    kwargs = {
        "gid": c.integer(obj, "gid", path),
        "password_hash": c.string(obj, "password_hash", path),
        "system": c.boolean(obj, "system", path),
    }
    return c.build(path, Group, name=name, **kwargs) if name else None


# --------------------------------------------------------------------------- document


# Butane keys outside the subset, with the reason they are left out.
_NOT_IN_SNIPPETS = {
    "ignition": "stellwerk writes the ignition section itself",
    "kernel_arguments": "kernel arguments are not supported in snippets",
    "disks": "disks come from storage components (node fragments), not snippets",
    "raid": "RAID comes from storage components (node fragments), not snippets",
    "filesystems": "filesystems come from storage components (node fragments), not snippets",
    "luks": "LUKS is not supported",
    "trees": "local trees are not read in snippets",
}


def _header(c: _Checker, doc: dict[str, Any]) -> None:
    for key, expected in (("variant", VARIANT), ("version", VERSION)):
        if key in doc and doc[key] != expected:
            c.problem(key, f"must be {expected!r} (Butane {VARIANT} {VERSION}), got {doc[key]!r}")


def translate(doc: object, origin: str) -> Config:
    """Translate one parsed Butane snippet to a Config, or raise SnippetError listing every problem."""
    c = _Checker()
    root = c.mapping(doc, "", ("variant", "version", "storage", "systemd", "passwd"), _NOT_IN_SNIPPETS)
    if doc is None:
        c.problem("", "a snippet must be a mapping with storage, systemd or passwd")
    _header(c, root)
    storage = c.mapping(root.get("storage"), "storage", ("files", "directories", "links"), _NOT_IN_SNIPPETS)
    systemd = c.mapping(root.get("systemd"), "systemd", ("units",))
    passwd = c.mapping(root.get("passwd"), "passwd", ("users", "groups"))
    config = Config(
        files=c.items(storage, "files", "storage", lambda v, p: _file(c, v, p)),
        directories=c.items(storage, "directories", "storage", lambda v, p: _directory(c, v, p)),
        links=c.items(storage, "links", "storage", lambda v, p: _link(c, v, p)),
        units=c.items(systemd, "units", "systemd", lambda v, p: _unit(c, v, p)),
        users=c.items(passwd, "users", "passwd", lambda v, p: _user(c, v, p)),
        groups=c.items(passwd, "groups", "passwd", lambda v, p: _group(c, v, p)),
    )
    if c.problems:
        raise SnippetError(origin, c.problems)
    return config
