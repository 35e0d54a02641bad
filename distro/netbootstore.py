"""The machine store that `stellwerk netboot serve` reads: one profile per way of booting, one group per node.

Written by render into assets/netboot/ as plain JSON (matchbox-style), so an
operator can read what a machine will get, and the server needs nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from .base.types import AssetFile
from .ignition.nodeos import node_os
from .netboot.documents import Group, Profile
from .plan import Plan

# Two-stage installs: the installed system boots its disk and asks for its config with os=installed.
INSTALLED_PROFILE = Profile(id="installed-disk", kernel=None, initrd=(), args=(), config="ignition",
                            file="netboot/profiles/installed-disk.json")


def store_files(plan: Plan) -> dict[str, AssetFile]:
    """The profile the node OS boots from the network, and one group per node (two with a two-stage install)."""
    nodeos = node_os(plan.spec.os.family)
    boot = nodeos.netboot_profile(plan)
    profiles = [boot, INSTALLED_PROFILE] if nodeos.installs_to_disk else [boot]
    groups = []
    for node in plan.nodes:
        metadata: dict[str, Any] = {"node": node.name, "role": node.role, **({"pool": node.pool} if node.pool else {}),
                                    "address": str(node.address), "installDisk": node.install_disk}
        if nodeos.install_metadata is not None:
            metadata.update(nodeos.install_metadata(plan))
        groups.append(Group.make(node.name, boot.id, {"mac": node.mac}, metadata, f"netboot/groups/{node.name}.json"))
        if nodeos.installs_to_disk:
            name = f"{node.name}-installed"
            groups.append(Group.make(name, INSTALLED_PROFILE.id, {"mac": node.mac, "os": "installed"}, metadata,
                                     f"netboot/groups/{name}.json"))
    return {document.file: _json(document.document()) for document in (*profiles, *groups)}


def _json(document: dict[str, Any]) -> AssetFile:
    return AssetFile((json.dumps(document, indent=2) + "\n").encode())
