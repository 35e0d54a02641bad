"""IPv6 router advertisements on a lab network, so that iPXE does not wait for an IPv6 router that never comes.

iPXE configures every interface with DHCPv4 and IPv6 autoconfiguration side by side, and waits for both. On an
IPv4-only network nothing answers its Router Solicitations, so iPXE retransmits them with back-off until it gives
up, about 13 seconds later, on every boot (more than half of a VM's netboot under TCG). iPXE ends IPv6
autoconfiguration at the first Router Advertisement it receives.

`RouterAdvertiser` answers each Router Solicitation seen on one interface with an advertisement that configures
nothing: router lifetime 0 (not a default router), no prefix, no managed/other flags (no DHCPv6). It works at the
link layer (an AF_PACKET socket), so it needs no IPv6 on the host's bridge, where libvirt turns IPv6 off for
networks without an IPv6 address. It is meant for the lab's own isolated networks only: on a shared network a
router advertisement, even one that configures nothing, is a claim to be a router.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT = 133, 134
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_NODES_MAC = bytes.fromhex("333300000001")
_OPTION_SOURCE_LINK_ADDRESS = 1
_MIN_INTERVAL = 0.2  # seconds between advertisements: enough for any number of booting VMs, no flood amplifier
_PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent


def link_local(mac: bytes) -> bytes:
    """The EUI-64 link-local address of `mac` (RFC 4291 appendix A): fe80::, the MAC with ff:fe in the middle and
    the universal/local bit flipped."""
    return bytes.fromhex("fe80000000000000") + bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advertisement(mac: bytes) -> bytes:
    """The Ethernet frame of an advertisement from `mac` to all nodes that configures nothing (RFC 4861 4.2)."""
    source = link_local(mac)
    option = bytes([_OPTION_SOURCE_LINK_ADDRESS, 1]) + mac  # length in units of 8 octets
    # type, code, checksum, cur hop limit (0: unspecified), flags (M=0, O=0), router lifetime 0 (not a default
    # router), reachable time 0 and retrans timer 0 (unspecified).
    body = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 0, 0, 0, 0, 0) + option
    pseudo = source + ALL_NODES + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    # Hop limit 255: receivers drop neighbour discovery packets that may have crossed a router (RFC 4861 6.1.2).
    header = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, 255) + source + ALL_NODES
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + header + body


def is_solicitation(frame: bytes) -> bool:
    """An Ethernet frame carrying an ICMPv6 Router Solicitation (no extension headers: none is ever used)."""
    return (len(frame) >= 14 + 40 + 8 and frame[12:14] == b"\x86\xdd" and frame[14] >> 4 == 6
            and frame[14 + 6] == ICMPV6 and frame[14 + 40] == ROUTER_SOLICITATION)


class RouterAdvertiser:
    """Answers Router Solicitations on `interface` until stopped; use as a context manager."""

    def __init__(self, interface: str):
        self.interface = interface
        self.answered = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._frame = b""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RouterAdvertiser:
        mac = bytes.fromhex((Path("/sys/class/net") / self.interface / "address").read_text().strip().replace(":", ""))
        self._frame = advertisement(mac)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        try:
            sock.bind((self.interface, ETH_P_IPV6))
            sock.settimeout(0.5)  # how often the loop looks at the stop flag
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"routeradv-{self.interface}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sock.close()
        self._sock = None

    def __enter__(self) -> RouterAdvertiser:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    log.warning("router advertiser on %s stopped reading: %s", self.interface, exc)
                return
            if address[2] == _PACKET_OUTGOING or not is_solicitation(frame):
                continue
            now = time.monotonic()
            if now - last < _MIN_INTERVAL:
                continue  # the advertisement just sent (to all nodes) answers this one too
            # Counted before it goes out: a client that has the advertisement must see the count that includes it.
            self.answered += 1
            try:
                self._sock.send(self._frame)
            except OSError as exc:
                self.answered -= 1
                log.warning("router advertiser on %s cannot send: %s", self.interface, exc)
                continue
            last = now
