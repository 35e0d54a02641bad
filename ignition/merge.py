"""Merging configs the way Ignition merges a child config into its parent.

Rules (coreos/ignition docs/operator-notes.md "Config Merging" and
config/merge/merge.go), applied left to right, later config = child:

- Lists of objects are keyed: files, directories and links by path (one key
  space across the three lists), units by name, dropins by name within a unit,
  users and groups by name, disks by device, partitions by number (or label when
  the number is 0), RAID arrays by name, filesystems by device, config
  references and CAs by source. A later entry with a known key is merged into
  the earlier one field by field: every field the later entry sets wins.
- Lists of plain values are keyed by the value itself: ssh keys, supplementary
  groups, RAID devices and kernel arguments keep the earlier order and gain the
  later values they lack (kernel arguments share one key space across
  shouldExist and shouldNotExist, so a later "should not exist" removes an
  earlier "should exist").
- The lists Ignition marks as "ignore duplicates" are concatenated: mkfs
  options, mount options, mdadm options and file appends.
- Output order is first-seen order of keys.

Three deliberate differences, each because Ignition's rule yields a config
that breaks at boot:

- A path that is a file in one config and a directory or link in another raises
  MergeConflict; Ignition lets the later node type silently replace the earlier.
- File contents, compression and verification travel together: a later entry
  that sets contents or source also brings its compression and hash (possibly
  none). Ignition merges them one by one, so a stale hash or compression flag
  would stay attached to new bytes.
- Owner (user, group) is one value: a later name replaces an earlier id. Ignition
  merges id and name separately and then rejects the result for having both.
  For the same reason the last `ignition.config.replace` wins whole.

`File.mode`, `File.overwrite`, `Directory.mode` and `Link.overwrite` have
non-None defaults, so a later entry built with the defaults sets them; entries
parsed by `loads` leave absent fields None and so keep the earlier values.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Callable, Hashable, Iterable, TypeVar

from .model import (
    Config,
    ConfigReference,
    Directory,
    Disk,
    File,
    Filesystem,
    Link,
    Partition,
    Raid,
    Unit,
    User,
)

T = TypeVar("T")

_KIND_NAMES = {File: "a file", Directory: "a directory", Link: "a link"}


class MergeConflict(Exception):
    """Two configs disagree on what kind of node a path is."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


def _union(earlier: tuple[str, ...], later: tuple[str, ...]) -> tuple[str, ...]:
    """Earlier values in their order, then the later values not yet present."""
    if not later:
        return earlier
    seen = set(earlier)
    return earlier + tuple(v for v in dict.fromkeys(later) if v not in seen)


def _overlay(earlier: T, later: T, special: dict[str, Callable[[Any, Any], Any]] | None = None) -> T:
    """`earlier` with every field that `later` sets (not None); `special` merges the listed fields."""
    special = special or {}
    changes: dict[str, Any] = {}
    for f in fields(earlier):  # type: ignore[arg-type]
        old, new = getattr(earlier, f.name), getattr(later, f.name)
        if f.name in special:
            merged = special[f.name](old, new)
        else:
            merged = old if new is None else new
        if merged is not old:
            changes[f.name] = merged
    return replace(earlier, **changes) if changes else earlier  # type: ignore[type-var]


def _concat(earlier: tuple[Any, ...], later: tuple[Any, ...]) -> tuple[Any, ...]:
    return earlier + later if later else earlier


def _keyed(
    earlier: tuple[T, ...], later: tuple[T, ...], key: Callable[[T], Hashable], combine: Callable[[T, T], T]
) -> tuple[T, ...]:
    """Merge two keyed lists: same key -> combine in place, new key -> appended."""
    if not later:
        return earlier
    merged: dict[Hashable, T] = {}
    for item in (*earlier, *later):
        k = key(item)
        merged[k] = combine(merged[k], item) if k in merged else item
    return tuple(merged.values())


# --------------------------------------------------------------------------- per type


_PAYLOAD = ("contents", "source", "compression", "verification")


def _merge_file(earlier: File, later: File) -> File:
    special: dict[str, Callable[[Any, Any], Any]] = {"append": _concat}
    if later.contents is not None or later.source is not None:
        # contents/source/compression/verification describe one payload: take all four
        special.update({name: (lambda _old, new: new) for name in _PAYLOAD})
    return _overlay(earlier, later, special)


def _merge_unit(earlier: Unit, later: Unit) -> Unit:
    def dropins(old: tuple, new: tuple) -> tuple:
        return _keyed(old, new, lambda d: d.name, _overlay)

    return _overlay(earlier, later, {"dropins": dropins})


