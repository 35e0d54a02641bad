"""Rook-Ceph: a Ceph cluster on raw node disks, with block, shared-file and object storage classes.

The Rook operator comes from the pinned upstream manifests (CRDs, common RBAC,
the Ceph-CSI operator and the Rook operator). Stellwerk renders the CephCluster
and the pools and StorageClasses on top, and prepares the nodes: the rbd and
ceph kernel modules, and on the OSD nodes the disks Ceph gets (partition tables
wiped, never formatted) plus lvm2 where the OSD layout needs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from stellwerk.components.claims import Claim
from stellwerk.base.templating import render_template
from stellwerk.components.base import ComponentOptions
from stellwerk.ignition.fragments import NodeFragment
from stellwerk.ignition.model import Config, Disk, Unit
from stellwerk.ignition.nodeos import node_os
from stellwerk.spectypes import DNSLabel, DNSSubdomain, StrictModel

if TYPE_CHECKING:
    from stellwerk.plan import NodePlan, Plan
    from stellwerk.spec import Cluster

KEY = "rookCeph"

# Ceph release that Rook v1.20.6 ships in deploy/examples/cluster.yaml (v20 "Tentacle").
CEPH_IMAGE = "quay.io/ceph/ceph:v20.2.4"
NAMESPACE = "rook-ceph"
CLUSTER_NAME = "rook-ceph"
DATA_DIR_HOST_PATH = "/var/lib/rook"
RBD_PROVISIONER = f"{NAMESPACE}.rbd.csi.ceph.com"
CEPHFS_PROVISIONER = f"{NAMESPACE}.cephfs.csi.ceph.com"
BUCKET_PROVISIONER = f"{NAMESPACE}.ceph.rook.io/bucket"
BLOCK_POOL = "replicapool"
FILESYSTEM = "cephfs"
FILESYSTEM_DATA_POOL = "replicated"  # Rook names the Ceph pool <filesystem>-<name>
OBJECT_STORE = "objectstore"
# Classes Ceph gives an OSD by itself, from the disk's rotational flag and transport.
AUTOMATIC_DEVICE_CLASSES = ("hdd", "ssd", "nvme")
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
_FRAGMENT = "rook-ceph"
_LVM_UNIT = "stellwerk-rook-ceph-lvm2.service"

UPSTREAM = ("rook-crds", "rook-common", "rook-csi-operator", "rook-operator")

_LOC = ("spec", "components", KEY)


# --------------------------------------------------------------------------- option types

# Constructs Python's re accepts and Go's RE2 (which Rook matches with) does not.
_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?[=!]"), "lookahead"),
    (re.compile(r"\(\?<[=!]"), "lookbehind"),
    (re.compile(r"\(\?P="), "a named backreference"),
    (re.compile(r"\(\?>"), "an atomic group"),
    (re.compile(r"[*+?}]\+"), "a possessive quantifier"),
    (re.compile(r"\\[1-9]"), "a backreference"),
    (re.compile(r"\\Z"), r"\Z (Go writes \z)"),
)


def _bare(pattern: str) -> str:
    """The pattern without escaped literals (\\( \\+ \\\\ ...) and bracket classes, which hold no syntax;
    backreferences and \\Z are kept."""
    pattern = re.sub(r"\\([^1-9Z])", "__", pattern)
    return re.sub(r"\[\^?\]?[^\]]*\]", "__", pattern)


def _device_regex(value: str) -> str:
    if not value:
        raise ValueError("an empty regex matches every disk; write one such as '^nvme[1-9]n1$'")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    bare = _bare(value)
    for construct, name in _RE2_UNSUPPORTED:
        if construct.search(bare):
            raise ValueError(f"{value!r} uses {name}, which Go's RE2 regex engine (used by Rook) does not support")
    return value


_KERNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")


def _device(value: str) -> str:
    if re.fullmatch(r"/dev/\S+", value) and ".." not in value.split("/"):
        return value
    if "/" not in value and _KERNEL_NAME.fullmatch(value):
        return value
    raise ValueError(
        f"{value!r} is neither a kernel device name such as nvme1n1 nor a path under /dev such as "
        "/dev/disk/by-id/nvme-<model>_<serial>"
    )


def _device_class(value: str) -> str:
    if len(value) > 32 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ValueError(f"device class {value!r} must be 1-32 letters, digits, '-', '_' or '.', such as ssd")
    return value


DeviceRegex = Annotated[str, AfterValidator(_device_regex)]
Device = Annotated[str, AfterValidator(_device)]
DeviceClass = Annotated[str, AfterValidator(_device_class)]


def _toggle(value: Any) -> Any:
    """`true` enables a storage class with its defaults, `false` leaves it out; a mapping configures it."""
    if value is True:
        return {}
    if value is False:
        return {"enabled": False}
    return value


class OSDNode(StrictModel):
    name: DNSLabel = Field(description="A node of this cluster (controllers or workerPools) that holds OSDs.")
    devices: list[Device] = Field(
        default_factory=list,
        description="Disks for OSDs: kernel names (nvme1n1) or /dev paths, best /dev/disk/by-id/...; "
        "empty means the node takes the disks deviceFilter matches.",
    )


class BlockStorage(StrictModel):
    """A CephBlockPool and a StorageClass for ReadWriteOnce volumes (RBD)."""

    enabled: bool = Field(True, description="Render the pool and the StorageClass.")
    name: DNSSubdomain = Field("rook-ceph-block", description="StorageClass name.")
    default: bool = Field(False, description="Make it the cluster's default StorageClass.")
    device_class: DeviceClass | None = Field(None, description="Keep the pool on OSDs of this device class only.")


class FilesystemStorage(StrictModel):
    """A CephFilesystem and a StorageClass for ReadWriteMany volumes (CephFS)."""

    enabled: bool = Field(True, description="Render the filesystem and the StorageClass.")
    name: DNSSubdomain = Field("rook-cephfs", description="StorageClass name.")
    default: bool = Field(False, description="Make it the cluster's default StorageClass.")
    device_class: DeviceClass | None = Field(None, description="Keep the filesystem's pools on OSDs of this device class.")


class ObjectStorage(StrictModel):
    """A CephObjectStore (S3 gateway) and a StorageClass for ObjectBucketClaims."""

    enabled: bool = Field(True, description="Render the object store and the bucket StorageClass.")
    name: DNSSubdomain = Field("rook-ceph-bucket", description="StorageClass name for ObjectBucketClaims.")
    device_class: DeviceClass | None = Field(None, description="Keep the object store's pools on OSDs of this device class.")


BlockToggle = Annotated[BlockStorage, BeforeValidator(_toggle, json_schema_input_type=bool | BlockStorage)]
FilesystemToggle = Annotated[
    FilesystemStorage, BeforeValidator(_toggle, json_schema_input_type=bool | FilesystemStorage)]
ObjectToggle = Annotated[ObjectStorage, BeforeValidator(_toggle, json_schema_input_type=bool | ObjectStorage)]


class StorageClasses(StrictModel):
    """Which kinds of storage to offer. Each takes true, false or a mapping of its settings."""

    block: BlockToggle = Field(True, validate_default=True, description="RBD block volumes.")
    filesystem: FilesystemToggle = Field(False, validate_default=True, description="CephFS shared volumes.")
    object: ObjectToggle = Field(False, validate_default=True, description="S3 object store and buckets.")


class Options(ComponentOptions):
    device_filter: DeviceRegex | None = Field(
        None,
        description="Regex over kernel device names (Rook's storage.deviceFilter), e.g. '^nvme[1-9]n1$'; "
        "every worker, and every listed node without devices, gives Ceph the disks it matches.",
    )
    nodes: list[OSDNode] = Field(
        default_factory=list,
        description="Nodes that hold OSDs, each with its devices; when set, only these nodes hold OSDs.",
    )
    mon_count: int = Field(3, ge=1, le=9, description="Ceph monitors; an odd number, each on its own node.")
    replicas: int = Field(3, ge=1, le=10, description="Copies of every object, each on a different node.")
    device_classes: dict[DeviceClass, DeviceRegex] = Field(
        default_factory=dict,
        description="Device class -> regex over the last path component of the devices listed under nodes, "
        "e.g. {ssd: '^nvme', hdd: '^sd'}; unmatched devices keep the class Ceph detects.",
    )
    encrypt_devices: bool = Field(False, description="Encrypt OSDs with dm-crypt (needs lvm2 on the OSD nodes).")
    osds_per_device: int = Field(1, ge=1, le=16, description="OSDs per disk, for fast NVMe (above 1 needs lvm2).")
    wipe_devices: bool = Field(
        True,
        description="Wipe the partition tables of the /dev devices listed under nodes at first boot; "
        "false keeps existing OSD data when a node is reprovisioned.",
    )
    storage_classes: StorageClasses = Field(StorageClasses(), description="Which storage classes (and the Ceph pools behind them) to render.")


# --------------------------------------------------------------------------- facts shared by check and render


@dataclass(frozen=True)
class _Host:
    """A node as Rook's placement sees it: its role, its install disk, and its taints as (key, value, effect)."""

    name: str
    role: str
    install_disk: str
    taints: tuple[tuple[str, str, str], ...]


def _hosts(cluster: Cluster) -> list[_Host]:
    return [_Host(found.name, found.role, found.node.install_disk,
                  tuple((taint.key, taint.value, taint.effect) for taint in found.taints))
            for found in cluster.spec.nodes()]


def _osd_hosts(hosts: Sequence[_Host], options: Options) -> list[_Host]:
    """Listed nodes when `nodes` is set, else every worker (the deviceFilter picks their disks)."""
    by_name = {host.name: host for host in hosts}
    if options.nodes:
        names = dict.fromkeys(node.name for node in options.nodes if node.name in by_name)
        return [by_name[name] for name in names]
    return [host for host in hosts if host.role == "worker"]


def _tolerations(osd_hosts: Sequence[_Host]) -> list[tuple[str, str, str]]:
    """Taints the Ceph daemons tolerate: those of the nodes that hold OSDs, or OSDs could not run there."""
    seen: list[tuple[str, str, str]] = []
    for host in osd_hosts:
        for taint in host.taints:
            if taint not in seen:
                seen.append(taint)
    return seen


def _mon_hosts(hosts: Sequence[_Host], tolerated: Sequence[tuple[str, str, str]]) -> list[_Host]:
    """Nodes a mon can be scheduled on: every hard taint is tolerated."""
    return [host for host in hosts
            if all(taint in tolerated for taint in host.taints if taint[2] in ("NoSchedule", "NoExecute"))]


def _lvm_reasons(options: Options) -> list[str]:
    reasons = []
    if options.encrypt_devices:
        reasons.append("encryptDevices")
    if options.osds_per_device > 1:
        reasons.append(f"osdsPerDevice {options.osds_per_device}")
    return reasons


def claims(cluster: Cluster, options: Options) -> Iterator[Claim]:
    """Rook's selection: without nodes, deviceFilter picks disks on every worker; with nodes, each listed
    node gives its devices, or the deviceFilter matches when it lists none."""
    base = ("spec", "components", KEY)
    if not options.nodes:
        if options.device_filter:
            for found in cluster.spec.nodes():
                if found.role == "worker":
                    yield Claim(found.name, "disk-filter", options.device_filter, (*base, "deviceFilter"),
                                "rookCeph.deviceFilter")
        return
    for index, osd_node in enumerate(options.nodes):
        if osd_node.devices:
            for device_index, device in enumerate(osd_node.devices):
                yield Claim(osd_node.name, "disk", _dev_path(device), (*base, "nodes", index, "devices", device_index),
                            f"rookCeph.nodes[{osd_node.name}].devices")
        elif options.device_filter:
            yield Claim(osd_node.name, "disk-filter", options.device_filter, (*base, "deviceFilter"),
                        "rookCeph.deviceFilter")


def _dev_path(device: str) -> str:
    return device if device.startswith("/dev/") else f"/dev/{device}"


def _class_key(device: str) -> str:
    """What deviceClasses regexes are matched against: the last path component (nvme1n1, nvme-Model_Serial)."""
    return device.rsplit("/", 1)[-1]


def _classes_of(device: str, options: Options) -> list[str]:
    key = _class_key(device)
    return [name for name, pattern in options.device_classes.items() if re.search(pattern, key)]


def _kernel_name(install_disk: str) -> str | None:
    """sda for /dev/sda; None for udev links (/dev/disk/by-id/...), whose kernel name is known only at boot."""
    name = install_disk.removeprefix("/dev/")
    return name if "/" not in name else None


_PARTITION = re.compile(r"((s|v|xv|h)d[a-z]+\d+|(nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+)p\d+|.*-part\d+)")


def _is_partition(device: str) -> bool:
    return _PARTITION.fullmatch(device.rsplit("/", 1)[-1]) is not None


def _partitions(disk: str) -> list[str]:
    separator = "p" if disk[-1].isdigit() else ""
    return [f"{disk}{separator}{number}" for number in range(1, 10)]


# --------------------------------------------------------------------------- check


def check(cluster: Cluster, options: Options) -> Iterator[tuple[tuple, str]]:
    hosts = _hosts(cluster)
    by_name = {host.name: host for host in hosts}
    yield from _check_selection(cluster, options, by_name)
    osd_hosts = _osd_hosts(hosts, options)
    yield from _check_counts(options, hosts, osd_hosts)
    yield from _check_device_classes(options)
    yield from _check_storage_classes(options)


def _check_selection(cluster: Cluster, options: Options, by_name: dict[str, _Host]) -> Iterator[tuple[tuple, str]]:
    if options.device_filter is None and not options.nodes:
        yield _LOC, ("give deviceFilter (a regex such as '^nvme[1-9]n1$' for the workers' data disks), "
                     "nodes (each with its devices), or both; otherwise Ceph gets no disks")
        return
    seen: dict[str, int] = {}
    for index, node in enumerate(options.nodes):
        loc = (*_LOC, "nodes", index)
        if node.name in seen:
            yield (*loc, "name"), f"node {node.name} is already listed as nodes[{seen[node.name]}]; merge the two entries"
            continue
        seen[node.name] = index
        host = by_name.get(node.name)
        if host is None:
            known = ", ".join(sorted(by_name))
            yield (*loc, "name"), f"no node of this cluster is named {node.name!r}; nodes are: {known}"
            continue
        if not node.devices and options.device_filter is None:
            yield loc, (f"node {node.name} lists no devices and there is no deviceFilter; "
                        "list its disks under devices, or set deviceFilter")
        yield from _check_devices(cluster, options, node, host, loc)
    if options.device_filter is not None:
        yield from _check_filter(options, by_name)


def _check_devices(cluster: Cluster, options: Options, node: OSDNode, host: _Host,
                   loc: tuple[Any, ...]) -> Iterator[tuple[tuple, str]]:
    nodeos = node_os(cluster.spec.os.family)
    install = _dev_path(host.install_disk)
    install_name = _kernel_name(host.install_disk)
    first: dict[str, int] = {}
    for index, device in enumerate(node.devices):
        where = (*loc, "devices", index)
        path = _dev_path(device)
        if path in first:
            yield where, f"{device} is already listed as devices[{first[path]}] of node {node.name}; list each disk once"
            continue
        first[path] = index
        if path == install:
            yield where, (f"{device} is node {node.name}'s installDisk {host.install_disk}, which holds the OS; "
                          "give Ceph a separate data disk")
        elif install_name and _kernel_name(path) in _partitions(install_name):
            yield where, (f"{device} is a partition of node {node.name}'s installDisk {host.install_disk}, "
                          "which holds the OS; give Ceph a separate data disk")
        elif options.encrypt_devices and _is_partition(device):
            yield where, (f"{device} is a partition, and Rook only encrypts OSDs on whole disks; "
                          "give a whole disk or set encryptDevices: false")
        elif options.wipe_devices and device.startswith("/dev/") and not nodeos.storage:
            yield where, (f"{nodeos.family} nodes are set up by {nodeos.provisioner}, which cannot wipe disks; set "
                          f"wipeDevices: false and wipe {device} yourself (wipefs --all, sgdisk --zap-all) before "
                          "Rook starts")


def _check_filter(options: Options, by_name: dict[str, _Host]) -> Iterator[tuple[tuple, str]]:
    pattern = options.device_filter or ""
    if options.nodes:
        users = [by_name[node.name] for node in options.nodes if not node.devices and node.name in by_name]
    else:
        users = [host for host in by_name.values() if host.role == "worker"]
        if not users:
            yield (*_LOC, "deviceFilter"), ("the cluster has no workers, so deviceFilter selects disks on no node; "
                                            "list the nodes that hold OSDs under nodes")
    for host in users:
        disk = _kernel_name(host.install_disk)
        if disk is None:
            continue
        hit = next((name for name in (disk, *_partitions(disk)) if re.search(pattern, name)), None)
        if hit is not None:
            yield (*_LOC, "deviceFilter"), (
                f"{pattern!r} matches {hit} on node {host.name}, whose installDisk is {host.install_disk}; Rook "
                "would consider the OS disk for OSDs; narrow the regex to the data disks, e.g. '^nvme[1-9]n1$'")
            return


def _check_counts(options: Options, hosts: Sequence[_Host], osd_hosts: Sequence[_Host]) -> Iterator[tuple[tuple, str]]:
    count = options.mon_count
    if count % 2 == 0:
        yield (*_LOC, "monCount"), (
            f"{count} mons: the mons keep quorum while a majority ({count // 2 + 1}) is up, so {count} tolerate no "
            f"more failures than {count - 1} and only add a member that can split the vote; "
            f"use {count - 1} or {count + 1}")
    mon_hosts = _mon_hosts(hosts, _tolerations(osd_hosts))
    if osd_hosts and count > len(mon_hosts):
        usable = len(mon_hosts) if len(mon_hosts) % 2 else max(1, len(mon_hosts) - 1)
        names = ", ".join(host.name for host in mon_hosts) or "none"
        yield (*_LOC, "monCount"), (
            f"{count} mons need {count} nodes (each mon runs on its own node), but only {len(mon_hosts)} can run "
            f"one ({names}); tainted nodes such as controllers only can when they hold OSDs (listed under nodes); "
            f"set monCount: {usable}, or add workers")
    if osd_hosts and options.replicas > len(osd_hosts):
        names = ", ".join(host.name for host in osd_hosts)
        yield (*_LOC, "replicas"), (
            f"{options.replicas} replicas need {options.replicas} nodes with OSDs (Ceph keeps each copy on a "
            f"different node), but only {len(osd_hosts)} hold OSDs ({names}); set replicas: {len(osd_hosts)} "
            "or give Ceph disks on more nodes")


def _check_device_classes(options: Options) -> Iterator[tuple[tuple, str]]:
    if not options.device_classes:
        return
    if options.device_filter is not None and (not options.nodes or any(not node.devices for node in options.nodes)):
        yield (*_LOC, "deviceClasses"), (
            "deviceClasses labels the devices listed under nodes[].devices; disks found by deviceFilter are only "
            "known to Rook at run time and keep the class Ceph detects (hdd or ssd); list those nodes' devices, "
            "or remove deviceClasses")
    used: set[str] = set()
    for index, node in enumerate(options.nodes):
        for device_index, device in enumerate(node.devices):
            classes = _classes_of(device, options)
            used.update(classes)
            if len(classes) > 1:
                yield (*_LOC, "nodes", index, "devices", device_index), (
                    f"{device} matches deviceClasses {' and '.join(classes)}; a disk has one class, "
                    "so make the regexes exclusive")
    for name in options.device_classes:
        if name not in used and any(node.devices for node in options.nodes):
            yield (*_LOC, "deviceClasses", name), (
                f"class {name} matches none of the devices under nodes (regexes are matched against the last "
                "path component, e.g. nvme1n1 or nvme-Model_Serial); fix the regex or remove the class")


def _check_storage_classes(options: Options) -> Iterator[tuple[tuple, str]]:
    loc = (*_LOC, "storageClasses")
    known = set(options.device_classes) | set(AUTOMATIC_DEVICE_CLASSES)
    kinds = _enabled_kinds(options)
    names: dict[str, str] = {}
    defaults = []
    for kind, settings in kinds:
        if settings.name in names:
            yield (*loc, kind, "name"), f"StorageClass name {settings.name!r} is already used by {names[settings.name]}"
        names.setdefault(settings.name, kind)
        if getattr(settings, "default", False):
            defaults.append(kind)
        if settings.device_class is not None and settings.device_class not in known:
            listed = ", ".join(sorted(known))
            yield (*loc, kind, "deviceClass"), (
                f"no OSD has device class {settings.device_class!r}; use one of {listed}, or define it under deviceClasses")
    for kind in defaults[1:]:
        yield (*loc, kind, "default"), f"{defaults[0]} is already the default StorageClass; a cluster has one default"


def _enabled_kinds(options: Options) -> list[tuple[str, Any]]:
    classes = options.storage_classes
    return [(kind, settings) for kind, settings in
            (("block", classes.block), ("filesystem", classes.filesystem), ("object", classes.object))
            if settings.enabled]


# --------------------------------------------------------------------------- manifests


def manifests(plan: Plan, options: Options) -> list[dict[str, Any]]:
    objects = [_ceph_cluster(plan, options)]
    classes = options.storage_classes
    if classes.block.enabled:
        objects += [_block_pool(options), _block_storage_class(classes.block)]
    if classes.filesystem.enabled:
        objects += [_filesystem(options), _filesystem_storage_class(classes.filesystem)]
    if classes.object.enabled:
        objects += [_object_store(options), _bucket_storage_class(classes.object)]
    return objects


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE}


