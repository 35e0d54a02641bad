"""The Ignition 3.3.0 config as immutable Python data, with deterministic JSON.

Only the part of the spec that Stellwerk writes is modelled: files, directories,
links, systemd units, users, groups, disks, RAID, filesystems, config merge and
replace, extra TLS CAs and kernel arguments. Everything is a frozen dataclass
holding tuples, so one `File` (say, a CA certificate) can be shared by a thousand
node configs without copying.

Optional fields use ``None`` for "not set": `to_dict` leaves them out, so the JSON
only says what the config means to say, and `merge` can tell "not set" from
"set to a default".
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

from stellwerk.base.problems import ProblemCollector

IGNITION_VERSION = "3.3.0"

Owner = str | int | None


# --------------------------------------------------------------------------- data model


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else tuple(value)


def _set(obj: object, name: str, value: object) -> None:
    # Frozen dataclasses still need normalising in __post_init__.
    object.__setattr__(obj, name, value)


def _check_path(path: str, what: str) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{what} path must be an absolute path, got {path!r}")


def _check_mode(mode: int | None, what: str) -> None:
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"{what} mode must be an int between 0 and 0o7777, got {mode!r}")


def _check_owner(owner: Owner, what: str) -> None:
    # bool is an int subclass; True as a uid is always a bug.
    if owner is not None and (isinstance(owner, bool) or not isinstance(owner, (str, int))):
        raise TypeError(f"{what} must be a user/group name (str) or id (int), got {owner!r}")


def _as_bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # convenience for templates; stored as UTF-8
        return value.encode("utf-8")
    raise TypeError(f"{what} must be bytes, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class File:
    """A regular file. `contents` becomes a data: URL; `source` is any URL used as-is."""

    path: str
    # Contents are often private keys: keep them out of reprs, tracebacks and test diffs.
    contents: bytes | None = field(default=None, repr=False)
    source: str | None = field(default=None, repr=False)
    mode: int | None = 0o644
    user: Owner = None
    group: Owner = None
    overwrite: bool | None = True
    verification: str | None = None
    compression: str | None = None
    append: tuple[bytes, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _check_path(self.path, "file")
        _check_mode(self.mode, f"file {self.path}")
        _check_owner(self.user, f"file {self.path} user")
        _check_owner(self.group, f"file {self.path} group")
        if self.contents is not None and self.source is not None:
            raise ValueError(f"file {self.path}: set contents or source, not both")
        if self.contents is not None:
            _set(self, "contents", _as_bytes(self.contents, f"file {self.path} contents"))
        elif self.source is None and self.overwrite:
            # Ignition rejects overwrite without a source; an overwritten file
            # without contents can only mean "an empty file", so say that.
            _set(self, "contents", b"")
        _set(self, "append", tuple(_as_bytes(a, f"file {self.path} append") for a in self.append))


@dataclass(frozen=True, slots=True)
class Directory:
    path: str
    mode: int | None = 0o755
    user: Owner = None
    group: Owner = None
    overwrite: bool | None = None

    def __post_init__(self) -> None:
        _check_path(self.path, "directory")
        _check_mode(self.mode, f"directory {self.path}")
        _check_owner(self.user, f"directory {self.path} user")
        _check_owner(self.group, f"directory {self.path} group")


@dataclass(frozen=True, slots=True)
class Link:
    path: str
    target: str
    hard: bool | None = None
    overwrite: bool | None = True
    user: Owner = None
    group: Owner = None

    def __post_init__(self) -> None:
        _check_path(self.path, "link")
        if not isinstance(self.target, str) or not self.target:
            raise ValueError(f"link {self.path}: target must be a non-empty string")
        _check_owner(self.user, f"link {self.path} user")
        _check_owner(self.group, f"link {self.path} group")


@dataclass(frozen=True, slots=True)
class Dropin:
    name: str
    contents: str | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    contents: str | None = None
    enabled: bool | None = None
    mask: bool | None = None
    dropins: tuple[Dropin, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("unit name must not be empty")
        _set(self, "dropins", _tuple(self.dropins))


@dataclass(frozen=True, slots=True)
class User:
    name: str
    ssh_authorized_keys: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    password_hash: str | None = None
    uid: int | None = None
    gecos: str | None = None
    home_dir: str | None = None
    no_create_home: bool | None = None
    primary_group: str | None = None
    no_user_group: bool | None = None
    shell: str | None = None
    system: bool | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("user name must not be empty")
        _set(self, "ssh_authorized_keys", _tuple(self.ssh_authorized_keys))
        _set(self, "groups", _tuple(self.groups))


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    gid: int | None = None
    password_hash: str | None = None
    system: bool | None = None


@dataclass(frozen=True, slots=True)
class Partition:
    number: int = 0
    label: str | None = None
    size_mib: int | None = None
    start_mib: int | None = None
    type_guid: str | None = None
    guid: str | None = None
    wipe_partition_entry: bool | None = None
    should_exist: bool | None = None
    resize: bool | None = None


@dataclass(frozen=True, slots=True)
class Disk:
    device: str
    wipe_table: bool | None = None
    partitions: tuple[Partition, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "partitions", _tuple(self.partitions))


@dataclass(frozen=True, slots=True)
class Raid:
    name: str
    level: str
    devices: tuple[str, ...]
    spares: int | None = None
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "devices", _tuple(self.devices))
        _set(self, "options", _tuple(self.options))


@dataclass(frozen=True, slots=True)
class Filesystem:
    device: str
    format: str
    path: str | None = None
    wipe_filesystem: bool | None = None
    label: str | None = None
    uuid: str | None = None
    options: tuple[str, ...] = ()
    mount_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "options", _tuple(self.options))
        _set(self, "mount_options", _tuple(self.mount_options))


@dataclass(frozen=True, slots=True)
class ConfigReference:
    """A config (ignition.config.merge/replace) or CA bundle fetched by URL."""

    source: str
    verification: str | None = None


_CONFIG_ITEM_TYPES: dict[str, type] = {
    "files": File,
    "directories": Directory,
    "links": Link,
    "units": Unit,
    "users": User,
    "groups": Group,
    "disks": Disk,
    "raid": Raid,
    "filesystems": Filesystem,
    "merge": ConfigReference,
    "certificate_authorities": ConfigReference,
    "kernel_arguments_should_exist": str,
    "kernel_arguments_should_not_exist": str,
}


@dataclass(frozen=True, slots=True)
class Config:
    files: tuple[File, ...] = ()
    directories: tuple[Directory, ...] = ()
    links: tuple[Link, ...] = ()
    units: tuple[Unit, ...] = ()
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    disks: tuple[Disk, ...] = ()
    raid: tuple[Raid, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    merge: tuple[ConfigReference, ...] = ()
    replace: ConfigReference | None = None
    certificate_authorities: tuple[ConfigReference, ...] = ()
    kernel_arguments_should_exist: tuple[str, ...] = ()
    kernel_arguments_should_not_exist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A Directory in `files` would serialise silently into nonsense; catch
        # template mistakes where they are made.
        for name, item_type in _CONFIG_ITEM_TYPES.items():
            items = _tuple(getattr(self, name))
            for item in items:
                if not isinstance(item, item_type):
                    raise TypeError(f"Config.{name} takes {item_type.__name__} items, got {type(item).__name__}")
            _set(self, name, items)
        if self.replace is not None and not isinstance(self.replace, ConfigReference):
            raise TypeError(f"Config.replace takes a ConfigReference, got {type(self.replace).__name__}")


# --------------------------------------------------------------------------- data URLs

# RFC 2396 unreserved characters beyond letters and digits; everything else is
# %-escaped, as Butane does, so Go's url.Parse (used by Ignition) round-trips it.
_URL_SAFE = "-_.!~*'()"
# byte -> itself or %XX; str.translate over latin-1 runs in C, unlike urllib's quote
_PERCENT = {
    b: chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in _URL_SAFE) else f"%{b:02X}" for b in range(256)
}
# Control characters other than tab, newline and carriage return make a text
# unreadable in JSON and YAML anyway, so such bytes go to base64.
_NON_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


_READABLE_LIMIT = 4096


def is_text(data: bytes) -> bool:
    """True when `data` is UTF-8 text without control characters (tab and newlines allowed)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _NON_TEXT.search(text) is None


