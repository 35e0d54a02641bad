"""OpenEBS: node-local (hostpath, LVM, ZFS) or replicated (Mayastor) persistent volumes, with a StorageClass.

One engine per cluster. The options say which engine, which nodes carry storage
and which disks they use; Stellwerk renders the engine's StorageClass (and, for
Mayastor, one DiskPool per disk) and gives each storage node what the engine
needs on the host: kernel modules, huge pages, a formatted and mounted disk, or
a boot-time unit that creates the LVM volume group or the ZFS pool.

The engines' own controllers are installed separately: LVM and ZFS from the
pinned upstream manifests (`upstream()`), hostpath and Mayastor with the OpenEBS
Helm chart (see docs/components/openebs.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

from stellwerk.components.claims import Claim
from stellwerk.base.templating import render_template
from stellwerk.components.unitnames import device_unit_name, mount_unit_name
from stellwerk.components.base import ComponentOptions
from stellwerk.ignition.fragments import NodeFragment
from stellwerk.ignition.model import Config, Directory, File, Filesystem, Unit
from stellwerk.ignition.nodeos import NodeOS, families_that, node_os
from stellwerk.spectypes import DNSLabel, StrictModel
from stellwerk.base.yamlout import dump_yaml

if TYPE_CHECKING:
    from stellwerk.plan import NodePlan, Plan
    from stellwerk.spec import Cluster

KEY = "openebs"

Engine = Literal["hostpath", "lvm", "zfs", "mayastor"]
ENGINES: tuple[str, ...] = ("hostpath", "lvm", "zfs", "mayastor")
_HERE: tuple[str, ...] = ("spec", "components", KEY)

PROVISIONERS = {
    "hostpath": "openebs.io/local",
    "lvm": "local.csi.openebs.io",
    "zfs": "zfs.csi.openebs.io",
    "mayastor": "io.openebs.csi-mayastor",
}
HOSTNAME_LABEL = "kubernetes.io/hostname"
MANAGED_BY = {"app.kubernetes.io/managed-by": "stellwerk"}
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"

# The filesystem label of the hostpath disk; xfs allows at most 12 characters.
HOSTPATH_LABEL = "openebs"
SETUP_DIR = "/opt/stellwerk/bin"
LVM_UNIT = "stellwerk-openebs-lvm.service"
ZFS_UNIT = "stellwerk-openebs-zfs.service"

# Mayastor: the io-engine needs at least 2 GiB of 2 MiB huge pages; its nodes carry this label.
MAYASTOR_MIN_PAGES = 1024
PAGE_MIB = 2
MAYASTOR_LABEL = ("openebs.io/engine", "mayastor")
DISKPOOL_API_VERSION = "openebs.io/v1beta2"


# --------------------------------------------------------------------------- field types

_DEVICE = re.compile(r"/dev/[A-Za-z0-9._:+@=-]+(/[A-Za-z0-9._:+@=-]+)*")


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(
            f"{value!r} is not a block device path; write /dev/NAME, preferably a stable link such as "
            "/dev/disk/by-id/... or /dev/disk/by-path/... (letters, digits and . _ : + @ = - only)"
        )
    return value


_READ_ONLY_OR_VIRTUAL = ("/usr", "/proc", "/sys", "/dev", "/run", "/boot", "/etc")


def _base_path(value: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(
            f"{value!r} is not a plain absolute directory path such as /var/mnt/openebs "
            "(letters, digits, '.', '_' and '-' between slashes, no trailing slash)"
        )
    for tree in _READ_ONLY_OR_VIRTUAL:
        if value == tree or value.startswith(tree + "/"):
            raise ValueError(f"{value!r} is under {tree}, which is read-only or not a disk on the nodes; use a "
                             "directory under /var, such as /var/mnt/openebs")
    return value


def _lvm_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}", value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not an LVM volume group name: use letters, digits and + _ . - "
                         "(not starting with '-'), such as openebs-vg")
    return value


_ZFS_RESERVED = ("mirror", "raidz", "draid", "spare")


def _zfs_pool(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]{0,239}", value):
        raise ValueError(f"{value!r} is not a ZFS pool name: start with a letter, then letters, digits and "
                         "_ . : -, such as openebs-zpool")
    if value == "log" or value.startswith(_ZFS_RESERVED) or re.match(r"c[0-9]", value):
        raise ValueError(f"{value!r} is reserved by ZFS (log, and names starting with {', '.join(_ZFS_RESERVED)} or "
                         "c<digit>); pick another, such as openebs-zpool")
    return value


def _object_name(value: str) -> str:
    if len(value) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", value):
        raise ValueError(f"{value!r} is not a Kubernetes object name: lower-case letters, digits, '-' and '.', "
                         "starting and ending with a letter or digit, such as openebs-fast")
    return value


def _pages(value: Any) -> Any:
    """A 2 MiB huge page count, or a size such as 2Gi / 4096Mi, as a page count."""
    if isinstance(value, bool):
        raise ValueError("write a number of 2 MiB pages such as 1024, or a size such as 2Gi")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)\s*(Gi|GiB|Mi|MiB)", value.strip())
        if match:
            amount, unit = int(match.group(1)), match.group(2)
            mib = amount * 1024 if unit.startswith("G") else amount
            if mib % PAGE_MIB:
                raise ValueError(f"{value!r} is not a whole number of 2 MiB pages; use an even number of MiB")
            return mib // PAGE_MIB
    raise ValueError(f"{value!r} is neither a number of 2 MiB pages (such as 1024) nor a size (such as 2Gi)")


def _enough_pages(pages: int) -> int:
    if pages < MAYASTOR_MIN_PAGES:
        raise ValueError(f"{pages} pages of 2 MiB ({pages * PAGE_MIB} MiB) is below Mayastor's minimum of "
                         f"{MAYASTOR_MIN_PAGES} pages (2Gi); use at least {MAYASTOR_MIN_PAGES} or 2Gi")
    return pages


DevicePath = Annotated[str, AfterValidator(_device)]
BasePath = Annotated[str, AfterValidator(_base_path)]
VolumeGroupName = Annotated[str, AfterValidator(_lvm_name)]
ZFSPoolName = Annotated[str, AfterValidator(_zfs_pool)]
ObjectName = Annotated[str, AfterValidator(_object_name)]
HugePages = Annotated[
    int,
    BeforeValidator(_pages),
    AfterValidator(_enough_pages),
    PlainSerializer(int, return_type=int),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": MAYASTOR_MIN_PAGES},
                              {"type": "string", "pattern": r"^\d+\s*(Gi|GiB|Mi|MiB)$"}]}),
]


# --------------------------------------------------------------------------- options


class StorageClassOptions(StrictModel):
    name: ObjectName | None = Field(None, description="Name of the StorageClass; default openebs-<engine>.")
    default: bool = Field(False, description="Make it the cluster's default StorageClass.")
    reclaim_policy: Literal["Delete", "Retain"] = Field(
        "Delete", description="What happens to a volume's data when its claim is deleted.")
    volume_binding_mode: Literal["WaitForFirstConsumer", "Immediate"] = Field(
        "WaitForFirstConsumer",
        description="WaitForFirstConsumer places a volume where its first pod is scheduled; hostpath requires it.")


class HostpathOptions(StrictModel):
    base_path: BasePath = Field("/var/mnt/openebs", description="Directory on each storage node that holds the volumes.")
    device: DevicePath | None = Field(
        None, description="A disk to format and mount at basePath on every storage node; none keeps the volumes on the "
        "root filesystem.")
    filesystem: Literal["xfs", "ext4"] = Field("xfs", description="Filesystem made on device.")
    wipe_filesystem: bool = Field(
        False, description="Reformat device even when it already holds a filesystem (destroys its data). When false, a "
        "blank disk is formatted, an existing filesystem of the right type and label is kept, and any other "
        "filesystem makes provisioning fail.")


class LVMOptions(StrictModel):
    volume_group: VolumeGroupName = Field("openebs-vg", description="LVM volume group the volumes are carved from.")
    devices: list[DevicePath] = Field(
        default_factory=list, description="Empty disks that make up the volume group on every storage node; empty "
        "means the group already exists and Stellwerk does not create it.")
    thin_provision: bool = Field(False, description="Thin-provision volumes (loads dm-thin-pool).")
    filesystem: Literal["ext4", "xfs", "btrfs"] = Field("ext4", description="Filesystem made on each volume.")


class ZFSOptions(StrictModel):
    pool: ZFSPoolName = Field("openebs-zpool", description="ZFS pool the volumes are created in.")
    devices: list[DevicePath] = Field(
        default_factory=list, description="Empty disks that make up the pool on every storage node; empty means the "
        "pool already exists and Stellwerk does not create it.")
    layout: Literal["stripe", "mirror", "raidz"] = Field(
        "stripe", description="How devices are combined: stripe (no redundancy), mirror (2+ disks), raidz (3+ disks).")
    filesystem: Literal["zfs", "ext4", "xfs", "btrfs"] = Field(
        "zfs", description="zfs gives each volume a dataset; the others format a zvol.")
    compression: Literal["off", "on", "lz4", "zstd", "gzip"] | None = Field(
        None, description="Compression of each volume; none inherits the pool's setting.")
    thin_provision: bool = Field(False, description="Do not reserve each volume's full size in the pool.")


class MayastorPool(StrictModel):
    node: DNSLabel = Field(description="Node the disk is in; it must be one of the storage nodes.")
    device: DevicePath = Field(description="The disk, whole; a stable /dev/disk/by-id/... link is best.")
    name: ObjectName | None = Field(None, description="DiskPool name; default <node>-<device name>.")


class MayastorOptions(StrictModel):
    hugepages_2mi: HugePages = Field(
        MAYASTOR_MIN_PAGES, alias="hugepages2Mi", validate_default=True,
        description="2 MiB huge pages reserved on each storage node: a count (at least 1024) or a size such as 2Gi.")
    kernel_argument: bool = Field(
        False, description="Also reserve the pages at boot with the kernel argument hugepages=N, which works even when "
        "memory is fragmented (os.family flatcar only; costs one extra reboot on first boot).")
    node_memory_gib: int | None = Field(
        None, alias="nodeMemoryGiB", ge=1,
        description="RAM of each storage node in GiB; when given, the huge pages may take at most half of it.")
    per_node_memory_gib: dict[DNSLabel, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, alias="perNodeMemoryGiB", description="RAM in GiB of particular nodes, overriding nodeMemoryGiB.")
    pools: list[MayastorPool] = Field(default_factory=list, description="One DiskPool per disk.")
    replicas: int = Field(3, ge=1, description="Copies of each volume, on different nodes.")
    namespace: DNSLabel = Field("openebs", description="Namespace Mayastor is installed in; DiskPools must live there.")


class Options(ComponentOptions):
    engine: Engine = Field("hostpath", description="Storage engine: hostpath, lvm, zfs or mayastor.")
    nodes: list[DNSLabel] | None = Field(
        None, description="Nodes that carry storage; default every worker.")
    storage_class: StorageClassOptions = Field(default_factory=StorageClassOptions,
                                               description="The StorageClass Stellwerk renders for the engine.")
    hostpath: HostpathOptions | None = Field(None, description="Options of engine hostpath.")
    lvm: LVMOptions | None = Field(None, description="Options of engine lvm.")
    zfs: ZFSOptions | None = Field(None, description="Options of engine zfs.")
    mayastor: MayastorOptions | None = Field(None, description="Options of engine mayastor.")

    def engine_options(self) -> HostpathOptions | LVMOptions | ZFSOptions | MayastorOptions:
        """The chosen engine's options, its defaults where the block is absent."""
        block = getattr(self, self.engine)
        if block is not None:
            return block
        return {"hostpath": HostpathOptions, "lvm": LVMOptions, "zfs": ZFSOptions, "mayastor": MayastorOptions}[
            self.engine]()

    def class_name(self) -> str:
        return self.storage_class.name or f"openebs-{self.engine}"


