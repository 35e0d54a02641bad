"""Disks and mount paths that components take on a node, and the conflicts between components.

A disk can serve one component (a RAID member, a Ceph OSD, an LVM or ZFS
device, a hostpath filesystem), and a path can be one mount. Each component
that takes either says so in `claims(cluster, options)`; validation then
finds two components taking the same thing on the same node.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Claim:
    node: str
    kind: Literal["disk", "disk-filter", "mount"]
    value: str  # a /dev path, a regex over device names (disk-filter), or a mount path
    loc: tuple
    label: str  # how the message names it, e.g. "rookCeph.nodes[w1].devices"


def disk_path(device: str) -> str:
    return posixpath.normpath(device if device.startswith("/dev/") else f"/dev/{device}")


def on_disk(device: str, disk: str) -> bool:
    """True when `device` is `disk` or one of its partitions (sda3, nvme0n1p3, ...-part3)."""
    disk = posixpath.normpath(disk)
    if device == disk:
        return True
    rest = device[len(disk):] if device.startswith(disk) else ""
    pattern = r"p\d+" if disk[-1:].isdigit() else r"\d+"
    return bool(rest) and (re.fullmatch(pattern, rest) is not None or re.fullmatch(r"-part\d+", rest) is not None)


def conflicts(claims: Iterable[Claim]) -> Iterator[tuple[tuple, str]]:
    """(location, message) for each disk or mount path two claims share; located at the concrete one."""
    items = list(claims)
    for index, first in enumerate(items):
        for second in items[index + 1:]:
            if first.node != second.node or first.label.split(".")[0] == second.label.split(".")[0]:
                continue
            message = _conflict(first, second) or _conflict(second, first)
            if message:
                where = first if first.kind != "disk-filter" else second
                yield where.loc, message


def _conflict(a: Claim, b: Claim) -> str | None:
    if a.kind == "mount" and b.kind == "mount" and posixpath.normpath(a.value) == posixpath.normpath(b.value):
        return (f"{a.value} on node {a.node} is also mounted by {b.label}; each component needs its own "
                "mount path: change one of them")
    if a.kind == "disk" and b.kind == "disk" and disk_path(a.value) == disk_path(b.value):
        return (f"{a.value} on node {a.node} is also claimed by {b.label}; a disk can serve one component "
                "only: remove it from one of them")
    if a.kind == "disk" and b.kind == "disk-filter":
        name = posixpath.basename(a.value)
        try:
            matches = re.search(b.value, name) is not None
        except re.error:
            return None  # the owning component reports its own bad regex
        if matches:
            return (f"{a.value} on node {a.node} is also claimed by {b.label} {b.value!r} (it matches {name!r}); "
                    "a disk can serve one component only: narrow the filter or remove the device")
    return None
