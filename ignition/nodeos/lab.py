"""The lab OS (images.md): Stellwerk's own image from Debian packages, booted live over the network every time.

Controllers get etcd as a systemd-sysext image, like Flatcar nodes: the lab runs that delivery path for real.
Its initramfs looks for the filesystem labelled `stellwerk-state`: found and marked provisioned, it becomes the
upper layer of the root and Ignition does not run again; missing, the root lives in memory and every boot starts
clean. Ignition's disks stage creates it on the node's install disk at first boot, from this OS's host part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stellwerk.images.contract import INITRD_FILE, KERNEL_ARGS, KERNEL_FILE, STATE_LABEL

from ..model import Config, Filesystem
from stellwerk.netboot.documents import Profile

from .base import NodeOS, profile, sysext_config

if TYPE_CHECKING:  # the plan imports the spec, which imports the components, which use these
    from stellwerk.plan import NodePlan, Plan


def state_filesystem_config(node: NodePlan) -> Config:
    # wipeFilesystem: Ignition runs only on a machine's first boot (or a reinstall), when whatever the disk held
    # belongs to no one; an old state layer from another cluster must not leak into this node's root.
    return Config(filesystems=(Filesystem(device=node.install_disk, format="ext4", label=STATE_LABEL,
                                          wipe_filesystem=True),))


def netboot_profile(plan: Plan) -> Profile:
    return profile("lab", kernel=f"/assets/lab/{KERNEL_FILE}", initrd=(f"/assets/lab/{INITRD_FILE}",),
                   args=tuple(KERNEL_ARGS), config="ignition")


def extensions(plan: Plan, node: NodePlan) -> tuple[str, ...]:
    return ("etcd",) if node.is_controller else ()


OS = NodeOS(
    family="lab", config_format="ignition", provisioner="Ignition",
    binaries="a systemd-sysext image of the host's Debian etcd on controllers, fetched by Ignition (no kubelet: "
             "the lab runs no Kubernetes)",
    storage=True, kernel_arguments=False, official_extensions=None,
    host_parts=lambda plan, node, images: (state_filesystem_config(node),
                                           sysext_config(plan, extensions(plan, node), images)),
    netboot_profile=netboot_profile,
    # The lab OS is Debian 12 (os-release ID=debian, VERSION_ID=12), and so is the host that builds it: its etcd
    # is Debian's, the same build the lab OS would have installed, delivered the way Flatcar gets it.
    extensions=extensions, extension_release=(("ID", "debian"), ("VERSION_ID", "12")),
    host_binaries=(("etcd", "/usr/bin/etcd"), ("etcdctl", "/usr/bin/etcdctl")),
)