# --------------------------------------------------------------------------- helpers


def claims(cluster: Cluster, options: Options) -> Iterator[Claim]:
    where = (*_HERE, options.engine)
    engine = options.engine_options()
    label = f"openebs.{options.engine}"
    for node in storage_node_names(cluster, options):
        if isinstance(engine, HostpathOptions):
            yield Claim(node, "mount", engine.base_path, (*where, "basePath"), f"{label}.basePath")
            if engine.device is not None:
                yield Claim(node, "disk", engine.device, (*where, "device"), f"{label}.device")
        elif isinstance(engine, (LVMOptions, ZFSOptions)):
            for index, device in enumerate(engine.devices):
                yield Claim(node, "disk", device, (*where, "devices", index), f"{label}.devices")
    if isinstance(engine, MayastorOptions):
        for index, pool in enumerate(engine.pools):
            yield Claim(pool.node, "disk", pool.device, (*where, "pools", index, "device"), f"{label}.pools")


def storage_node_names(cluster: Cluster, options: Options) -> list[str]:
    """The nodes that carry storage, in cluster-file order: `nodes`, or every worker."""
    if options.nodes is not None:
        return list(dict.fromkeys(options.nodes))
    return [found.name for found in cluster.spec.nodes() if found.role == "worker"]


def _pool_name(pool: MayastorPool) -> str:
    if pool.name:
        return pool.name
    stem = pool.device.removeprefix("/dev/")
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "disk"
    return f"{pool.node}-{slug}"[:253].rstrip("-.")