def _ceph_cluster(plan: Plan, options: Options) -> dict[str, Any]:
    hosts = _hosts(plan.cluster)
    osd_hosts = _osd_hosts(hosts, options)
    tolerated = _tolerations(osd_hosts)
    mgr_count = max(1, min(2, len(_mon_hosts(hosts, tolerated))))
    spec: dict[str, Any] = {
        "cephVersion": {"image": CEPH_IMAGE, "allowUnsupported": False},
        "dataDirHostPath": DATA_DIR_HOST_PATH,
        # Kernels before 7.0 (Flatcar, Debian) only speak the aes cephx cipher to the CSI clients.
        "security": {"cephx": {"csi": {"keyType": "aes"}}},
        "mon": {"count": options.mon_count, "allowMultiplePerNode": False},
        "mgr": {"count": mgr_count, "allowMultiplePerNode": False},
        "dashboard": {"enabled": True, "ssl": True},
        "priorityClassNames": {"mon": "system-node-critical", "osd": "system-node-critical",
                               "mgr": "system-cluster-critical"},
        "disruptionManagement": {"managePodBudgets": True},
        "cephConfig": {"global": _global_config(options)},
        "storage": _storage(options, osd_hosts),
    }
    if tolerated:
        spec["placement"] = {"all": {"tolerations": [_toleration(taint) for taint in tolerated]}}
    return {"apiVersion": "ceph.rook.io/v1", "kind": "CephCluster", "metadata": _meta(CLUSTER_NAME), "spec": spec}


