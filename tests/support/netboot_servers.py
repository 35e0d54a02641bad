"""A rendered cluster served the way `netboot serve` serves it, for tests: HTTPS listener and machine states."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

from stellwerk.netboot.http import BootServer
from stellwerk.netboot.machines import MachineRegistry
from stellwerk.netboot.store import Store
from stellwerk.netboot.tls import server_identity

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def render(cluster_file: Path, output: Path) -> Path:
    """Render as an operator does: the cluster's sysext images first (for Flatcar), then the assets."""
    from stellwerk.render import render as render_cluster

    from .sysext import build_images

    build_images(cluster_file, output)
    render_cluster(cluster_file, output)
    return output


def private_copy(rendered: Path, into: Path) -> Path:
    """A copy for one test: machine states and the TLS identity are written into the assets directory."""
    shutil.copytree(rendered, into, symlinks=True)
    return into


def secure_server(assets: Path, **options) -> BootServer:
    """A started BootServer on loopback with its HTTPS listener (a free port) and the machine states."""
    options.setdefault("request_timeout", 5)
    options.setdefault("idle_timeout", 5)
    return BootServer(Store.load(assets), assets, "127.0.0.1", 0, tls=server_identity(assets, [LOOPBACK]),
                      tls_port=0, machines=MachineRegistry(assets), **options).start()
