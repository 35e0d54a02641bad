"""Flatcar Container Linux: Ignition configs, installed to disk by a two-stage netboot, binaries as sysexts.

Flatcar's /usr is read-only and ships neither the kubelet nor etcd; a systemd-sysext image placed under
/etc/extensions is merged over /usr at boot, which provides /usr/bin/kubelet and (on controllers) /usr/bin/etcd
for the units Stellwerk writes. The images are kept under /opt/extensions and linked in, so an upgrade only swaps
a link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stellwerk import release

from ..model import Config, File, Link
from stellwerk.netboot.documents import Profile

from .base import CONSOLE_ARGS, NodeOS, profile

if TYPE_CHECKING:  # the plan imports the spec, which imports the components, which use these
    from stellwerk.plan import NodePlan, Plan


def sysext_config(plan: Plan, node: NodePlan) -> Config:
    images = [("kubernetes", plan.spec.kubernetes.version)]
    if node.is_controller:
        images.append(("etcd", release.ETCD_VERSION))
    base = plan.spec.os.sysext_base_url
    files, links = [], []
    for name, version in images:
        image = release.sysext_image_name(name, version)
        target = f"/opt/extensions/{name}/{image}"
        files.append(File(path=target, source=f"{base}/{image}", mode=0o644))
        links.append(Link(path=f"/etc/extensions/{name}.raw", target=target, hard=False))
    return Config(files=tuple(files), links=tuple(links))


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
    host_parts=lambda plan, node: (sysext_config(plan, node),),
    netboot_profile=netboot_profile, installs_to_disk=True, install_metadata=install_metadata,
)
