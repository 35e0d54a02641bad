"""The machine store that `stellwerk netboot serve` reads: one profile per way of booting, one group per node.

Written by render into assets/netboot/ as plain JSON (matchbox-style), so an
operator can read what a machine will get, and the server needs nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from .base.types import AssetFile
from .plan import Plan

_CONSOLE = ["console=tty0", "console=ttyS0,115200n8"]


def profile(plan: Plan) -> dict[str, Any]:
    """The profile a node boots from the network: Flatcar's installer, the lab OS live, or Debian's installer."""
    family = plan.spec.os.family
    if family == "flatcar":
        base = f"/assets/flatcar/{plan.spec.os.channel}/{plan.spec.os.version}"
        return {"id": f"flatcar-{plan.spec.os.channel}-{plan.spec.os.version}-install",
                "kernel": f"{base}/flatcar_production_pxe.vmlinuz",
                "initrd": [f"{base}/flatcar_production_pxe_image.cpio.gz"],
                "args": ["flatcar.first_boot=1", "ignition.platform.id=metal", *_CONSOLE],
                "config": "installer"}
    if family == "lab":
        from .images.contract import INITRD_FILE, KERNEL_ARGS, KERNEL_FILE

        return {"id": "lab", "kernel": f"/assets/lab/{KERNEL_FILE}", "initrd": [f"/assets/lab/{INITRD_FILE}"],
                "args": list(KERNEL_ARGS), "config": "ignition"}
    return {"id": "debian", "kernel": "/assets/debian/linux", "initrd": ["/assets/debian/initrd.gz"],
            "args": [*_CONSOLE], "config": "cloud-config"}


# Two-stage installs (Flatcar): the installed system boots its disk and asks for its config with os=installed.
INSTALLED_PROFILE = {"id": "installed-disk", "config": "ignition"}


def store_files(plan: Plan) -> dict[str, AssetFile]:
    boot = profile(plan)
    two_stage = boot["config"] == "installer"
    files = {f"netboot/profiles/{boot['id']}.json": _json(boot)}
    if two_stage:
        files[f"netboot/profiles/{INSTALLED_PROFILE['id']}.json"] = _json(INSTALLED_PROFILE)
    for node in plan.nodes:
        metadata: dict[str, Any] = {"node": node.name, "role": node.role, **({"pool": node.pool} if node.pool else {}),
                                    "address": str(node.address), "installDisk": node.install_disk}
        if two_stage:
            metadata["flatcar"] = {"channel": plan.spec.os.channel, "version": plan.spec.os.version}
        files[f"netboot/groups/{node.name}.json"] = _json(
            {"name": node.name, "profile": boot["id"], "selector": {"mac": node.mac}, "metadata": metadata})
        if two_stage:
            files[f"netboot/groups/{node.name}-installed.json"] = _json(
                {"name": f"{node.name}-installed", "profile": INSTALLED_PROFILE["id"],
                 "selector": {"mac": node.mac, "os": "installed"}, "metadata": metadata})
    return files


def _json(document: dict[str, Any]) -> AssetFile:
    return AssetFile((json.dumps(document, indent=2) + "\n").encode())
