"""The machine store: the groups and profiles under ASSETS/netboot, and the choice of one group for a machine.

A profile says how to boot (kernel, initrds, kernel arguments, which kind of config the OS reads). A group ties
machines to a profile through its selector, a set of labels that must all be present with the same values, and
carries metadata; `metadata.node` names the node whose rendered config the machine receives.

Selection rules, all checked when the store is loaded so that serving never meets an ambiguity:

- a group matches a machine when every key of its selector is among the machine's labels with the same value;
- of the matching groups, the one with the most selector keys wins; a group with an empty selector is a default
  group and matches every machine;
- two groups with the same number of selector keys that agree on every key they share can both match one machine
  (the machine that carries both selectors' labels) and neither is more specific: the store refuses to load. Two
  default groups are the simplest case of this. Because of this rule the winner is always unique.

Label values are normalized before they are compared: a MAC in any common spelling becomes `aa:bb:cc:dd:ee:ff`,
a UUID its lower-case canonical form, a hostname lower case. Everything else is compared as written.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from stellwerk.base.errors import Problem, UserError
from stellwerk.base.problems import ProblemCollector

from .documents import CONFIG_FILES, Group, Profile

# Kernel arguments that netboot appends itself; a profile that sets them would boot with two conflicting values.
RESERVED_ARGS = ("ignition.config.url=", "ds=", "initrd=")

MAX_LABEL_VALUE = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LABEL_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_NODE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MAC_COLON = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_MAC_HYPHEN = re.compile(r"[0-9a-f]{2}(-[0-9a-f]{2}){5}")
_MAC_DOTTED = re.compile(r"[0-9a-f]{4}(\.[0-9a-f]{4}){2}")
_MAC_BARE = re.compile(r"[0-9a-f]{12}")
# A word on an iPXE command line: iPXE splits on ASCII whitespace and has no quoting (src/core/exec.c).
_IPXE_WORD = re.compile(r"[\x21-\x7e]+")
_IPXE_SEPARATORS = ("||", "&&", ";")


def is_ipxe_word(value: object) -> bool:
    """One word of an iPXE script line: printable ASCII without spaces, not a comment, not a command separator."""
    return (isinstance(value, str) and _IPXE_WORD.fullmatch(value) is not None and not value.startswith("#")
            and value not in _IPXE_SEPARATORS)
# A path below /assets/: plain names, no empty, '.', '..' or hidden segments, no percent signs or backslashes.
_ASSET_PATH = re.compile(r"/assets(/[A-Za-z0-9_+,=@~-][A-Za-z0-9._+,=@~-]*)+")

_GROUP_KEYS = {"name", "profile", "selector", "metadata"}
_PROFILE_KEYS = {"id", "kernel", "initrd", "args", "config"}
_RERENDER = "fix it or run `stellwerk render` again"


class StoreError(UserError):
    """The machine store on disk is unusable; every problem names its file and the fix."""


class LabelError(ValueError):
    """A label key or value a machine sent (or a selector holds) is malformed."""


def normalize_mac(value: str) -> str:
    """`aa:bb:cc:dd:ee:ff` from any common spelling (colons, hyphens, Cisco dots, bare hex; any case)."""
    text = value.lower() if isinstance(value, str) and value.isascii() else ""
    if _MAC_COLON.fullmatch(text) or _MAC_HYPHEN.fullmatch(text) or _MAC_DOTTED.fullmatch(text) or _MAC_BARE.fullmatch(text):
        digits = re.sub(r"[:.-]", "", text)
        return ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    raise LabelError(f"{_short(value)} is not a MAC address; write it as aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, "
                     "aabb.ccdd.eeff or aabbccddeeff")


def normalize_label(key: str, value: str) -> str:
    """The comparable form of one label value; LabelError if key or value is malformed."""
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
        raise LabelError(f"label key {_short(key)} is not valid; use lower-case letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 63 characters")
    if not isinstance(value, str):
        raise LabelError(f"label {key}: value must be a string, not {type(value).__name__}")
    if key == "mac":
        return normalize_mac(value)
    if key == "uuid":
        try:
            if not value.isascii() or len(value) > 64:
                raise ValueError
            return str(uuid.UUID(value))
        except ValueError:
            raise LabelError(f"label uuid: {_short(value)} is not a UUID") from None
    if not value or len(value) > MAX_LABEL_VALUE or not value.isprintable():
        raise LabelError(f"label {key}: value {_short(value)} must be 1 to {MAX_LABEL_VALUE} printable characters")
    return value.lower() if key == "hostname" else value


def normalize_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Normalized copy of a machine's labels. Empty values are dropped: iPXE expands an unset setting to ''."""
    return {key: normalize_label(key, value) for key, value in labels.items() if value != ""}


