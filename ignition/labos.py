"""Lab OS hosts: the install disk becomes the state filesystem that makes provisioning stick.

The lab OS boots a read-only image over the network every time (images.md). Its initramfs looks for the filesystem
labelled `stellwerk-state`: found and marked provisioned, it becomes the upper layer of the root and Ignition does
not run again; missing, the root lives in memory and every boot starts clean. Ignition's disks stage creates it on
the node's install disk at first boot, from this part of the config.
"""

from __future__ import annotations

from stellwerk.images.contract import STATE_LABEL
from stellwerk.plan import NodePlan

from .model import Config, Filesystem


def state_filesystem_config(node: NodePlan) -> Config:
    # wipeFilesystem: Ignition runs only on a machine's first boot (or a reinstall), when whatever the disk held
    # belongs to no one; an old state layer from another cluster must not leak into this node's root.
    return Config(filesystems=(Filesystem(device=node.install_disk, format="ext4", label=STATE_LABEL,
                                          wipe_filesystem=True),))
