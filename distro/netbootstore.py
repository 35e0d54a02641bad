"""The machine store that `stellwerk netboot serve` reads: one profile per way of booting, one group per node.

Written by render into assets/netboot/ as plain JSON (matchbox-style), so an
operator can read what a machine will get, and the server needs nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from .base.types import AssetFile
from .ignition.nodeos import node_os
from .plan import Plan

# Two-stage installs: the installed system boots its disk and asks for its config with os=installed.
INSTALLED_PROFILE = {"id": "installed-disk", "config": "ignition"}


def store_files(plan: Plan) -> dict[str, AssetFile]:
    """The profile the node OS boots from the network, and one group per node (two with a two-stage install)."""
    nodeos = node_os(plan.spec.os.family)
    boot = nodeos.netboot_profile(plan)
    two_stage = nodeos.installs_to_disk
    files = {f"netboot/profiles/{boot['id']}.json": _json(boot)}
    if two_stage:
        files[f"netboot/profiles/{INSTALLED_PROFILE['id']}.json"] = _json(INSTALLED_PROFILE)
    for node in plan.nodes:
        metadata: dict[str, Any] = {"node": node.name, "role": node.role, **({"pool": node.pool} if node.pool else {}),
                                    "address": str(node.address), "installDisk": node.install_disk}
        if nodeos.install_metadata is not None:
            metadata.update(nodeos.install_metadata(plan))
        files[f"netboot/groups/{node.name}.json"] = _json(
            {"name": node.name, "profile": boot["id"], "selector": {"mac": node.mac}, "metadata": metadata})
        if two_stage:
            files[f"netboot/groups/{node.name}-installed.json"] = _json(
                {"name": f"{node.name}-installed", "profile": INSTALLED_PROFILE["id"],
                 "selector": {"mac": node.mac, "os": "installed"}, "metadata": metadata})
    return files


def _json(document: dict[str, Any]) -> AssetFile:
    return AssetFile((json.dumps(document, indent=2) + "\n").encode())
