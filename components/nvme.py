"""NVMe tuning (I/O scheduler, queue sizes, write-back, interrupts) and an optional data RAID on the nodes.

Everything here is host configuration: udev rules and sysctls for the tuning, a
oneshot unit for interrupt affinity, and Ignition's storage section plus a
systemd mount unit for the RAID. Nothing runs in the cluster, so there are no
Kubernetes objects and no upstream manifests.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

from stellwerk.components.claims import Claim, on_disk
from stellwerk.base.templating import render_template
from stellwerk.components.unitnames import mount_unit_name
from stellwerk.components.base import ComponentOptions
from stellwerk.ignition.fragments import NodeFragment
from stellwerk.ignition.model import Config, Disk, File, Filesystem, Raid, Unit
from stellwerk.ignition.nodeos import families_that, node_os
from stellwerk.spectypes import DNSLabel, StrictModel

if TYPE_CHECKING:
    from stellwerk.plan import NodePlan, Plan
    from stellwerk.spec import Cluster

KEY = "nvme"

RULES_FILE = "70-stellwerk-nvme.rules"
IRQ_SCRIPT = "/opt/stellwerk/bin/nvme-irq-affinity"
IRQ_UNIT = "stellwerk-nvme-irq-affinity@.service"

# Kernel module behind each scheduler name (the name written to queue/scheduler).
_SCHEDULER_MODULES = {"mq-deadline": "mq-deadline", "kyber": "kyber-iosched", "bfq": "bfq"}
# md personality module and Ignition's level name per RAID level.
_RAID_MODULES = {0: "raid0", 1: "raid1", 10: "raid10"}
_MIN_DEVICES = {0: 2, 1: 2, 10: 4}
# mkfs limits on the label length.
_LABEL_LIMITS = {"xfs": 12, "ext4": 16}

# Mount points that would hide or break the OS: the tree roots themselves...
_SYSTEM_PATHS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log", "/var/mnt", "/var/tmp",
})
# ...and everything below the read-only, virtual or configuration trees.
_SYSTEM_TREES = ("/boot/", "/dev/", "/etc/", "/proc/", "/run/", "/sys/", "/usr/")

_DEVICE = re.compile(r"/dev/[A-Za-z0-9._:+@/-]+")
_MOUNT_PATH = re.compile(r"/[A-Za-z0-9._/-]*")


def _device_path(value: str) -> str:
    if not _DEVICE.fullmatch(value) or posixpath.normpath(value) != value:
        raise ValueError(
            f"{value!r} is not a device path; write the whole path under /dev, such as /dev/nvme1n1 "
            "or /dev/disk/by-id/nvme-<model>_<serial>")
    return value


def _mount_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path; write it from the root, such as /var/mnt/data")
    if not _MOUNT_PATH.fullmatch(value):
        raise ValueError(f"{value!r}: use only letters, digits, '.', '_', '-' and '/' in a mount path")
    normal = posixpath.normpath(value)
    if normal != value:
        raise ValueError(f"{value!r} is not in normal form; write {normal!r}")
    return value


DevicePath = Annotated[str, AfterValidator(_device_path)]
MountPath = Annotated[str, AfterValidator(_mount_path)]


class RaidOptions(StrictModel):
    """A software RAID (md) over whole disks, formatted and mounted; created once, by Ignition."""

    level: Literal[0, 1, 10] = Field(
        description="RAID level: 0 (striping, at least 2 disks), 1 (mirror, at least 2), "
        "10 (striped mirrors, an even number of at least 4).")
    devices: list[DevicePath] = Field(
        description="Member disks by path, the same on every node of the array, e.g. /dev/nvme1n1. "
        "Ignition needs names, not a filter: list each disk.")
    name: str = Field(
        "data", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="md array name; the array is /dev/md/<name>.")
    filesystem: Literal["xfs", "ext4"] = Field("xfs", description="Filesystem created on the array.")
    label: str = Field(
        "data", pattern=r"^[A-Za-z0-9_-]+$",
        description="Filesystem label (xfs: at most 12 characters, ext4: 16); the mount finds the filesystem by it.")
    mount_path: MountPath = Field("/var/mnt/data", description="Where the filesystem is mounted.")
    nodes: list[DNSLabel] | None = Field(
        None, min_length=1, description="Nodes that get the array; default: every worker.")
    wipe_devices: bool = Field(
        False, description="Erase the partition tables of the member disks first (Ignition wipeTable). "
        "For disks that held something else; leave it off afterwards.")
    wipe_filesystem: bool = Field(
        False, description="Format the array even if it already holds a filesystem. Off keeps the data of an "
        "array that matches (same format and label) when a node is provisioned again.")


class Options(ComponentOptions):
    scheduler: Literal["none", "mq-deadline", "kyber", "bfq"] = Field(
        "none", description="I/O scheduler of every NVMe namespace; none passes requests straight to the "
        "device's own queues.")
    nr_requests: int | None = Field(
        None, ge=4, le=2048, description="Requests per queue (queue/nr_requests); default: the kernel's choice, "
        "the device's queue depth.")
    read_ahead_kb: int = Field(
        128, ge=0, le=65536, alias="readAheadKB", description="Read-ahead in KiB (queue/read_ahead_kb).")
    dirty_ratio: int = Field(
        10, ge=1, le=100, description="vm.dirty_ratio: percent of memory that may be dirty before writers block.")
    dirty_background_ratio: int = Field(
        5, ge=1, le=100, description="vm.dirty_background_ratio: percent of memory dirty before background "
        "write-back starts; must be below dirtyRatio.")
    irq_affinity: Literal["none", "spread"] = Field(
        "none", description="none: keep the kernel's interrupt placement; spread: pin each NVMe interrupt that "
        "the kernel lets user space move to a CPU of the controller's NUMA node, round robin.")
    nodes: list[DNSLabel] | None = Field(
        None, min_length=1, description="Nodes that get the tuning; default: every node.")
    raid: RaidOptions | None = Field(None, description="Data RAID; none by default.")


# --------------------------------------------------------------------------- checks


def check(cluster: Cluster, options: Options) -> Iterator[tuple[tuple, str]]:
    base: tuple = ("spec", "components", KEY)
    install_disks = _install_disks(cluster)
    yield from _node_names(base, options.nodes, install_disks)
    if options.dirty_background_ratio >= options.dirty_ratio:
        yield (*base, "dirtyBackgroundRatio"), (
            f"{options.dirty_background_ratio} is not below dirtyRatio {options.dirty_ratio}: the kernel would "
            f"start background write-back only when writers already block; use at most {options.dirty_ratio - 1} "
            "or raise dirtyRatio")
    if options.raid is not None:
        yield from _raid_rules(cluster, (*base, "raid"), options.raid, install_disks)


def _install_disks(cluster: Cluster) -> dict[str, str]:
    """Node name -> install disk, controllers first, in file order."""
    return {found.name: found.node.install_disk for found in cluster.spec.nodes()}


def _node_names(loc: tuple, names: list[str] | None, known: dict[str, str]) -> Iterator[tuple[tuple, str]]:
    for index, name in enumerate(names or []):
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"nodes: {', '.join(known)}"
            yield (*loc, "nodes", index), f"no node is named {name!r}; {hint}"


def _raid_nodes(cluster: Cluster, raid: RaidOptions) -> list[str]:
    if raid.nodes is not None:
        return list(raid.nodes)
    return [found.name for found in cluster.spec.nodes() if found.role == "worker"]


def _raid_rules(cluster: Cluster, loc: tuple, raid: RaidOptions,
                install_disks: dict[str, str]) -> Iterator[tuple[tuple, str]]:
    nodeos = node_os(cluster.spec.os.family)
    if not nodeos.storage:
        yield loc, (f"os.family {nodeos.family} gets {nodeos.provisioner} configs, which cannot create RAID arrays "
                    f"or filesystems; use os.family {families_that(lambda os: os.storage)}, or remove raid")
    yield from _node_names(loc, raid.nodes, install_disks)
    if raid.nodes is None and not _raid_nodes(cluster, raid):
        yield loc, "the array goes on every worker by default, but the cluster has none; list the nodes in raid.nodes"

    count = len(raid.devices)
    minimum = _MIN_DEVICES[raid.level]
    if count < minimum:
        yield (*loc, "devices"), (
            f"raid{raid.level} needs at least {minimum} devices, {count} given; add devices or choose another level")
    elif raid.level == 10 and count % 2:
        yield (*loc, "devices"), (
            f"raid10 needs an even number of devices (mirrored pairs), {count} given; add or remove one")

    seen: dict[str, int] = {}
    for index, device in enumerate(raid.devices):
        if device in seen:
            yield (*loc, "devices", index), f"{device} is already devices[{seen[device]}]; list each disk once"
        else:
            seen[device] = index

    limit = _LABEL_LIMITS[raid.filesystem]
    if len(raid.label) > limit:
        yield (*loc, "label"), (
            f"{raid.label!r} has {len(raid.label)} characters; {raid.filesystem} labels hold at most {limit}")

    mount = raid.mount_path
    if mount in _SYSTEM_PATHS or mount.startswith(_SYSTEM_TREES):
        yield (*loc, "mountPath"), (
            f"{mount} is a system path: mounting the array there would hide or break the OS; "
            "use a directory of its own, such as /var/mnt/data")

    nodes = [name for name in _raid_nodes(cluster, raid) if name in install_disks]
    for index, device in enumerate(raid.devices):
        for name in nodes:
            disk = install_disks[name]
            if on_disk(device, disk):
                what = "is" if posixpath.normpath(disk) == device else "is a partition of"
                yield (*loc, "devices", index), (
                    f"{device} {what} node {name}'s installDisk {disk}: installing the OS would destroy the array; "
                    "remove it from raid.devices or give the node another installDisk")


def claims(cluster: Cluster, options: Options) -> Iterator[Claim]:
    raid = options.raid
    if raid is None:
        return
    loc = ("spec", "components", KEY, "raid")
    for node in _raid_nodes(cluster, raid):
        for index, device in enumerate(raid.devices):
            yield Claim(node, "disk", device, (*loc, "devices", index), "nvme.raid.devices")
        yield Claim(node, "mount", raid.mount_path, (*loc, "mountPath"), "nvme.raid.mountPath")



# --------------------------------------------------------------------------- cluster side


def manifests(plan: Plan, options: Options) -> list[dict[str, Any]]:
    return []  # host-only: nothing runs in the cluster


def upstream(options: Options) -> tuple[str, ...]:
    return ()


# --------------------------------------------------------------------------- node side


def node_fragments(plan: Plan, options: Options, node: NodePlan) -> NodeFragment | None:
    tuned = options.nodes is None or node.name in options.nodes
    raid = options.raid
    if raid is not None:
        raid_nodes = raid.nodes if raid.nodes is not None else [n.name for n in plan.workers]
        if node.name not in raid_nodes:
            raid = None
    if not tuned and raid is None:
        return None

    modules: list[str] = []
    sysctls: tuple[tuple[str, str], ...] = ()
    rules: tuple[tuple[str, str], ...] = ()
    files: list[File] = []
    units: list[Unit] = []
    if tuned:
        if options.scheduler in _SCHEDULER_MODULES:
            modules.append(_SCHEDULER_MODULES[options.scheduler])
        sysctls = (
            ("vm.dirty_ratio", str(options.dirty_ratio)),
            ("vm.dirty_background_ratio", str(options.dirty_background_ratio)),
        )
        spread = options.irq_affinity == "spread"
        rules = ((RULES_FILE, render("nvme-tuning.rules.j2", options=options, irq_unit=IRQ_UNIT if spread else None)),)
        if spread:
            files.append(File(path=IRQ_SCRIPT, mode=0o755, contents=render("nvme-irq-affinity.sh.j2").encode()))
            units.append(Unit(name=IRQ_UNIT, contents=render("nvme-irq-affinity@.service.j2", script=IRQ_SCRIPT)))
    storage = Config()
    if raid is not None:
        modules.append(_RAID_MODULES[raid.level])
        units.append(Unit(name=mount_unit_name(raid.mount_path), enabled=True,
                          contents=render("nvme-data.mount.j2", raid=raid)))
        storage = Config(
            disks=tuple(Disk(device=device, wipe_table=True) for device in raid.devices) if raid.wipe_devices else (),
            raid=(Raid(name=raid.name, level=f"raid{raid.level}", devices=tuple(raid.devices)),),
            filesystems=(Filesystem(device=f"/dev/md/{raid.name}", format=raid.filesystem, label=raid.label,
                                    wipe_filesystem=raid.wipe_filesystem),),
        )
    config = Config(files=tuple(files), units=tuple(units), disks=storage.disks, raid=storage.raid,
                    filesystems=storage.filesystems)
    return NodeFragment(component=KEY, kernel_modules=tuple(modules), sysctls=sysctls, udev_rules=rules, config=config)


def render(template: str, /, **values: object) -> str:
    return render_template("stellwerk.components", template, **values)
