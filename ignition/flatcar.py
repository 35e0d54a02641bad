"""Flatcar hosts: the kubelet and etcd come as systemd-sysext images.

Flatcar's /usr is read-only and ships neither binary; a sysext image placed
under /etc/extensions is merged over /usr at boot, which provides
/usr/bin/kubelet and (on controllers) /usr/bin/etcd for the units Stellwerk
writes. The images are kept under /opt/extensions and linked in, so an upgrade
only swaps a link.
"""

from __future__ import annotations

from stellwerk import release
from stellwerk.plan import NodePlan, Plan

from .model import Config, File, Link


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
