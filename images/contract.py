"""What the rest of Stellwerk relies on about the lab OS: names, labels, kernel arguments.

Netboot serves `KERNEL_FILE` and `INITRD_FILE` from ASSETS/boot/lab/ with
`KERNEL_ARGS` plus `ignition.config.url=...`; the Ignition renderer gives every
lab node a filesystem labelled `STATE_LABEL` on its install disk, which
becomes the writable layer of its root.
"""

from __future__ import annotations

# The filesystem whose presence makes the root persistent (see docs/images.md).
STATE_LABEL = "stellwerk-state"
# At the top of the state filesystem once Ignition has run to the end; later boots skip Ignition.
PROVISIONED_MARKER = ".stellwerk-provisioned"

KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
MANIFEST_FILE = "manifest.json"

# Without ignition.config.url, which is per cluster.
KERNEL_ARGS: tuple[str, ...] = ("ignition.firstboot", "ignition.platform.id=metal", "console=tty0",
                                "console=ttyS0,115200n8")

# Where the OS image sits inside the initrd (the first, uncompressed cpio archive).
IMAGE_IN_INITRD = "stellwerk/root.squashfs"