def _memory_of(options: MayastorOptions, node: str) -> tuple[int, tuple[str, ...]] | None:
    """(GiB, where it was given) for a node, or None when the file does not say."""
    if node in options.per_node_memory_gib:
        return options.per_node_memory_gib[node], ("mayastor", "perNodeMemoryGiB", node)
    if options.node_memory_gib is not None:
        return options.node_memory_gib, ("mayastor", "nodeMemoryGiB")
    return None


def _install_disk_clash(device: str, node: Any) -> str | None:
    """Why `device` must not be used on `node` (a spec Node), or None."""
    if device == node.install_disk:
        return f"is the installDisk of {node.name}, where the OS lives"
    rest = device[len(node.install_disk):] if device.startswith(node.install_disk) else None
    if rest is not None and re.fullmatch(r"p?\d+", rest):
        return f"is a partition of {node.name}'s installDisk {node.install_disk}"
    return None


# --------------------------------------------------------------------------- check


def check(cluster: Cluster, options: Options) -> Iterator[tuple[tuple, str]]:
    nodes = {found.name: found.node for found in cluster.spec.nodes()}
    nodeos = node_os(cluster.spec.os.family)

    for engine in ENGINES:
        if engine != options.engine and getattr(options, engine) is not None:
            yield (*_HERE, engine), (
                f"options for engine {engine} are set but engine is {options.engine}; remove the {engine} block, "
                f"or set engine: {engine}")

    if options.nodes is not None:
        seen: set[str] = set()
        for index, name in enumerate(options.nodes):
            if name not in nodes:
                yield (*_HERE, "nodes", index), f"no node is named {name!r}; known nodes: {', '.join(nodes)}"
            elif name in seen:
                yield (*_HERE, "nodes", index), f"{name} is listed twice; list each node once"
            seen.add(name)
        if not options.nodes:
            yield (*_HERE, "nodes"), "is empty; list the nodes that carry storage, or remove the key to use every worker"
    elif not any(found.role == "worker" for found in cluster.spec.nodes()):
        yield (*_HERE, "nodes"), ("the cluster has no workers to carry storage; list the nodes that should "
                                  "(controllers are allowed) under nodes")

    storage = [name for name in storage_node_names(cluster, options) if name in nodes]
    engine = options.engine_options()
    where = (*_HERE, options.engine)

    def disks(devices: list[str], locate) -> Iterator[tuple[tuple, str]]:
        firsts: dict[str, int] = {}
        for index, device in enumerate(devices):
            if device in firsts:
                yield locate(index), f"{device} is already listed as devices[{firsts[device]}]; list each disk once"
                continue
            firsts[device] = index
            for name in storage:
                clash = _install_disk_clash(device, nodes[name])
                if clash:
                    yield locate(index), (f"{device} {clash}, and every storage node uses these disks; use "
                                          "another disk, or leave that node out of nodes")
                    break

    if isinstance(engine, HostpathOptions):
        if options.storage_class.volume_binding_mode != "WaitForFirstConsumer":
            yield (*_HERE, "storageClass", "volumeBindingMode"), (
                "hostpath volumes live on one node, so the provisioner needs WaitForFirstConsumer to know which; "
                "remove volumeBindingMode or set it to WaitForFirstConsumer")
        if engine.device is not None:
            yield from disks([engine.device], lambda _: (*where, "device"))
            if not nodeos.storage:
                yield (*where, "device"), (
                    f"os.family {nodeos.family} nodes get {nodeos.provisioner}, which cannot format and mount disks; "
                    "format and mount the disk at basePath yourself and remove device, or use os.family "
                    f"{families_that(lambda os: os.storage)}")
    elif isinstance(engine, LVMOptions):
        yield from disks(engine.devices, lambda index: (*where, "devices", index))
    elif isinstance(engine, ZFSOptions):
        yield from disks(engine.devices, lambda index: (*where, "devices", index))
        minimum = {"stripe": 1, "mirror": 2, "raidz": 3}[engine.layout]
        if engine.devices and len(engine.devices) < minimum:
            hint = "; with two disks use mirror" if engine.layout == "raidz" and len(engine.devices) == 2 else ""
            yield (*where, "devices"), (
                f"layout {engine.layout} needs at least {minimum} disks but {len(engine.devices)} "
                f"{'is' if len(engine.devices) == 1 else 'are'} listed; add disks or use layout stripe{hint}")
    elif isinstance(engine, MayastorOptions):
        yield from _check_mayastor(engine, nodes, storage, nodeos)


