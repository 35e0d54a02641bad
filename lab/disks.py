"""The disks of a lab VM, and the cluster's disk names checked against them before any VM starts.

Every lab machine has the same emulated NVMe drives (domain.py): the install disk and two data disks, each its own
controller at a fixed PCI slot with a serial derived from the domain name. So a node's disk names are known before
it boots, under each of the names udev gives them: the kernel's (/dev/nvme0n1), by-id (the model and serial) and
by-path (the PCI address). A cluster file that names any other disk would leave Ignition waiting for a device that
never appears, and the node would fail its disks stage after minutes; `lab up` refuses it at once instead.

Names that the config itself creates or that only exist on a formatted disk (RAID arrays under /dev/md/, LUKS
mappings, by-label and by-partlabel links, by-uuid) are not disks and are not checked; a partition of a lab disk is
accepted, since a machine's disk may already hold it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stellwerk.components.claims import on_disk
from stellwerk.base.errors import Problem
from stellwerk.load import LoadedCluster

from .domain import NVME_FIRST_SLOT, NVME_MODEL, nvme_serial

INSTALL_DISK_GIB, DATA_DISK_GIB, DATA_DISKS = 4, 2, 2
NOT_DISKS = ("/dev/md/", "/dev/mapper/", "/dev/disk/by-label/", "/dev/disk/by-partlabel/", "/dev/disk/by-uuid/",
             "/dev/disk/by-partuuid/")


@dataclass(frozen=True)
class LabDisk:
    index: int
    size_gib: int
    names: tuple[str, ...]  # kernel name first

    @property
    def kernel_name(self) -> str:
        return self.names[0]


def lab_disks(domain_name: str) -> tuple[LabDisk, ...]:
    """The NVMe drives of the lab domain `domain_name`, in controller order (nvme0n1 is the install disk)."""
    disks = []
    for index in range(1 + DATA_DISKS):
        serial = nvme_serial(domain_name, index)
        disks.append(LabDisk(index, INSTALL_DISK_GIB if index == 0 else DATA_DISK_GIB, (
            f"/dev/nvme{index}n1",
            f"/dev/disk/by-id/nvme-{NVME_MODEL.replace(' ', '_')}_{serial}",
            f"/dev/disk/by-path/pci-0000:00:{NVME_FIRST_SLOT + index:02x}.0-nvme-1",
        )))
    return tuple(disks)


def describe(disks: tuple[LabDisk, ...]) -> str:
    install, *data = disks
    return (f"{install.kernel_name} ({install.size_gib} GiB, the install disk), "
            + ", ".join(f"{disk.kernel_name} ({disk.size_gib} GiB)" for disk in data)
            + f", also as {install.names[1].rsplit('_', 1)[0]}_<serial> and {install.names[2].split('-nvme')[0]}"
            f"…-nvme-1")


def names_a_lab_disk(device: str, disks: tuple[LabDisk, ...]) -> bool:
    if device.startswith(NOT_DISKS):
        return True
    return any(on_disk(device, name) for disk in disks for name in disk.names)


def problems(loaded: LoadedCluster, domain_name: Callable[[str], str]) -> list[Problem]:
    """One located problem for each disk the cluster names on a node that the node's lab VM will not have."""
    source = loaded.source
    found: list[Problem] = []
    for node, loc, device, what in _disk_names(loaded):
        disks = lab_disks(domain_name(node))
        if names_a_lab_disk(device, disks):
            continue
        fix = f"; set installDisk: {disks[0].kernel_name}" if what == "installDisk" else ""
        found.append(source.problem(loc, f"node {node}: {what} {device} is not a disk of a lab VM, which has "
                                    f"{describe(disks)}{fix}"))
    return found


def _disk_names(loaded: LoadedCluster) -> Iterator[tuple[str, tuple, str, str]]:
    """(node, location in the cluster file, device, what names it) for every disk the cluster names: the install
    disks and the disks components claim (snippets cannot name disks: storage comes from components)."""
    from stellwerk.components import COMPONENTS
    cluster = loaded.cluster
    for found in cluster.spec.nodes():
        yield found.name, (*found.location, "installDisk"), found.node.install_disk, "installDisk"
    for component in COMPONENTS:
        options = component.options_in(cluster)
        if options is not None and component.claims is not None:
            for claim in component.claims(cluster, options):
                if claim.kind == "disk":
                    yield claim.node, claim.loc, claim.value, claim.label
