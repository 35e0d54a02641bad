"""`stellwerk netboot serve`: HTTP, TFTP and (optionally) DHCP for one rendered cluster.

Everything comes from the assets directory: the machine store (netboot/),
the node configs (nodes/), boot files (boot/) and the node network from
cluster.lock.yaml for full DHCP. iPXE itself comes from Debian's ipxe
package at run time and is never part of the assets.
"""

from __future__ import annotations

import ipaddress
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path


from stellwerk.base.errors import Problem, UserError
from stellwerk.lockfile import read_lock

IPXE_DIR = Path("/usr/lib/ipxe")
IPXE_FILES = ("undionly.kpxe", "ipxe.efi")
DHCP_MODES = ("off", "proxy", "full")  # none; PXE options only, beside a DHCP server; leases too


@dataclass(frozen=True)
class ServeOptions:
    assets_dir: Path
    listen: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    tftp_port: int = 69
    dhcp: str = "off"  # one of DHCP_MODES
    interface: str | None = None
    dhcp_range: tuple[str, str] | None = None
    ipxe_dir: Path = IPXE_DIR
    serve_controller_secrets: bool = False
    merge_urls: tuple[str, ...] = ()


def tftp_root(ipxe_dir: Path, into: Path) -> Path:
    """A directory holding only the iPXE binaries (copied: Debian's ipxe.efi is a symlink out of /usr/lib/ipxe)."""
    for name in IPXE_FILES:
        source = ipxe_dir / name
        if not source.exists():
            raise UserError(Problem(str(source), None, "", "not found; install Debian's ipxe package (apt-get install ipxe)"))
        shutil.copyfile(source, into / name)
    return into


def _server_address(options: ServeOptions) -> ipaddress.IPv4Address:
    if options.listen != "0.0.0.0":
        try:
            return ipaddress.IPv4Address(options.listen)
        except ValueError:
            raise UserError(Problem(f"--listen {options.listen}", None, "",
                                    "is not an IPv4 address of this host (or 0.0.0.0 with --interface)")) from None
    if options.interface is None:
        raise UserError(Problem("--listen", None, "", "listening on every address needs --interface IF, so the "
                                "address machines are sent to is known; or give --listen ADDR"))
    from .dhcp import interface_ipv4

    try:
        return interface_ipv4(options.interface)
    except (OSError, ValueError) as exc:
        raise UserError(Problem(f"--interface {options.interface}", None, "",
                                f"has no usable IPv4 address ({getattr(exc, 'strerror', None) or exc}); "
                                "name the provisioning network's interface (see 'ip -4 addr')")) from None


def dhcp_server(options: ServeOptions, store, server_ip: ipaddress.IPv4Address, http_port: int):
    from .dhcp import BootOptions, DHCPServer
    from .leases import Pool, Reservation

    if options.interface is None:
        raise UserError(Problem("--dhcp", None, "", f"--dhcp {options.dhcp} needs --interface IF (the provisioning network)"))
    boot = BootOptions(tftp_server=server_ip, http_boot_url=f"http://{server_ip}:{http_port}/boot.ipxe")
    pool = None
    reservations = []
    if options.dhcp == "full":
        network = read_lock(options.assets_dir).spec.network
        start, end = options.dhcp_range or (None, None)
        try:
            pool = Pool(str(network.node_cidr), start=start, end=end,
                        router=str(network.gateway) if network.gateway else None,
                        dns=tuple(str(server) for server in network.dns), mtu=network.mtu)
        except ValueError as exc:
            raise UserError(Problem("--range", None, "", f"cannot serve DHCP for this cluster: {exc}")) from None
        for group in store.groups:
            mac, address = group.selector.get("mac"), group.metadata.get("address")
            if mac and isinstance(address, str):
                reservations.append(Reservation(mac, address, group.metadata.get("node")))
    lease_file = options.assets_dir / "state" / "dhcp-leases.json"
    try:
        lease_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(Problem(str(lease_file.parent), None, "", f"cannot hold the DHCP leases: {exc.strerror}")) from None
    return DHCPServer(options.interface, server_ip, options.dhcp, pool=pool, reservations=reservations,
                      boot=boot, lease_file=lease_file)


def _start(what: str, start, https: str | None = None):
    """Start one service; a socket that cannot be had is the operator's to fix, named by its option."""
    from .dhcp import DHCPStartError

    try:
        return start()
    except (OSError, DHCPStartError) as exc:
        if https is not None and getattr(exc, "listener", None) == "https":
            what = https
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(Problem(what, None, "", f"cannot start: {reason}; ports below 1024 need root, "
                                "and the port must not be in use by another server")) from None


def _reload(http, announce) -> None:
    """SIGHUP after a re-render: serve the new machine store; a broken one is reported and the old one kept."""
    try:
        store = http.reload()
    except UserError as exc:
        for problem in exc.problems:
            announce(f"reload refused, still serving the previous store: {problem}")
        return
    announce(f"reloaded: serving {len(store.groups)} machines")


def serve(options: ServeOptions, ready: threading.Event | None = None, stop: threading.Event | None = None,
          announce=print) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set); every service is stopped on the way out."""
    from .http import BootServer
    from .machines import MachineRegistry
    from .store import Store
    from .tftp import TFTPServer
    from .tls import server_identity

    store = Store.load(options.assets_dir)
    server_ip = _server_address(options)
    machines = MachineRegistry(options.assets_dir)
    machines.statuses([])  # a damaged state file is reported now, not at the first boot
    identity = server_identity(options.assets_dir, [server_ip])
    stop = stop or threading.Event()
    started = []
    with tempfile.TemporaryDirectory(prefix="stellwerk-tftp-") as scratch:
        try:
            # No public URL: scripts name the address each machine reached us on.
            http = _start(f"--http-port {options.http_port}", lambda: BootServer(
                store, options.assets_dir, options.listen, options.http_port,
                serve_controller_secrets=options.serve_controller_secrets, tls=identity,
                tls_port=options.https_port, machines=machines, extra_merges=options.merge_urls),
                https=f"--https-port {options.https_port}")
            _start(f"--http-port {options.http_port}", http.start)
            started.append(http)
            root = tftp_root(options.ipxe_dir, Path(scratch))
            tftp = TFTPServer(root, options.listen, options.tftp_port)
            _start(f"--tftp-port {options.tftp_port}", tftp.start)
            started.append(tftp)
            if options.dhcp != "off":
                dhcp = dhcp_server(options, store, server_ip, http.port)
                _start(f"--dhcp {options.dhcp} --interface {options.interface}", dhcp.start)
                started.append(dhcp)
            announce(f"serving {len(store.groups)} machines from {options.assets_dir}: http://{server_ip}:{http.port}/boot.ipxe, "
                     f"secrets on https://{server_ip}:{http.tls_port}, tftp {server_ip}:{tftp.port}, dhcp {options.dhcp}")
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(signum, lambda *_: stop.set())
                signal.signal(signal.SIGHUP, lambda *_: _reload(http, announce))
            if ready is not None:
                ready.set()
            stop.wait()
        finally:
            for service in reversed(started):
                service.stop()