def _check_mayastor(mayastor: MayastorOptions, nodes: dict, storage: list[str],
                    nodeos: NodeOS) -> Iterator[tuple[tuple, str]]:
    where = (*_HERE, "mayastor")
    storage_set = set(storage)
    if mayastor.kernel_argument and not nodeos.kernel_arguments:
        yield (*where, "kernelArgument"), (
            f"kernel arguments are applied by {families_that(lambda os: os.kernel_arguments).capitalize()}'s "
            f"Ignition only, and os.family is {nodeos.family}; remove kernelArgument (the sysctl vm.nr_hugepages "
            "reserves the pages)")
    for name in mayastor.per_node_memory_gib:
        if name not in storage_set:
            what = f"{name} is not a storage node" if name in nodes else f"no node is named {name!r}"
            yield (*where, "perNodeMemoryGiB", name), (
                f"{what}; give memory only for storage nodes ({', '.join(storage) or 'none'})")
    huge_gib = mayastor.hugepages_2mi * PAGE_MIB / 1024
    short: dict[tuple, tuple[int, list[str]]] = {}  # where the memory is given -> (GiB, nodes it is too small for)
    for name in storage:
        memory = _memory_of(mayastor, name)
        if memory is not None and huge_gib > memory[0] / 2:
            short.setdefault(memory[1], (memory[0], []))[1].append(name)
    for loc, (gib, names_short) in short.items():
        yield (*_HERE, *loc), (
            f"{mayastor.hugepages_2mi} huge pages of 2 MiB take {huge_gib:g} GiB, more than half of the {gib} GiB of "
            f"RAM of {', '.join(names_short)}; lower mayastor.hugepages2Mi (Mayastor's minimum is "
            f"{MAYASTOR_MIN_PAGES}, 2Gi) or give the node{'s' if len(names_short) > 1 else ''} at least "
            f"{math.ceil(huge_gib * 2)} GiB")
    names: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    pool_nodes: list[str] = []
    for index, pool in enumerate(mayastor.pools):
        loc = (*where, "pools", index)
        if pool.node not in nodes:
            yield (*loc, "node"), f"no node is named {pool.node!r}; known nodes: {', '.join(nodes)}"
            continue
        if pool.node not in storage_set:
            yield (*loc, "node"), (
                f"{pool.node} is not a storage node, so no io-engine runs there; add it to nodes "
                f"(now: {', '.join(storage) or 'none'}) or move the pool")
        clash = _install_disk_clash(pool.device, nodes[pool.node])
        if clash:
            yield (*loc, "device"), f"{pool.device} {clash}; use another disk"
        if (pool.node, pool.device) in pairs:
            yield (*loc, "device"), (f"{pool.device} on {pool.node} is already pools[{pairs[pool.node, pool.device]}]; "
                                     "a disk belongs to one pool")
        pairs.setdefault((pool.node, pool.device), index)
        name = _pool_name(pool)
        if name in names:
            yield (*loc, "name"), f"DiskPool name {name} is already used by pools[{names[name]}]; set a distinct name"
        names.setdefault(name, index)
        if pool.node not in pool_nodes:
            pool_nodes.append(pool.node)
    if not pool_nodes:
        yield (*where, "pools"), (
            "there are no DiskPools, so Mayastor has nowhere to put volumes; add one {node, device} per disk under "
            "mayastor.pools")
    elif mayastor.replicas > len(pool_nodes):
        on = f"on {len(pool_nodes)} node{'s' if len(pool_nodes) != 1 else ''} ({', '.join(pool_nodes)})"
        yield (*where, "replicas"), (
            f"{mayastor.replicas} replicas need DiskPools on at least {mayastor.replicas} nodes, but the pools are {on}; "
            f"add pools on more nodes or set replicas to {len(pool_nodes)}")