@lru_cache(maxsize=1024)
def data_url(data: bytes) -> str:
    """Percent-encoded data URL for text, base64 for anything else.

    Cached because a cluster's node configs share many files (CA certificates,
    units); bytes cache their own hash, so a hit costs no re-hashing.
    """
    # Percent-encoding keeps small files readable in the JSON; past a few KiB
    # nobody reads them there, and base64 is several times cheaper to produce.
    if len(data) <= _READABLE_LIMIT and is_text(data):
        return "data:," + data.decode("latin-1").translate(_PERCENT)
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def decode_data_url(url: str) -> bytes:
    """Bytes of an RFC 2397 data URL; raises ValueError when `url` is not one."""
    if not url.startswith("data:") or "," not in url:
        raise ValueError(f"not a data URL: {url[:40]!r}")
    header, payload = url[5:].split(",", 1)
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(unquote_to_bytes(payload), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 in data URL: {exc}") from None
    return unquote_to_bytes(payload)


def file_contents(file: File) -> bytes:
    """The bytes Ignition leaves at `file.path` (contents, decompressed, then every append).

    Raises ValueError for a remote `source`, whose bytes are only known at boot.
    """
    if file.contents is not None:
        body = file.contents
    elif file.source is not None:
        if not file.source.startswith("data:"):
            raise ValueError(f"file {file.path}: contents come from {file.source} and are unknown until boot")
        body = decode_data_url(file.source)
    else:
        body = b""
    if file.compression == "gzip":
        body = gzip.decompress(body)
    return body + b"".join(file.append)


# --------------------------------------------------------------------------- to_dict / dumps


def _owner_dict(owner: Owner) -> dict[str, Any] | None:
    if owner is None:
        return None
    return {"id": owner} if isinstance(owner, int) else {"name": owner}


def _compact(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A dict of the pairs whose value is set: not None and not an empty collection."""
    return {k: v for k, v in pairs if v is not None and v != () and v != [] and v != {}}


def _verification(hash_: str | None) -> dict[str, str] | None:
    return {"hash": hash_} if hash_ is not None else None


def _resource(source: str | None, compression: str | None, verification: str | None) -> dict[str, Any]:
    return _compact((("compression", compression), ("source", source), ("verification", _verification(verification))))


def _file_dict(f: File) -> dict[str, Any]:
    source = data_url(f.contents) if f.contents is not None else f.source
    return _compact(
        (
            ("path", f.path),
            ("overwrite", f.overwrite),
            ("contents", _resource(source, f.compression, f.verification)),
            ("append", [{"source": data_url(a)} for a in f.append]),
            ("mode", f.mode),
            ("user", _owner_dict(f.user)),
            ("group", _owner_dict(f.group)),
        )
    )


def _directory_dict(d: Directory) -> dict[str, Any]:
    return _compact(
        (
            ("path", d.path),
            ("overwrite", d.overwrite),
            ("mode", d.mode),
            ("user", _owner_dict(d.user)),
            ("group", _owner_dict(d.group)),
        )
    )


def _link_dict(link: Link) -> dict[str, Any]:
    return _compact(
        (
            ("path", link.path),
            ("overwrite", link.overwrite),
            ("target", link.target),
            ("hard", link.hard),
            ("user", _owner_dict(link.user)),
            ("group", _owner_dict(link.group)),
        )
    )


def _unit_dict(u: Unit) -> dict[str, Any]:
    dropins = [_compact((("name", d.name), ("contents", d.contents))) for d in u.dropins]
    return _compact(
        (("name", u.name), ("enabled", u.enabled), ("mask", u.mask), ("contents", u.contents), ("dropins", dropins))
    )


def _ref_dict(ref: ConfigReference) -> dict[str, Any]:
    return _resource(ref.source, None, ref.verification)


# Plain records map attribute -> JSON key one to one; the tables drive both
# to_dict and loads so the two cannot drift apart. STRINGS marks list fields.
STRINGS = "strings"
_USER_KEYS = (
    ("name", "name", str),
    ("password_hash", "passwordHash", str),
    ("ssh_authorized_keys", "sshAuthorizedKeys", STRINGS),
    ("uid", "uid", int),
    ("gecos", "gecos", str),
    ("home_dir", "homeDir", str),
    ("no_create_home", "noCreateHome", bool),
    ("primary_group", "primaryGroup", str),
    ("groups", "groups", STRINGS),
    ("no_user_group", "noUserGroup", bool),
    ("shell", "shell", str),
    ("system", "system", bool),
)
_GROUP_KEYS = (
    ("name", "name", str),
    ("gid", "gid", int),
    ("password_hash", "passwordHash", str),
    ("system", "system", bool),
)
_PARTITION_KEYS = (
    ("label", "label", str),
    ("number", "number", int),
    ("size_mib", "sizeMiB", int),
    ("start_mib", "startMiB", int),
    ("type_guid", "typeGuid", str),
    ("guid", "guid", str),
    ("wipe_partition_entry", "wipePartitionEntry", bool),
    ("should_exist", "shouldExist", bool),
    ("resize", "resize", bool),
)
_RAID_KEYS = (
    ("name", "name", str),
    ("level", "level", str),
    ("devices", "devices", STRINGS),
    ("spares", "spares", int),
    ("options", "options", STRINGS),
)
_FILESYSTEM_KEYS = (
    ("device", "device", str),
    ("format", "format", str),
    ("path", "path", str),
    ("wipe_filesystem", "wipeFilesystem", bool),
    ("label", "label", str),
    ("uuid", "uuid", str),
    ("options", "options", STRINGS),
    ("mount_options", "mountOptions", STRINGS),
)
# JSON keys that must be present for the record to mean anything.
_REQUIRED = {
    User: ("name",),
    Group: ("name",),
    Partition: (),
    Raid: ("name", "level", "devices"),
    Filesystem: ("device", "format"),
}

RecordKeys = tuple[tuple[str, str, Any], ...]


def _record_dict(obj: object, keys: RecordKeys) -> dict[str, Any]:
    return _compact((key, _json_value(getattr(obj, attr))) for attr, key, _ in keys)


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _partition_dict(p: Partition) -> dict[str, Any]:
    d = _record_dict(p, _PARTITION_KEYS)
    if d.get("number") == 0:  # 0 means "next free slot", which is also what absence means
        del d["number"]
    return d


def _disk_dict(d: Disk) -> dict[str, Any]:
    return _compact(
        (("device", d.device), ("wipeTable", d.wipe_table), ("partitions", [_partition_dict(p) for p in d.partitions]))
    )


def to_dict(config: Config) -> dict[str, Any]:
    """The Ignition 3.3.0 JSON structure of `config`, with unset fields left out."""
    ignition: dict[str, Any] = {"version": IGNITION_VERSION}
    ignition_config = _compact(
        (
            ("merge", [_ref_dict(r) for r in config.merge]),
            ("replace", _ref_dict(config.replace) if config.replace else None),
        )
    )
    if ignition_config:
        ignition["config"] = ignition_config
    if config.certificate_authorities:
        cas = [_ref_dict(r) for r in config.certificate_authorities]
        ignition["security"] = {"tls": {"certificateAuthorities": cas}}
    storage = _compact(
        (
            ("disks", [_disk_dict(d) for d in config.disks]),
            ("raid", [_record_dict(r, _RAID_KEYS) for r in config.raid]),
            ("filesystems", [_record_dict(f, _FILESYSTEM_KEYS) for f in config.filesystems]),
            ("files", [_file_dict(f) for f in config.files]),
            ("directories", [_directory_dict(d) for d in config.directories]),
            ("links", [_link_dict(link) for link in config.links]),
        )
    )
    return _compact(
        (
            ("ignition", ignition),
            (
                "kernelArguments",
                _compact(
                    (
                        ("shouldExist", list(config.kernel_arguments_should_exist)),
                        ("shouldNotExist", list(config.kernel_arguments_should_not_exist)),
                    )
                ),
            ),
            (
                "passwd",
                _compact(
                    (
                        ("users", [_record_dict(u, _USER_KEYS) for u in config.users]),
                        ("groups", [_record_dict(g, _GROUP_KEYS) for g in config.groups]),
                    )
                ),
            ),
            ("storage", storage),
            ("systemd", _compact((("units", [_unit_dict(u) for u in config.units]),))),
        )
    )


def dumps(config: Config) -> bytes:
    """Deterministic JSON: fixed key order, compact, UTF-8, trailing newline.

    Compact because Python's indenting encoder is pure Python and several times
    slower than the C one; `jq .` shows a config indented.
    """
    return (json.dumps(to_dict(config), ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- loads


class ConfigParseError(ValueError):
    """An Ignition JSON document that this model cannot represent faithfully.

    `problems` holds (json_path, message) pairs, one per problem found.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" if path else message for path, message in problems))


class _Reader(ProblemCollector):
    """Walks parsed JSON, converting values and collecting every problem with its path."""

    def obj(self, value: Any, path: str, allowed: Iterable[str]) -> dict[str, Any]:
        """`value` as an object; unknown keys are reported, null means empty."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, "must be an object")
            return {}
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                supported = ", ".join(allowed)
                self.problem(_join(path, key), f"not supported by stellwerk's model (supported here: {supported})")
        return value

    def scalar(self, value: Any, path: str, kind: type) -> Any:
        if value is None:
            return None
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.problem(path, f"must be {_KIND_NAMES[kind]}")
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(path, "must be a list of strings")
            return ()
        return tuple(v for i, v in enumerate(value) if self.scalar(v, f"{path}[{i}]", str) is not None)

    def items(self, value: Any, path: str, parse: Callable[[Any, str], Any]) -> tuple[Any, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(path, "must be a list")
            return ()
        parsed = (parse(v, f"{path}[{i}]") for i, v in enumerate(value))
        return tuple(p for p in parsed if p is not None)

    def required(self, obj: dict[str, Any], key: str, path: str, kind: type) -> Any:
        value = self.scalar(obj.get(key), _join(path, key), kind)
        if obj.get(key) is None:
            self.problem(_join(path, key), "is required")
        return value

    def build(self, where: str, factory: Callable[..., Any], /, **kwargs: Any) -> Any:
        try:
            return factory(**kwargs)
        except (TypeError, ValueError) as exc:
            self.problem(where, str(exc))
            return None


_KIND_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _record(r: _Reader, value: Any, path: str, cls: type, keys: RecordKeys) -> Any:
    obj = r.obj(value, path, (key for _, key, _ in keys))
    missing = [key for key in _REQUIRED[cls] if obj.get(key) is None]
    for key in missing:
        r.problem(_join(path, key), "is required")
    kwargs: dict[str, Any] = {}
    for attr, key, kind in keys:
        if obj.get(key) is None:
            continue
        if kind == STRINGS:
            kwargs[attr] = r.strings(obj[key], _join(path, key))
        else:
            kwargs[attr] = r.scalar(obj[key], _join(path, key), kind)
    return None if missing else r.build(path, cls, **kwargs)


def _owner(r: _Reader, value: Any, path: str) -> Owner:
    obj = r.obj(value, path, ("id", "name"))
    uid = r.scalar(obj.get("id"), _join(path, "id"), int)
    name = r.scalar(obj.get("name"), _join(path, "name"), str)
    if uid is not None and name:
        r.problem(path, "set id or name, not both")
    return uid if uid is not None else name


def _hash(r: _Reader, value: Any, path: str) -> str | None:
    return r.scalar(r.obj(value, path, ("hash",)).get("hash"), _join(path, "hash"), str)


def _contents(r: _Reader, value: Any, path: str) -> dict[str, Any]:
    """Keyword arguments for File from an Ignition resource; data URLs become bytes."""
    obj = r.obj(value, path, ("source", "compression", "verification"))
    source = r.scalar(obj.get("source"), _join(path, "source"), str)
    kwargs: dict[str, Any] = {
        "compression": r.scalar(obj.get("compression"), _join(path, "compression"), str),
        "verification": _hash(r, obj.get("verification"), _join(path, "verification")),
    }
    if source is not None and source.startswith("data:"):
        try:
            kwargs["contents"] = decode_data_url(source)
        except ValueError as exc:
            r.problem(_join(path, "source"), str(exc))
    else:
        kwargs["source"] = source
    return kwargs


def _append(r: _Reader, value: Any, path: str) -> bytes | None:
    obj = r.obj(value, path, ("source",))
    source = r.scalar(obj.get("source"), _join(path, "source"), str)
    if source is None or not source.startswith("data:"):
        r.problem(_join(path, "source"), "stellwerk's model keeps appended fragments inline: must be a data: URL")
        return None
    try:
        return decode_data_url(source)
    except ValueError as exc:
        r.problem(_join(path, "source"), str(exc))
        return None


_NODE_KEYS = ("path", "overwrite", "user", "group")


def _node_kwargs(r: _Reader, obj: dict[str, Any], path: str) -> dict[str, Any]:
    return {
        "path": r.required(obj, "path", path, str),
        "overwrite": r.scalar(obj.get("overwrite"), _join(path, "overwrite"), bool),
        "user": _owner(r, obj.get("user"), _join(path, "user")),
        "group": _owner(r, obj.get("group"), _join(path, "group")),
    }


def _file(r: _Reader, value: Any, path: str) -> File | None:
    obj = r.obj(value, path, (*_NODE_KEYS, "contents", "append", "mode"))
    kwargs = _node_kwargs(r, obj, path)
    kwargs.update(_contents(r, obj.get("contents"), _join(path, "contents")))
    kwargs["append"] = r.items(obj.get("append"), _join(path, "append"), lambda v, p: _append(r, v, p))
    kwargs["mode"] = r.scalar(obj.get("mode"), _join(path, "mode"), int)
    return r.build(path, File, **kwargs) if kwargs["path"] else None


def _directory(r: _Reader, value: Any, path: str) -> Directory | None:
    obj = r.obj(value, path, (*_NODE_KEYS, "mode"))
    kwargs = _node_kwargs(r, obj, path)
    kwargs["mode"] = r.scalar(obj.get("mode"), _join(path, "mode"), int)
    return r.build(path, Directory, **kwargs) if kwargs["path"] else None


def _link(r: _Reader, value: Any, path: str) -> Link | None:
    obj = r.obj(value, path, (*_NODE_KEYS, "target", "hard"))
    kwargs = _node_kwargs(r, obj, path)
    kwargs["target"] = r.required(obj, "target", path, str)
    kwargs["hard"] = r.scalar(obj.get("hard"), _join(path, "hard"), bool)
    return r.build(path, Link, **kwargs) if kwargs["path"] and kwargs["target"] else None


def _dropin(r: _Reader, value: Any, path: str) -> Dropin | None:
    obj = r.obj(value, path, ("name", "contents"))
    name = r.required(obj, "name", path, str)
    contents = r.scalar(obj.get("contents"), _join(path, "contents"), str)
    return Dropin(name=name, contents=contents) if name else None


def _unit(r: _Reader, value: Any, path: str) -> Unit | None:
    obj = r.obj(value, path, ("name", "enabled", "mask", "contents", "dropins"))
    name = r.required(obj, "name", path, str)
    kwargs = {
        "enabled": r.scalar(obj.get("enabled"), _join(path, "enabled"), bool),
        "mask": r.scalar(obj.get("mask"), _join(path, "mask"), bool),
        "contents": r.scalar(obj.get("contents"), _join(path, "contents"), str),
        "dropins": r.items(obj.get("dropins"), _join(path, "dropins"), lambda v, p: _dropin(r, v, p)),
    }
    return r.build(path, Unit, name=name, **kwargs) if name else None


def _disk(r: _Reader, value: Any, path: str) -> Disk | None:
    obj = r.obj(value, path, ("device", "wipeTable", "partitions"))
    device = r.required(obj, "device", path, str)
    wipe = r.scalar(obj.get("wipeTable"), _join(path, "wipeTable"), bool)
    partitions = r.items(
        obj.get("partitions"), _join(path, "partitions"), lambda v, p: _record(r, v, p, Partition, _PARTITION_KEYS)
    )
    return Disk(device=device, wipe_table=wipe, partitions=partitions) if device else None


def _reference(r: _Reader, value: Any, path: str) -> ConfigReference | None:
    obj = r.obj(value, path, ("source", "verification"))
    if not obj:
        return None  # Ignition itself writes empty replace objects
    source = r.required(obj, "source", path, str)
    verification = _hash(r, obj.get("verification"), _join(path, "verification"))
    return ConfigReference(source=source, verification=verification) if source else None


def _ignition(r: _Reader, value: Any, path: str) -> dict[str, Any]:
    obj = r.obj(value, path, ("version", "config", "security"))
    version = obj.get("version")
    if version != IGNITION_VERSION:
        r.problem(_join(path, "version"), f"must be {IGNITION_VERSION!r}, got {version!r}")
    cfg = r.obj(obj.get("config"), _join(path, "config"), ("merge", "replace"))
    security = r.obj(obj.get("security"), _join(path, "security"), ("tls",))
    tls = r.obj(security.get("tls"), f"{path}.security.tls", ("certificateAuthorities",))

    def reference(value: Any, where: str) -> ConfigReference | None:
        return _reference(r, value, where)

    return {
        "merge": r.items(cfg.get("merge"), f"{path}.config.merge", reference),
        "replace": reference(cfg.get("replace"), f"{path}.config.replace"),
        "certificate_authorities": r.items(
            tls.get("certificateAuthorities"), f"{path}.security.tls.certificateAuthorities", reference
        ),
    }


def loads(data: bytes | str) -> Config:
    """Parse Ignition 3.3.0 JSON; raises ConfigParseError listing everything the model cannot hold."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigParseError([("", f"not JSON: {exc}")]) from None
    r = _Reader()
    root = r.obj(doc, "", ("ignition", "kernelArguments", "passwd", "storage", "systemd"))
    if "ignition" not in root:
        r.problem("ignition", "is required")
    kwargs = _ignition(r, root.get("ignition"), "ignition")
    kargs = r.obj(root.get("kernelArguments"), "kernelArguments", ("shouldExist", "shouldNotExist"))
    for attr, key in (("kernel_arguments_should_exist", "shouldExist"), ("kernel_arguments_should_not_exist", "shouldNotExist")):
        kwargs[attr] = r.strings(kargs.get(key), f"kernelArguments.{key}")
    passwd = r.obj(root.get("passwd"), "passwd", ("users", "groups"))
    kwargs["users"] = r.items(passwd.get("users"), "passwd.users", lambda v, p: _record(r, v, p, User, _USER_KEYS))
    kwargs["groups"] = r.items(passwd.get("groups"), "passwd.groups", lambda v, p: _record(r, v, p, Group, _GROUP_KEYS))
    storage = r.obj(root.get("storage"), "storage", ("disks", "raid", "filesystems", "files", "directories", "links"))
    kwargs["disks"] = r.items(storage.get("disks"), "storage.disks", lambda v, p: _disk(r, v, p))
    kwargs["raid"] = r.items(storage.get("raid"), "storage.raid", lambda v, p: _record(r, v, p, Raid, _RAID_KEYS))
    kwargs["filesystems"] = r.items(
        storage.get("filesystems"), "storage.filesystems", lambda v, p: _record(r, v, p, Filesystem, _FILESYSTEM_KEYS)
    )
    kwargs["files"] = r.items(storage.get("files"), "storage.files", lambda v, p: _file(r, v, p))
    kwargs["directories"] = r.items(storage.get("directories"), "storage.directories", lambda v, p: _directory(r, v, p))
    kwargs["links"] = r.items(storage.get("links"), "storage.links", lambda v, p: _link(r, v, p))
    systemd = r.obj(root.get("systemd"), "systemd", ("units",))
    kwargs["units"] = r.items(systemd.get("units"), "systemd.units", lambda v, p: _unit(r, v, p))
    if r.problems:
        raise ConfigParseError(r.problems)
    return Config(**kwargs)
