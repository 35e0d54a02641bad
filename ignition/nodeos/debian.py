"""Debian hosts: cloud-init configs (the same config as the Ignition nodes', expressed as #cloud-config), booted
from the network into Debian's installer."""

from __future__ import annotations

from typing import TYPE_CHECKING


from stellwerk.netboot.documents import Profile

from .base import CONSOLE_ARGS, NodeOS, no_parts, profile

if TYPE_CHECKING:  # the plan imports the spec, which imports the components, which use these
    from stellwerk.plan import Plan


def netboot_profile(plan: Plan) -> Profile:
    return profile("debian", kernel="/assets/debian/linux", initrd=("/assets/debian/initrd.gz",), args=CONSOLE_ARGS,
                   config="cloud-config")


OS = NodeOS(
    family="debian", config_format="cloud-config", provisioner="cloud-init",
    binaries="packages the operator's snippets or images provide",
    storage=False, kernel_arguments=False, official_extensions=None,
    host_parts=no_parts, netboot_profile=netboot_profile,
)