# --------------------------------------------------------------------------- manifests


def manifests(plan: Plan, options: Options) -> list[dict[str, Any]]:
    objects = [_storage_class(plan, options)]
    engine = options.engine_options()
    if isinstance(engine, MayastorOptions):
        objects += [_disk_pool(pool, engine.namespace) for pool in engine.pools]
    return objects


def _storage_class(plan: Plan, options: Options) -> dict[str, Any]:
    engine = options.engine_options()
    annotations: dict[str, str] = {}
    parameters: dict[str, str] = {}
    if isinstance(engine, HostpathOptions):
        annotations["openebs.io/cas-type"] = "local"
        annotations["cas.openebs.io/config"] = dump_yaml([
            {"name": "StorageType", "value": "hostpath"},
            {"name": "BasePath", "value": engine.base_path},
        ])
    elif isinstance(engine, LVMOptions):
        parameters = {"storage": "lvm", "volgroup": engine.volume_group, "fsType": engine.filesystem}
        if engine.thin_provision:
            parameters["thinProvision"] = "yes"
    elif isinstance(engine, ZFSOptions):
        parameters = {"poolname": engine.pool, "fstype": engine.filesystem}
        if engine.compression is not None:
            parameters["compression"] = engine.compression
        if engine.thin_provision:
            parameters["thinprovision"] = "yes"
    else:
        parameters = {"protocol": "nvmf", "repl": str(engine.replicas)}
    if options.storage_class.default:
        annotations[DEFAULT_CLASS_ANNOTATION] = "true"
    metadata: dict[str, Any] = {"name": options.class_name(), "labels": dict(MANAGED_BY)}
    if annotations:
        metadata["annotations"] = annotations
    storage_class: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata,
        "provisioner": PROVISIONERS[options.engine],
    }
    if parameters:
        storage_class["parameters"] = parameters
    storage_class["reclaimPolicy"] = options.storage_class.reclaim_policy
    storage_class["volumeBindingMode"] = options.storage_class.volume_binding_mode
    if options.engine != "hostpath":
        storage_class["allowVolumeExpansion"] = True
    if options.engine != "mayastor":
        # Local volumes can only be placed where the directory, volume group or pool exists.
        storage = storage_node_names(plan.cluster, options)
        storage_class["allowedTopologies"] = [
            {"matchLabelExpressions": [{"key": HOSTNAME_LABEL, "values": storage}]}]
    return storage_class


