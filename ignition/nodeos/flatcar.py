"""Flatcar Container Linux: Ignition configs, installed to disk by a two-stage netboot, binaries as sysexts.

Flatcar's /usr is read-only and ships neither the kubelet nor etcd; a systemd-sysext image placed under
/etc/extensions is merged over /usr at boot, which provides /usr/bin/kubelet and (on controllers) /usr/bin/etcd
for the units Stellwerk writes. `stellwerk images sysext` builds the images from the pinned upstream binaries;
Ignition fetches each from netboot (or a copy of its folder) and checks its sha512. They are kept under
/opt/extensions and linked in, so an upgrade only swaps a link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stellwerk.netboot.documents import Profile

from ..model import Config, Unit

from .base import CONSOLE_ARGS, NodeOS, profile, sysext_config

if TYPE_CHECKING:  # the plan imports the spec, which imports the components, which use these
    from stellwerk.plan import NodePlan, Plan


def extensions(plan: Plan, node: NodePlan) -> tuple[str, ...]:
    return ("kubernetes", "etcd") if node.is_controller else ("kubernetes",)


# locksmithd reboots a node whenever an OS update is staged, with no regard for the cluster: three controllers
# rebooting on their own can cost etcd its quorum. Reboots are the operator's to schedule.
NO_LOCKSMITH = Config(units=(Unit(name="locksmithd.service", mask=True),))


def netboot_profile(plan: Plan) -> Profile:
    """Flatcar's PXE image boots an installer that writes the OS to the node's install disk."""
    os = plan.spec.os
    base = f"/assets/flatcar/{os.channel}/{os.version}"
    return profile(f"flatcar-{os.channel}-{os.version}-install", kernel=f"{base}/flatcar_production_pxe.vmlinuz",
                   initrd=(f"{base}/flatcar_production_pxe_image.cpio.gz",),
                   args=("flatcar.first_boot=1", "ignition.platform.id=metal", *CONSOLE_ARGS), config="installer")


def install_metadata(plan: Plan) -> dict[str, Any]:
    return {"flatcar": {"channel": plan.spec.os.channel, "version": plan.spec.os.version}}


OS = NodeOS(
    family="flatcar", config_format="ignition", provisioner="Ignition",
    binaries="systemd-sysext images (kubernetes, and etcd on controllers) fetched by Ignition",
    storage=True, kernel_arguments=True, official_extensions="/etc/flatcar/enabled-sysext.conf",
    host_parts=lambda plan, node, images: (sysext_config(plan, extensions(plan, node), images), NO_LOCKSMITH),
    netboot_profile=netboot_profile, installs_to_disk=True, install_metadata=install_metadata,
    # Flatcar's os-release has ID=flatcar and SYSEXT_LEVEL=1.0: an image carrying these merges on every release.
    extensions=extensions, extension_release=(("ID", "flatcar"), ("SYSEXT_LEVEL", "1.0")),
)
