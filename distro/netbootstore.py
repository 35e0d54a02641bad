"""The machine store that `stellwerk netboot serve` reads: one profile per way of booting, one group per node.

Written by render into assets/netboot/ as plain JSON (matchbox-style), so an
operator can read what a machine will get, and the server needs nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from .assets import AssetFile
from .plan import Plan

_CONSOLE = ["console=tty0", "console=ttyS0,115200n8"]


def profile(plan: Plan) -> dict[str, Any]:
    family = plan.spec.os.family
    if family == "flatcar":
        base = f"/assets/flatcar/{plan.spec.os.channel}/{plan.spec.os.version}"
        return {"id": f"flatcar-{plan.spec.os.channel}-{plan.spec.os.version}",
                "kernel": f"{base}/flatcar_production_pxe.vmlinuz",
                "initrd": [f"{base}/flatcar_production_pxe_image.cpio.gz"],
                "args": ["flatcar.first_boot=1", "ignition.platform.id=metal", *_CONSOLE],
                "config": "ignition"}
    if family == "lab":
        return {"id": "lab", "kernel": "/assets/lab/vmlinuz", "initrd": ["/assets/lab/initrd.img"],
                "args": ["ignition.firstboot", "ignition.platform.id=metal", *_CONSOLE], "config": "ignition"}
    return {"id": "debian", "kernel": "/assets/debian/linux", "initrd": ["/assets/debian/initrd.gz"],
            "args": [*_CONSOLE], "config": "cloud-config"}


def store_files(plan: Plan) -> dict[str, AssetFile]:
    boot = profile(plan)
    files = {f"netboot/profiles/{boot['id']}.json": _json(boot)}
    for node in plan.nodes:
        group = {
            "name": node.name,
            "profile": boot["id"],
            "selector": {"mac": node.mac},
            "metadata": {"node": node.name, "role": node.role, **({"pool": node.pool} if node.pool else {}),
                         "address": str(node.address), "installDisk": node.install_disk},
        }
        files[f"netboot/groups/{node.name}.json"] = _json(group)
    return files


def _json(document: dict[str, Any]) -> AssetFile:
    return AssetFile((json.dumps(document, indent=2) + "\n").encode())
