"""An isolated libvirt network: a bridge with one host address, no DHCP, no DNS, no forwarding.

The lab's machines must get their addresses and boot files from Stellwerk's own DHCP server, so libvirt must not
answer DHCP (no <dhcp> element) and must not start dnsmasq at all (<dns enable='no'/>: dnsmasq would also take
port 53 and, with DHCP, port 67 on the bridge). Without <forward> the network is isolated: libvirt's firewall
rules let guests reach the host and each other, but nothing beyond.

The network is persistent (defined, then started), so a lab survives a libvirtd restart; `remove` takes it down
and undefines it, and touches no network it did not find by name.

libvirt keeps the MAC addresses of each network's guests in DNSMASQ_STATE_DIR/<bridge>.macs, even when it runs no
dnsmasq, but it creates that directory only when it starts a dnsmasq. With none ever started on the host, plugging a
guest into the network fails ("Failed to create file '/var/lib/libvirt/dnsmasq/<bridge>.macs.new'"), so `create`
makes the directory, as libvirt itself would have. It belongs to libvirt and stays.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from .errors import LabError

_BRIDGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # IFNAMSIZ - 1 characters, no '/', ':' or spaces
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
SYS_NET = Path("/sys/class/net")
DNSMASQ_STATE_DIR = Path("/var/lib/libvirt/dnsmasq")  # libvirt's compiled-in path on Debian (LOCALSTATEDIR)


@dataclass(frozen=True)
class NetworkSpec:
    """`name` is libvirt's; `bridge` the host interface; `host` the host's address and prefix on it."""

    name: str
    bridge: str
    host: ipaddress.IPv4Interface
    mtu: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", ipaddress.IPv4Interface(self.host))
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"network name {self.name!r}: use 1 to 64 letters, digits and '._+-'")
        if not _BRIDGE.fullmatch(self.bridge):
            raise ValueError(f"bridge name {self.bridge!r}: use 1 to 15 letters, digits and '._-' (a Linux "
                             "interface name)")
        if self.host.ip in (self.host.network.network_address, self.host.network.broadcast_address) \
                and self.host.network.prefixlen < 31:
            raise ValueError(f"host address {self.host}: is the network or broadcast address of its subnet")
        if self.mtu is not None and not 576 <= self.mtu <= 65535:
            raise ValueError(f"mtu {self.mtu}: must be between 576 and 65535")

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.host.ip

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.host.network


def network_xml(spec: NetworkSpec) -> str:
    """libvirt's network XML for `spec`."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "bridge", name=spec.bridge, stp="off", delay="0")  # no STP: ports forward at once
    if spec.mtu is not None:
        ET.SubElement(root, "mtu", size=str(spec.mtu))
    ET.SubElement(root, "dns", enable="no")
    ET.SubElement(root, "ip", address=str(spec.address), prefix=str(spec.subnet.prefixlen))
    return ET.tostring(root, encoding="unicode")


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise


def create(conn: libvirt.virConnect, spec: NetworkSpec) -> libvirt.virNetwork:
    """Define and start the network; refuses to take over a network or an interface that already exists."""
    if _lookup(conn, spec.name) is not None:
        raise LabError(f"network {spec.name}", "already exists in libvirt; remove it ('virsh net-destroy "
                       f"{spec.name}; virsh net-undefine {spec.name}') or choose another name")
    if (SYS_NET / spec.bridge).exists():
        raise LabError(f"bridge {spec.bridge}", "already exists on this host; choose another bridge name")
    try:
        DNSMASQ_STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(str(DNSMASQ_STATE_DIR), f"libvirt needs this directory and it cannot be made: {exc.strerror}; "
                       "create it as root") from None
    try:
        network = conn.networkDefineXML(network_xml(spec))
    except libvirt.libvirtError as exc:
        raise LabError(f"network {spec.name}", f"libvirt refused it: {exc.get_error_message()}") from None
    try:
        network.create()
    except BaseException as exc:
        network.undefine()
        if not isinstance(exc, libvirt.libvirtError):
            raise
        # libvirt checks for a clash with the host's routes here ("network is already in use by interface").
        raise LabError(f"network {spec.name}", f"cannot start it: {exc.get_error_message()}; if the subnet "
                       f"{spec.subnet} is in use on this host, choose another") from None
    return network


def remove(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine the network `name`; False if there was none."""
    network = _lookup(conn, name)
    if network is None:
        return False
    if network.isActive():
        network.destroy()
    if network.isPersistent():
        network.undefine()
    return True


@contextlib.contextmanager
def isolated(conn: libvirt.virConnect, spec: NetworkSpec) -> Iterator[libvirt.virNetwork]:
    """The network, for the duration of a `with` block; removed afterwards whatever happened."""
    network = create(conn, spec)
    try:
        yield network
    finally:
        remove(conn, spec.name)