@dataclass(frozen=True)
class Selection:
    """The outcome of selection: the winning group, its profile and the node config file (None: the group names no
    node, so the machine boots without a config of its own)."""

    group: Group
    profile: Profile
    config_path: Path | None


@dataclass(frozen=True, eq=False)
class Store:
    """The loaded machine store. Immutable; safe to share between threads. Build it with `Store.load`."""

    root: Path
    groups: tuple[Group, ...]
    profiles: Mapping[str, Profile]
    _selections: Mapping[str, Selection] = field(repr=False)
    # Index: groups whose selector names a MAC, by that MAC; all other groups. Both most specific first.
    _by_mac: Mapping[str, tuple[Group, ...]] = field(repr=False)
    _unkeyed: tuple[Group, ...] = field(repr=False)

    @classmethod
    def load(cls, assets_dir: str | Path) -> Store:
        """Read ASSETS/netboot/profiles/*.json and ASSETS/netboot/groups/*.json; StoreError lists every problem."""
        root = Path(assets_dir)
        problems: list[Problem] = []
        netboot = root / "netboot"
        if not netboot.is_dir():
            raise StoreError(Problem("netboot", None, "", f"{root}/netboot does not exist or is not a directory; "
                                     "run `stellwerk render` to write the machine store"))
        for sub in ("profiles", "groups"):
            if not (netboot / sub).is_dir():
                problems.append(Problem(f"netboot/{sub}", None, "", "does not exist or is not a directory; "
                                        "run `stellwerk render` to write the machine store"))
        if problems:
            raise StoreError(problems)

        profiles: dict[str, Profile] = {}
        for path in _json_files(netboot / "profiles"):
            profile = _load_profile(root, path, problems)
            if profile is not None:
                profiles[profile.id] = profile
        groups: list[Group] = []
        selections: dict[str, Selection] = {}
        for path in _json_files(netboot / "groups"):
            group = _load_group(root, path, problems)
            if group is None:
                continue
            groups.append(group)
            selection = _selection(root, group, profiles, problems)
            if selection is not None:
                selections[group.name] = selection
        problems.extend(_ties(groups))
        if problems:
            raise StoreError(problems)

        def order(group: Group) -> tuple[int, str]:
            return -len(group.selector), group.name

        by_mac: dict[str, list[Group]] = defaultdict(list)
        unkeyed: list[Group] = []
        for group in groups:
            (by_mac[group.selector["mac"]] if "mac" in group.selector else unkeyed).append(group)
        return cls(
            root=root,
            groups=tuple(sorted(groups, key=lambda g: g.name)),
            profiles=MappingProxyType(dict(sorted(profiles.items()))),
            _selections=MappingProxyType(selections),
            _by_mac=MappingProxyType({mac: tuple(sorted(found, key=order)) for mac, found in by_mac.items()}),
            _unkeyed=tuple(sorted(unkeyed, key=order)),
        )

    def select(self, labels: Mapping[str, str]) -> Selection | None:
        """The most specific group matching `labels` with its profile, or None when nothing (not even a default
        group) matches. Labels are normalized first; LabelError if one is malformed."""
        labels = normalize_labels(labels)
        best: Group | None = None
        for group in self._by_mac.get(labels.get("mac", ""), ()):
            if group.matches(labels):
                best = group
                break
        floor = len(best.selector) if best is not None else -1
        for group in self._unkeyed:
            # Sorted most specific first; an equally specific second match cannot exist (rejected at load).
            if len(group.selector) <= floor:
                break
            if group.matches(labels):
                best = group
                break
        return None if best is None else self._selections[best.name]

    def node_selection(self, node: str) -> Selection | None:
        """The selection of a group that serves `node`'s config (the most specific one), or None."""
        for group in sorted(self.groups, key=lambda g: -len(g.selector)):
            if group.node == node:
                return self._selections[group.name]
        return None

    def config_labels(self, selection: Selection, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels a machine must send to the config endpoints to get `selection` again: its MAC plus the
        values of the other keys of the winning group's selector (a UUID-selected group needs the UUID)."""
        labels = normalize_labels(labels)
        wanted = {"mac": labels["mac"]} if "mac" in labels else {}
        for key in selection.group.selector:
            wanted[key] = labels[key]
        return wanted


def _json_files(directory: Path) -> list[Path]:
    # Editor backups (c1.json~), hidden files and subdirectories are not part of the store.
    return sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith(".") and p.is_file())