def _global_config(options: Options) -> dict[str, str]:
    # The pools Ceph and Rook create by themselves (.mgr, .rgw.root) get as many copies as Stellwerk's own.
    config = {"osd_pool_default_size": str(options.replicas)}
    if options.replicas == 1:
        config["mon_warn_on_pool_no_redundancy"] = "false"  # one copy was asked for; don't warn forever
    return config


def _toleration(taint: tuple[str, str, str]) -> dict[str, str]:
    key, value, effect = taint
    if value:
        return {"key": key, "operator": "Equal", "value": value, "effect": effect}
    return {"key": key, "operator": "Exists", "effect": effect}


def _storage(options: Options, osd_hosts: Sequence[_Host]) -> dict[str, Any]:
    storage: dict[str, Any] = {"useAllNodes": False, "useAllDevices": False}
    if options.device_filter is not None:
        storage["deviceFilter"] = options.device_filter
    config = {}
    if options.encrypt_devices:
        config["encryptedDevice"] = "true"
    if options.osds_per_device > 1:
        config["osdsPerDevice"] = str(options.osds_per_device)
    if config:
        storage["config"] = config
    listed = {node.name: node for node in options.nodes}
    nodes = []
    for host in osd_hosts:
        entry: dict[str, Any] = {"name": host.name}
        node = listed.get(host.name)
        if node is not None and node.devices:
            entry["devices"] = [_device_entry(device, options) for device in node.devices]
        nodes.append(entry)
    storage["nodes"] = nodes
    return storage