def _merge_user(earlier: User, later: User) -> User:
    return _overlay(earlier, later, {"ssh_authorized_keys": _union, "groups": _union})


def _partition_key(p: Partition) -> Hashable:
    # Ignition: number if non-zero, else label, else the empty key
    if p.number:
        return ("number", p.number)
    return ("label", p.label) if p.label is not None else ("",)


def _merge_partition(earlier: Partition, later: Partition) -> Partition:
    # number is a plain int in Ignition (not optional), so the later one always wins
    return _overlay(earlier, later, {"number": lambda old, new: new})


def _merge_disk(earlier: Disk, later: Disk) -> Disk:
    def partitions(old: tuple, new: tuple) -> tuple:
        return _keyed(old, new, _partition_key, _merge_partition)

    return _overlay(earlier, later, {"partitions": partitions})


def _merge_raid(earlier: Raid, later: Raid) -> Raid:
    return _overlay(earlier, later, {"devices": _union, "options": _concat})


def _merge_filesystem(earlier: Filesystem, later: Filesystem) -> Filesystem:
    return _overlay(earlier, later, {"options": _concat, "mount_options": _concat})


def _merge_nodes(configs: Iterable[Config]) -> tuple[tuple[File, ...], tuple[Directory, ...], tuple[Link, ...]]:
    """Files, directories and links share one key space: the path."""
    nodes: dict[str, File | Directory | Link] = {}
    combine = {File: _merge_file, Directory: _overlay, Link: _overlay}
    for config in configs:
        for node in (*config.files, *config.directories, *config.links):
            old = nodes.get(node.path)
            if old is None:
                nodes[node.path] = node
            elif type(old) is type(node):
                nodes[node.path] = combine[type(node)](old, node)  # type: ignore[operator]
            else:
                earlier_kind, later_kind = _KIND_NAMES[type(old)], _KIND_NAMES[type(node)]
                raise MergeConflict(node.path, f"is {earlier_kind} in an earlier config and {later_kind} in a later one")
    values = nodes.values()
    return (
        tuple(n for n in values if isinstance(n, File)),
        tuple(n for n in values if isinstance(n, Directory)),
        tuple(n for n in values if isinstance(n, Link)),
    )


def _merge_kernel_arguments(configs: Iterable[Config]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """shouldExist and shouldNotExist are one key space: the later list an argument is in wins."""
    wanted: dict[str, bool] = {}
    for config in configs:
        for arg, should_exist in (
            *((a, True) for a in config.kernel_arguments_should_exist),
            *((a, False) for a in config.kernel_arguments_should_not_exist),
        ):
            if wanted.get(arg) is not should_exist:
                # moving to the other list appends it there, as Ignition does
                wanted.pop(arg, None)
                wanted[arg] = should_exist
    return (
        tuple(a for a, exists in wanted.items() if exists),
        tuple(a for a, exists in wanted.items() if not exists),
    )


def _merge_list(configs: tuple[Config, ...], attr: str, key: Callable[[Any], Hashable], combine: Callable) -> tuple:
    result: tuple = ()
    for config in configs:
        result = _keyed(result, getattr(config, attr), key, combine)
    return result


def merge(*configs: Config) -> Config:
    """Merge configs left to right; later configs win, as Ignition merges child into parent."""
    files, directories, links = _merge_nodes(configs)
    should_exist, should_not_exist = _merge_kernel_arguments(configs)
    # A replace reference always has a source, and its hash belongs to that
    # source, so the last one wins whole.
    replace_ref: ConfigReference | None = None
    for config in configs:
        replace_ref = config.replace or replace_ref
    by_name: Callable[[Any], Hashable] = lambda item: item.name
    by_source: Callable[[Any], Hashable] = lambda ref: ref.source
    return Config(
        files=files,
        directories=directories,
        links=links,
        units=_merge_list(configs, "units", by_name, _merge_unit),
        users=_merge_list(configs, "users", by_name, _merge_user),
        groups=_merge_list(configs, "groups", by_name, _overlay),
        disks=_merge_list(configs, "disks", lambda d: d.device, _merge_disk),
        raid=_merge_list(configs, "raid", by_name, _merge_raid),
        filesystems=_merge_list(configs, "filesystems", lambda f: f.device, _merge_filesystem),
        merge=_merge_list(configs, "merge", by_source, _overlay),
        replace=replace_ref,
        certificate_authorities=_merge_list(configs, "certificate_authorities", by_source, _overlay),
        kernel_arguments_should_exist=should_exist,
        kernel_arguments_should_not_exist=should_not_exist,
    )