def _read_json(root: Path, path: Path, problems: list[Problem]) -> dict | None:
    rel = _rel(root, path)

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        seen: dict[str, object] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen[key] = value
        return seen

    def no_constants(name: str) -> object:
        raise ValueError(f"{name} is not a JSON number")

    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except OSError as exc:
        problems.append(Problem(rel, None, "", f"cannot read: {exc.strerror}; check its permissions"))
        return None
    except UnicodeDecodeError:
        problems.append(Problem(rel, None, "", f"is not UTF-8 text; {_RERENDER}"))
        return None
    except json.JSONDecodeError as exc:
        problems.append(Problem(rel, exc.lineno, "", f"not valid JSON: {exc.msg} at column {exc.colno}; {_RERENDER}"))
        return None
    except ValueError as exc:
        problems.append(Problem(rel, None, "", f"not valid JSON: {exc}; {_RERENDER}"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(rel, None, "", f"must hold a JSON object, not {_json_type(data)}; {_RERENDER}"))
        return None
    return data


def _check_name(data: dict, key: str, path: Path, bad) -> None:
    """`data[key]` is a valid name and the file is named after it."""
    value = data.get(key)
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        bad(key, "must be a name of letters, digits, '.', '_' and '-' (at most 128)")
    elif value != path.stem:
        bad(key, f"{value!r} differs from the file name; name the file {value}.json")


def _load_profile(root: Path, path: Path, problems: list[Problem]) -> Profile | None:
    data = _read_json(root, path, problems)
    if data is None:
        return None
    found = ProblemCollector()
    bad = found.problem

    _check_keys(data, _PROFILE_KEYS, {"id", "config"}, bad)
    _check_name(data, "id", path, bad)
    profile_id = data.get("id")
    kernel = data.get("kernel")
    if "kernel" in data:
        _check_asset_path(kernel, "kernel", bad)
    initrd = data.get("initrd", [])
    if not isinstance(initrd, list):
        bad("initrd", "must be a list of paths below /assets/")
        initrd = []
    names: dict[str, int] = {}
    for index, item in enumerate(initrd):
        _check_asset_path(item, f"initrd[{index}]", bad)
        if isinstance(item, str):
            base = item.rsplit("/", 1)[-1]
            if base in names:
                bad(f"initrd[{index}]", f"has the same file name {base!r} as initrd[{names[base]}]; iPXE names "
                    "initrds by file name, so rename one")
            names.setdefault(base, index)
    args = data.get("args", [])
    if not isinstance(args, list):
        bad("args", "must be a list of kernel arguments")
        args = []
    for index, arg in enumerate(args):
        where = f"args[{index}]"
        if not isinstance(arg, str) or not _IPXE_WORD.fullmatch(arg):
            bad(where, f"{_short(arg)} must be one word of printable ASCII without spaces")
        elif not is_ipxe_word(arg):
            bad(where, f"{arg!r} would be read by iPXE as a comment or a command separator; remove it")
        elif arg.startswith(RESERVED_ARGS):
            bad(where, f"{arg!r}: netboot appends {arg.split('=', 1)[0]}= itself; remove it from the profile")
    config = data.get("config")
    if "config" in data and config not in CONFIG_FILES:
        bad("config", f"{_short(config)} is not a config kind; use one of {', '.join(sorted(CONFIG_FILES))}")
    if kernel is None and (initrd or args):
        bad("kernel", "is missing, so the profile boots from the local disk, where initrd and args have no "
            "meaning; add the kernel or remove them")
    if kernel is None and config == "installer":
        bad("kernel", "is missing; an installer profile boots a live system over the network")
    rel = _rel(root, path)
    if found:
        problems.extend(Problem(rel, None, where, message) for where, message in found)
        return None
    return Profile(id=profile_id, kernel=kernel, initrd=tuple(initrd), args=tuple(args), config=config, file=rel)


def _load_group(root: Path, path: Path, problems: list[Problem]) -> Group | None:
    data = _read_json(root, path, problems)
    if data is None:
        return None
    found = ProblemCollector()
    bad = found.problem

    # A misspelt "selector" must not turn a machine's group into a default group: unknown keys are errors.
    _check_keys(data, _GROUP_KEYS, {"name", "profile"}, bad)
    _check_name(data, "name", path, bad)
    name = data.get("name")
    profile = data.get("profile")
    if "profile" in data and (not isinstance(profile, str) or not _NAME.fullmatch(profile)):
        bad("profile", "must be the id of a profile in netboot/profiles/")
    selector: dict[str, str] = {}
    raw_selector = data.get("selector", {})
    if not isinstance(raw_selector, dict):
        bad("selector", f"must be an object of label: value, not {_json_type(raw_selector)}")
        raw_selector = {}
    for key, value in raw_selector.items():
        try:
            if value == "":
                raise LabelError(f"label {key}: an empty value matches nothing; remove the key or give a value")
            selector[key] = normalize_label(key, value)
        except LabelError as exc:
            bad(f"selector.{key}", str(exc))
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        bad("metadata", f"must be an object, not {_json_type(metadata)}")
        metadata = {}
    node = metadata.get("node")
    if "node" in metadata and (not isinstance(node, str) or len(node) > 63 or not _NODE.fullmatch(node)):
        bad("metadata.node", f"{_short(node)} is not a node name (a DNS-1123 label such as c1)")
    rel = _rel(root, path)
    if found:
        problems.extend(Problem(rel, None, where, message) for where, message in found)
        return None
    return Group.make(name, profile, selector, metadata, rel)


def _selection(root: Path, group: Group, profiles: Mapping[str, Profile], problems: list[Problem]) -> Selection | None:
    profile = profiles.get(group.profile)
    if profile is None:
        problems.append(Problem(group.file, None, "profile", f"names profile {group.profile!r}, but "
                                f"netboot/profiles/{group.profile}.json does not exist or is invalid; add the "
                                "profile or name an existing one"))
        return None
    if group.node is None:
        return Selection(group, profile, None)
    config = root / "nodes" / group.node / CONFIG_FILES[profile.config]
    if not config.is_file():
        problems.append(Problem(group.file, None, "metadata.node", f"names node {group.node!r}, but "
                                f"{_rel(root, config)} (the {profile.config} config profile {profile.id!r} asks "
                                "for) does not exist; run `stellwerk render` again or fix metadata.node"))
        return None
    return Selection(group, profile, config)


def _ties(groups: list[Group]) -> list[Problem]:
    """Pairs of groups that can match one machine with the same number of selector keys (module docstring)."""
    by_size: dict[int, list[Group]] = defaultdict(list)
    for group in groups:
        by_size[len(group.selector)].append(group)
    pairs: list[tuple[Group, Group]] = []
    for size in sorted(by_size):
        same = sorted(by_size[size], key=lambda g: g.name)
        by_mac: dict[str, list[Group]] = defaultdict(list)
        no_mac: list[Group] = []
        for group in same:
            (by_mac[group.selector["mac"]] if "mac" in group.selector else no_mac).append(group)
        # Groups naming different MACs never match one machine; only same-MAC and MAC-less groups can collide.
        candidates = [(a, b) for bucket in by_mac.values() for i, a in enumerate(bucket) for b in bucket[i + 1:]]
        candidates += [(a, b) for i, a in enumerate(no_mac) for b in no_mac[i + 1:]]
        candidates += [(a, b) for a in no_mac for bucket in by_mac.values() for b in bucket]
        pairs.extend((a, b) for a, b in candidates if _compatible(a, b))
    problems = []
    for a, b in sorted(pairs, key=lambda p: tuple(sorted((p[0].name, p[1].name))))[:20]:
        a, b = sorted((a, b), key=lambda g: g.name)
        if a.is_default:
            message = (f"groups {a.name!r} ({a.file}) and {b.name!r} ({b.file}) are both default groups (empty "
                       "selector), so an unknown machine would match both; keep one and give the other a selector")
        else:
            labels = ",".join(f"{k}={v}" for k, v in sorted({**a.selector, **b.selector}.items()))
            message = (f"groups {a.name!r} ({a.file}) and {b.name!r} ({b.file}) both match a machine with "
                       f"labels {labels} with {len(a.selector)} selector key(s) each, so neither is more specific; "
                       "add a key to one selector, or make them differ on a key they share")
        problems.append(Problem(a.file, None, "selector", message))
    if len(pairs) > 20:
        problems.append(Problem("netboot/groups", None, "", f"and {len(pairs) - 20} more pairs of ambiguous groups"))
    return problems


def _compatible(a: Group, b: Group) -> bool:
    """True when some machine matches both: they agree on every key they share."""
    return all(b.selector.get(key, value) == value for key, value in a.selector.items())


def _check_asset_path(value: object, where: str, bad) -> None:
    if not isinstance(value, str) or not _ASSET_PATH.fullmatch(value) or len(value) > 1024:
        bad(where, f"{_short(value)} must be a path below /assets/ such as /assets/lab/vmlinuz (a file in "
            "ASSETS/boot/), made of plain names: no '..', hidden names, spaces, '%' or '\\'")


def _check_keys(data: dict, allowed: set[str], required: set[str], bad) -> None:
    for key in sorted(set(data) - allowed):
        bad(key, f"unknown key; the keys are {', '.join(sorted(allowed))}")
    for key in sorted(required - set(data)):
        bad(key, "is required")


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _json_type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