def _device_entry(device: str, options: Options) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": device}
    classes = _classes_of(device, options)
    if classes:
        entry["config"] = {"deviceClass": classes[0]}
    return entry


def _replicated(options: Options) -> dict[str, Any]:
    # Rook refuses size 1 while requireSafeReplicaSize is on; a one-copy pool is an explicit choice here.
    return {"size": options.replicas, "requireSafeReplicaSize": options.replicas > 1}


def _pool(options: Options, device_class: str | None, **extra: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {**extra, "failureDomain": "host", "replicated": _replicated(options)}
    if device_class is not None:
        pool["deviceClass"] = device_class
    return pool


def _block_pool(options: Options) -> dict[str, Any]:
    spec = _pool(options, options.storage_classes.block.device_class)
    return {"apiVersion": "ceph.rook.io/v1", "kind": "CephBlockPool", "metadata": _meta(BLOCK_POOL), "spec": spec}


def _csi_secrets(kind: str) -> dict[str, str]:
    provisioner, node = f"rook-csi-{kind}-provisioner", f"rook-csi-{kind}-node"
    parameters = {}
    for key, secret in (("provisioner", provisioner), ("controller-expand", provisioner),
                        ("controller-publish", provisioner), ("node-stage", node)):
        parameters[f"csi.storage.k8s.io/{key}-secret-name"] = secret
        parameters[f"csi.storage.k8s.io/{key}-secret-namespace"] = NAMESPACE
    return parameters


def _storage_class(name: str, default: bool, provisioner: str, parameters: dict[str, str],
                   expandable: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if default:
        metadata["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    storage_class: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": metadata,
        "provisioner": provisioner, "parameters": parameters, "reclaimPolicy": "Delete",
    }
    if expandable:
        storage_class["allowVolumeExpansion"] = True
    return storage_class


def _block_storage_class(settings: BlockStorage) -> dict[str, Any]:
    parameters = {
        "clusterID": NAMESPACE,
        "pool": BLOCK_POOL,
        "imageFormat": "2",
        # Every supported node kernel is 5.4 or later, which maps images with these features.
        "imageFeatures": "layering,fast-diff,object-map,deep-flatten,exclusive-lock",
        **_csi_secrets("rbd"),
        "csi.storage.k8s.io/fstype": "ext4",
    }
    return _storage_class(settings.name, settings.default, RBD_PROVISIONER, parameters, expandable=True)


def _filesystem(options: Options) -> dict[str, Any]:
    device_class = options.storage_classes.filesystem.device_class
    spec = {
        "metadataPool": _pool(options, device_class),
        "dataPools": [_pool(options, device_class, name=FILESYSTEM_DATA_POOL)],
        "preserveFilesystemOnDelete": True,
        "metadataServer": {
            "activeCount": 1,
            "activeStandby": True,
            "priorityClassName": "system-cluster-critical",
            "placement": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchExpressions": [
                        {"key": "app", "operator": "In", "values": ["rook-ceph-mds"]}]},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }]}},
        },
    }
    return {"apiVersion": "ceph.rook.io/v1", "kind": "CephFilesystem", "metadata": _meta(FILESYSTEM), "spec": spec}


