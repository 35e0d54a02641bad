"""The starter cluster file that `stellwerk init` writes."""

from __future__ import annotations

import re

from . import release
from .base.templating import environment

_PLATFORMS = {
    # A libvirt lab on this machine: MACs in QEMU's 52:54:00 range, NVMe install disks.
    "lab": {"os_family": "lab", "install_disk": "/dev/nvme0n1", "api_endpoint": "10.213.0.11", "controllers": 3, "workers": 1},
    "baremetal": {"os_family": "flatcar", "install_disk": "/dev/sda", "api_endpoint": "api.example.com", "controllers": 3, "workers": 2},
    "packet": {"os_family": "flatcar", "install_disk": "/dev/sda", "api_endpoint": "api.example.com", "controllers": 3, "workers": 2},
}


def starter_cluster_file(platform: str, directory_name: str) -> str:
    options = _PLATFORMS[platform]
    name = re.sub(r"[^a-z0-9-]+", "-", directory_name.lower()).strip("-")[:63] or "cluster"
    controllers = [_node(f"c{i}", 10 + i) for i in range(1, options["controllers"] + 1)]
    workers = [_node(f"w{i}", 20 + i) for i in range(1, options["workers"] + 1)]
    return environment("stellwerk").get_template("cluster.yaml.j2").render(
        platform=platform,
        name=name,
        kubernetes_version=release.KUBERNETES_VERSION,
        flatcar_version=release.FLATCAR_VERSION,
        sysext_path=release.SYSEXT_SERVED_PATH,
        node_cidr="10.213.0.0/24",
        gateway="10.213.0.1",
        controllers=controllers,
        workers=workers,
        **{key: options[key] for key in ("os_family", "install_disk", "api_endpoint")},
    )


def _node(name: str, octet: int) -> dict[str, str]:
    # The MAC's last byte spells the address's last octet (c1: ...:11 and 10.213.0.11), for people reading the lab.
    return {"name": name, "mac": f"52:54:00:00:00:{octet:02d}", "address": f"10.213.0.{octet}"}