def _disk_pool(pool: MayastorPool, namespace: str) -> dict[str, Any]:
    # No upstream schema exists as YAML (the operator builds its CRD at run time); the shape
    # follows openebs/mayastor-control-plane's v1beta2 DiskPoolSpec: node, disks, topology.
    return {
        "apiVersion": DISKPOOL_API_VERSION,
        "kind": "DiskPool",
        "metadata": {"name": _pool_name(pool), "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {"node": pool.node, "disks": [pool.device]},
    }


# --------------------------------------------------------------------------- node fragments




def _render(template: str, **values: object) -> str:
    return render_template("stellwerk.components", f"{KEY}-{template}.j2", trim_blocks=True, **values)


def node_fragments(plan: Plan, options: Options, node: NodePlan) -> NodeFragment | None:
    storage = node.name in storage_node_names(plan.cluster, options)
    engine = options.engine_options()
    if isinstance(engine, MayastorOptions):
        return _mayastor_fragment(plan, engine, node, storage)
    if not storage:
        return None
    if isinstance(engine, HostpathOptions):
        return _hostpath_fragment(engine)
    if isinstance(engine, LVMOptions):
        return _lvm_fragment(engine)
    return _zfs_fragment(plan, engine)


def _hostpath_fragment(hostpath: HostpathOptions) -> NodeFragment:
    directories = (Directory(path=hostpath.base_path, mode=0o755),)
    if hostpath.device is None:
        return NodeFragment(component=KEY, config=Config(directories=directories))
    filesystem = Filesystem(device=hostpath.device, format=hostpath.filesystem, label=HOSTPATH_LABEL,
                            wipe_filesystem=hostpath.wipe_filesystem)
    mount = Unit(name=mount_unit_name(hostpath.base_path), enabled=True, contents=_render(
        "hostpath.mount", where=hostpath.base_path, what=f"/dev/disk/by-label/{HOSTPATH_LABEL}",
        type=hostpath.filesystem, device=hostpath.device))
    return NodeFragment(component=KEY, config=Config(directories=directories, filesystems=(filesystem,),
                                                     units=(mount,)))


def _setup(name: str, unit: str, what: str, devices: list[str], after: tuple[str, ...], **values: Any) -> Config:
    """A boot-time script and the oneshot unit that runs it before the kubelet, once its disks are there."""
    script = f"{SETUP_DIR}/openebs-{name}-setup"
    contents = _render(f"{name}-setup.sh", what=what, devices=devices, **values)
    service = _render("setup.service", what=what, script=script, after=after,
                      device_units=[device_unit_name(device) for device in devices])
    return Config(files=(File(path=script, contents=contents.encode(), mode=0o755),),
                  units=(Unit(name=unit, enabled=True, contents=service),))


def _lvm_fragment(lvm: LVMOptions) -> NodeFragment:
    modules = ("dm-snapshot", "dm-thin-pool") if lvm.thin_provision else ("dm-snapshot",)
    config = Config()
    if lvm.devices:
        config = _setup("lvm", LVM_UNIT, f"LVM volume group {lvm.volume_group}", lvm.devices, (),
                        volume_group=lvm.volume_group)
    return NodeFragment(component=KEY, kernel_modules=modules, config=config)


def _zfs_fragment(plan: Plan, zfs: ZFSOptions) -> NodeFragment:
    config = Config()
    if zfs.devices:
        vdev = [] if zfs.layout == "stripe" else [zfs.layout]
        # After the ZFS tools are merged in (Flatcar's sysext) and ZFS's own import of known pools.
        config = _setup("zfs", ZFS_UNIT, f"ZFS pool {zfs.pool}", zfs.devices,
                        ("systemd-sysext.service", "zfs-import.target"), pool=zfs.pool, vdev=vdev)
    extensions = node_os(plan.spec.os.family).official_extensions
    if extensions is not None:
        # Flatcar ships ZFS (module and tools) as an official sysext, merged only when listed in this file.
        # An append rather than contents, so that other names listed there survive.
        sysext = File(path=extensions, overwrite=None, append=(b"zfs\n",))
        config = Config(files=(*config.files, sysext), units=config.units)
    return NodeFragment(component=KEY, kernel_modules=("zfs",), config=config)


def _mayastor_fragment(plan: Plan, mayastor: MayastorOptions, node: NodePlan, storage: bool) -> NodeFragment | None:
    if not storage:
        # Pods anywhere may mount Mayastor volumes over NVMe/TCP; the csi-node plugin needs the initiator module.
        return None if node.is_controller else NodeFragment(component=KEY, kernel_modules=("nvme-tcp",))
    pages = str(mayastor.hugepages_2mi)
    return NodeFragment(
        component=KEY,
        kernel_modules=("nvme-tcp",),
        sysctls=(("vm.nr_hugepages", pages),),
        kernel_arguments=(f"hugepages={pages}",) if mayastor.kernel_argument else (),
        labels=(MAYASTOR_LABEL,),
    )


def upstream(options: Options) -> tuple[str, ...]:
    # hostpath (dynamic-localpv-provisioner) and Mayastor ship only as Helm charts: no pinned manifest.
    return {"lvm": ("openebs-lvm",), "zfs": ("openebs-zfs",)}.get(options.engine, ())