def _filesystem_storage_class(settings: FilesystemStorage) -> dict[str, Any]:
    parameters = {
        "clusterID": NAMESPACE,
        "fsName": FILESYSTEM,
        "pool": f"{FILESYSTEM}-{FILESYSTEM_DATA_POOL}",
        **_csi_secrets("cephfs"),
    }
    return _storage_class(settings.name, settings.default, CEPHFS_PROVISIONER, parameters, expandable=True)


def _object_store(options: Options) -> dict[str, Any]:
    device_class = options.storage_classes.object.device_class
    spec = {
        "metadataPool": _pool(options, device_class),
        "dataPool": _pool(options, device_class),
        "preservePoolsOnDelete": True,
        "gateway": {"port": 80, "instances": 1, "priorityClassName": "system-cluster-critical"},
    }
    return {"apiVersion": "ceph.rook.io/v1", "kind": "CephObjectStore", "metadata": _meta(OBJECT_STORE), "spec": spec}


def _bucket_storage_class(settings: ObjectStorage) -> dict[str, Any]:
    parameters = {"objectStoreName": OBJECT_STORE, "objectStoreNamespace": NAMESPACE}
    return _storage_class(settings.name, False, BUCKET_PROVISIONER, parameters, expandable=False)


# --------------------------------------------------------------------------- node fragments


def node_fragments(plan: Plan, options: Options, node: NodePlan) -> NodeFragment | None:
    osd_names = {host.name for host in _osd_hosts(_hosts(plan.cluster), options)}
    holds_osds = node.name in osd_names
    # Any worker may run a pod that maps an RBD image or mounts CephFS, not only the OSD nodes.
    if not holds_osds and node.role != "worker":
        return None
    modules = ["rbd"]
    if options.storage_classes.filesystem.enabled:
        modules.append("ceph")
    units: list[Unit] = []
    disks: list[Disk] = []
    if holds_osds:
        reasons = _lvm_reasons(options)
        if reasons:
            modules.append("dm_mod")
            if options.encrypt_devices:
                modules.append("dm_crypt")
            text = _render("rookCeph-lvm2-check.service.j2", reasons=reasons)
            units.append(Unit(name=_LVM_UNIT, contents=text, enabled=True))
        if options.wipe_devices:
            listed = next((entry for entry in options.nodes if entry.name == node.name), None)
            devices = listed.devices if listed is not None else []
            # Left raw: no partitions, no filesystem. ceph-volume takes only empty disks.
            disks = [Disk(device=device, wipe_table=True) for device in devices if device.startswith("/dev/")]
    return NodeFragment(component=_FRAGMENT, kernel_modules=tuple(modules),
                        config=Config(units=tuple(units), disks=tuple(disks)))




def _render(template: str, **values: Any) -> str:
    return render_template("stellwerk.components", template, **values)


def upstream(options: Options) -> tuple[str, ...]:
    # operator.yaml holds csi.ceph.io OperatorConfig and Driver objects, whose CRDs and controller
    # (the Ceph-CSI operator that runs the RBD and CephFS drivers) come from csi-operator.yaml.
    return UPSTREAM
