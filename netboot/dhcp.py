"""The DHCP server of `stellwerk netboot serve`: full mode (addresses and boot) or proxy mode (boot only).

Layers, top to bottom:

- `parse_request` turns one UDP payload into a validated `Request` (the fixed BOOTP header is read
  directly, scapy decodes the DHCP options; this module checks what scapy tolerates). Anything
  unusable raises `Malformed` or `Ignored`; the server counts it, logs it (rate-limited) and carries on.
- `DHCPServer.handle` decides the answer to one request and returns the `Reply` objects to send,
  without touching a socket, so it can be exercised directly.
- `DHCPServer.start` runs the socket loop in one thread: UDP sockets bound to the interface
  (SO_BINDTODEVICE) on port 67, and on 4011 in proxy mode, plus an AF_PACKET socket to unicast an
  offer to a client that has no address yet (RFC 2131 section 4.1).

Boot: plain PXE firmware is told to fetch iPXE over TFTP, by architecture (option 93: 0 = BIOS ->
`undionly.kpxe`; 7, 9 = x86-64 UEFI -> `ipxe.efi`); iPXE (user class "iPXE", option 77) is told to
fetch the HTTP boot script, so the chain ends there instead of looping.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal

from scapy.layers.dhcp import DHCP, dhcpmagic

from .leases import Lease, LeaseTable, Pool, Reservation, normalize_mac

log = logging.getLogger("stellwerk.netboot.dhcp")

Mode = Literal["off", "proxy", "full"]
MODES: tuple[str, ...] = ("off", "proxy", "full")

SERVER_PORT = 67
CLIENT_PORT = 68
PXE_PORT = 4011

MIN_MESSAGE = 240  # 236 bytes of fixed BOOTP header + the 4-byte magic cookie
MAX_MESSAGE = 4096  # no client request comes near this; larger datagrams are dropped unparsed
MIN_REPLY = 300  # old PXE ROMs drop BOOTP replies shorter than this (RFC 951 size); replies are padded

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = {
    DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
    ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM",
}
_CLIENT_MESSAGES = {DISCOVER, REQUEST, DECLINE, RELEASE, INFORM}
_LEASEQUERY_MESSAGES = range(9, 14)  # FORCERENEW and the leasequery family (RFC 3203, 4388, 6926)

BROADCAST = IPv4Address("255.255.255.255")
ZERO = IPv4Address("0.0.0.0")
_BROADCAST_FLAG = 0x8000

# PXE 2.1 option 43 sub-options ("PXEClient" vendor encapsulation).
PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_ITEM = 71
PXE_END = 255
# Discovery control bit 3: "if a boot file name is present in the initial offer, download it; do not
# prompt, show a menu or discover boot servers".
_PXE_BOOT_FROM_OFFER = bytes([PXE_DISCOVERY_CONTROL, 1, 0x08, PXE_END])
# iPXE's own options live in option 175; its sub-option 176 ("no-pxedhcp") = 1 tells iPXE not to wait for
# ProxyDHCP offers. Without it, iPXE holds every offer that has no PXE options for DHCP_DISC_PROXY_TIMEOUT_SEC
# (2 s, ~3 s with its retransmission timer) in case a ProxyDHCP server answers too.
IPXE_ENCAPSULATED = 175
_IPXE_NO_PXEDHCP = bytes([176, 1, 1])

ARCHITECTURES = {  # option 93 values (RFC 4578 and the IANA registry), for log lines
    0: "x86-bios", 6: "x86-uefi", 7: "x86_64-uefi", 9: "x86_64-uefi", 10: "arm32-uefi",
    11: "arm64-uefi", 15: "x86-uefi-http", 16: "x86_64-uefi-http", 19: "arm64-uefi-http",
}

COUNTERS = (
    "received", "malformed", "ignored",
    "discover", "request", "decline", "release", "inform",
    "offer", "ack", "nak",
    "no_address", "no_boot_file", "send_errors", "errors",
)


class Dropped(Exception):
    """A datagram the server does not answer; `counter` names the counter it goes to."""

    counter = "ignored"


class Malformed(Dropped):
    """Not a well-formed DHCP client message: truncated, wrong op or cookie, garbled options."""

    counter = "malformed"


class Ignored(Dropped):
    """Well-formed, but nothing for this server to answer (wrong mode, another server's client...)."""

    counter = "ignored"


class DHCPStartError(RuntimeError):
    """The server cannot listen: the message names interface, port and the system's reason."""


# ---- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One validated client message. Option values are as sent; absent ones are None or empty."""

    message_type: int
    xid: int
    flags: int
    ciaddr: IPv4Address
    giaddr: IPv4Address
    chaddr: bytes  # the 16 bytes as sent, echoed in the reply
    mac: str
    server_id: IPv4Address | None = None  # option 54
    requested_address: IPv4Address | None = None  # option 50
    vendor_class: bytes = b""  # option 60
    user_class: bytes = b""  # option 77
    arch: int | None = None  # option 93, first entry
    guid: bytes | None = None  # option 97, 17 bytes
    vendor_options: bytes | None = None  # option 43
    hostname: str | None = None  # option 12
    relay_info: bytes | None = None  # option 82, echoed to the relay (RFC 3046)

    @property
    def name(self) -> str:
        return MESSAGE_NAMES[self.message_type]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & _BROADCAST_FLAG)

    @property
    def is_pxe(self) -> bool:
        return self.vendor_class.startswith(b"PXEClient")

    @property
    def is_ipxe(self) -> bool:
        """User class "iPXE": iPXE sends it bare; RFC 3004 clients as length-prefixed entries."""
        if self.user_class == b"iPXE":
            return True
        data = self.user_class
        while data:
            size = data[0]
            if data[1:1 + size] == b"iPXE":
                return True
            data = data[1 + size:]
        return False

    @property
    def wants_boot(self) -> bool:
        return self.is_pxe or self.is_ipxe or self.arch is not None


def _single(options: dict[Any, tuple], name: str, code: int) -> Any:
    values = options.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise Malformed(f"option {code} ({name}) must hold exactly one value, it holds {len(values)}")
    return values[0]


def _raw(options: dict[Any, tuple], name: str) -> bytes | None:
    values = options.get(name)
    if values is None:
        return None
    return b"".join(v if isinstance(v, bytes) else bytes(v) for v in values)


def _collect(entries: Iterable[Any], into: dict[Any, tuple], where: str) -> None:
    """Scapy's option list -> {name: values}. Scapy leaves bytes where it could not decode."""
    for entry in entries:
        if entry == "end":
            return  # RFC 2131: whatever follows the end option is padding
        if entry == "pad":
            continue
        if isinstance(entry, (bytes, bytearray)):
            code = entry[0] if entry else 0
            claimed = entry[1] if len(entry) > 1 else None
            if claimed is not None and claimed + 2 > len(entry):
                raise Malformed(
                    f"garbled options in {where}: option {code} claims {claimed} bytes, {len(entry) - 2} remain"
                )
            raise Malformed(f"garbled options in {where}: option {code} has a value of the wrong size or form")
        if not isinstance(entry, tuple) or not entry:
            raise Malformed(f"garbled options in {where}")
        name, values = entry[0], tuple(entry[1:])
        if name in into:
            old = into[name]
            if old and values and isinstance(old[-1], bytes) and isinstance(values[0], bytes):
                into[name] = (old[-1] + values[0],)  # RFC 3396: a long option split in parts
            continue  # otherwise the first occurrence wins
        into[name] = values


def parse_request(data: bytes) -> Request:
    """Decode and check one client message; raise Malformed or Ignored when it is not one to answer."""
    size = len(data)
    if size < MIN_MESSAGE:
        raise Malformed(f"truncated: {size} bytes, a DHCP message has at least {MIN_MESSAGE}")
    if size > MAX_MESSAGE:
        raise Malformed(f"oversized: {size} bytes, more than {MAX_MESSAGE}")
    if data[0] != 1:
        raise Malformed(f"wrong op {data[0]}: a client sends BOOTREQUEST (1)")
    if data[236:240] != dhcpmagic:
        raise Malformed(f"wrong magic cookie {data[236:240].hex()}, expected {dhcpmagic.hex()}")
    htype, hlen = data[1], data[2]
    if hlen > 16:
        raise Malformed(f"hardware address length {hlen} is more than the 16-byte chaddr field")
    if htype != 1 or hlen != 6:
        raise Ignored(f"hardware type {htype} with address length {hlen}: only Ethernet (1, 6) is served")
    try:
        # Scapy decodes the options only; the fixed header is read below with struct (dissecting it
        # with BOOTP would double the cost of a request). As when DHCP is dissected under BOOTP,
        # options it cannot dissect at all count as none.
        try:
            layer = DHCP(data[MIN_MESSAGE:]) if size > MIN_MESSAGE else None
        except Exception:
            layer = None
        options: dict[Any, tuple] = {}
        if layer is None:
            raise Malformed("no DHCP options after the magic cookie")
        _collect(layer.options, options, "the options field")
        overload = _single(options, "dhcp-option-overload", 52)
        if overload is not None:
            if overload not in (1, 2, 3):
                raise Malformed(f"option 52 (overload) has the invalid value {overload}")
            if overload & 1:
                _collect(DHCP(data[108:236]).options, options, "the file field")
            if overload & 2:
                _collect(DHCP(data[44:108]).options, options, "the sname field")
    except Dropped:
        raise
    except Exception as exc:  # scapy raising on some odd input is a malformed packet, not a crash
        raise Malformed(f"undecodable: {type(exc).__name__}: {exc}") from None

    message_type = _single(options, "message-type", 53)
    if message_type is None:
        raise Ignored("plain BOOTP request (no option 53): only DHCP is served")
    if message_type in _LEASEQUERY_MESSAGES:
        raise Ignored(f"message type {message_type} (forcerenew/leasequery) is not served")
    if message_type not in _CLIENT_MESSAGES:
        raise Malformed(f"message type {message_type} is not a client message")

    def address(name: str, code: int) -> IPv4Address | None:
        value = _single(options, name, code)
        return None if value is None else IPv4Address(value)

    arch = None
    arch_raw = _raw(options, "pxe_client_architecture")
    if arch_raw is not None:
        if len(arch_raw) < 2 or len(arch_raw) % 2:
            raise Malformed(f"option 93 (client architecture) has {len(arch_raw)} bytes, not a list of 16-bit types")
        arch = struct.unpack("!H", arch_raw[:2])[0]
    vendor_class = _raw(options, "vendor_class_id") or b""
    if arch is None and (found := re.match(rb"PXEClient:Arch:(\d{5})", vendor_class)):
        arch = int(found.group(1))  # no option 93: the architecture the PXE vendor class names
    guid = _raw(options, "pxe_client_machine_identifier")
    if guid is not None and (len(guid) != 17 or guid[0] != 0):
        raise Malformed(f"option 97 (client GUID) must be 17 bytes starting with type 0, it is {guid[:20].hex()}")
    hostname = None
    hostname_raw = _raw(options, "hostname")
    if hostname_raw:
        text = hostname_raw.rstrip(b"\0").decode("ascii", "replace")
        hostname = text if text.replace("-", "").replace(".", "").isalnum() and len(text) <= 253 else None

    return Request(
        message_type=message_type,
        xid=int.from_bytes(data[4:8], "big"),
        flags=int.from_bytes(data[10:12], "big"),
        ciaddr=IPv4Address(data[12:16]),
        giaddr=IPv4Address(data[24:28]),
        chaddr=bytes(data[28:44]),
        mac=":".join(f"{b:02x}" for b in data[28:34]),
        server_id=address("server_id", 54),
        requested_address=address("requested_addr", 50),
        vendor_class=vendor_class,
        user_class=_raw(options, "user_class") or b"",
        arch=arch,
        guid=guid,
        vendor_options=_raw(options, "vendor_specific"),
        hostname=hostname,
        relay_info=_raw(options, "relay_agent_information"),
    )


# ---- boot choice ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootOptions:
    """Where booting machines go. `tftp_server` is siaddr (next-server) and option 66; the file names
    are paths on that TFTP server; `http_boot_url` is what iPXE is told to load (option 67)."""

    tftp_server: IPv4Address | str
    http_boot_url: str
    bios_file: str = "undionly.kpxe"
    uefi_file: str = "ipxe.efi"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tftp_server", IPv4Address(str(self.tftp_server)))
        if not self.http_boot_url.startswith(("http://", "https://")):
            raise ValueError(f"http_boot_url {self.http_boot_url!r} must be an http:// or https:// URL")
        for value in (self.http_boot_url, self.bios_file, self.uefi_file):
            if not value or len(value.encode()) > 255 or not value.isprintable():
                raise ValueError(f"boot file {value!r} must be 1 to 255 printable bytes (one DHCP option)")

    def choose(self, arch: int | None, ipxe: bool) -> tuple[str | None, str]:
        """(file to load or None, why) for a client of architecture `arch` (option 93)."""
        if ipxe:
            return self.http_boot_url, "iPXE: chain to the HTTP boot script"
        if arch is None:
            return None, "no client architecture (option 93)"
        if arch == 0:
            return self.bios_file, "x86 BIOS"
        if arch in (7, 9):
            return self.uefi_file, "x86-64 UEFI"
        return None, f"no boot file for architecture {arch} ({ARCHITECTURES.get(arch, 'unknown')})"


# ---- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One datagram to send. `mac` set: send it as an Ethernet frame to that MAC (the client has no
    address yet, RFC 2131 section 4.1); otherwise by UDP from local port `port` to `destination`."""

    message_type: int
    payload: bytes
    destination: tuple[str, int]
    port: int
    mac: str | None = None
    address: IPv4Address | None = None  # yiaddr
    boot_file: str | None = None

    @property
    def name(self) -> str:
        return MESSAGE_NAMES[self.message_type]


class _RateLimit:
    """At most `burst` log lines per `window` seconds; then one line with how many were suppressed."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self.started, self.used, self.suppressed = 0.0, 0, 0

    def allow(self, now: float) -> bool:
        if now - self.started >= self.window:
            if self.suppressed:
                log.warning("dhcp log-suppressed count=%d window=%ss", self.suppressed, self.window)
            self.started, self.used, self.suppressed = now, 0, 0
        if self.used < self.burst:
            self.used += 1
            return True
        self.suppressed += 1
        return False


# The fixed BOOTP header, op to file (236 bytes); the magic cookie and the options follow it.
_BOOTP_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")  # 20 bytes: no IP options
_UDP_HEADER = struct.Struct("!HHHH")


@functools.lru_cache(maxsize=512)
def _cached_options(options: tuple) -> bytes:
    return bytes(DHCP(options=list(options)))


def _options_field(options: list) -> bytes:
    """The encoded options (after the magic cookie). Scapy encodes them, once per distinct list: the
    replies of one pool repeat the same options for every client, and building scapy packets per reply
    would cost more than everything else the server does for a request."""
    try:
        return _cached_options(tuple(options))
    except TypeError:  # an unhashable value (a list): encoded each time
        return bytes(DHCP(options=options))


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_frame(src_mac: bytes, dst_mac: str, src_ip: IPv4Address, dst_ip: str, sport: int, dport: int,
               payload: bytes) -> bytes:
    """An Ethernet frame holding one IPv4/UDP datagram with both checksums: what scapy's Ether/IP/UDP
    builds (identification 1, TTL 64), without its per-packet cost."""
    source, destination = src_ip.packed, socket.inet_aton(dst_ip)
    udp_length = 8 + len(payload)
    ip = _IPV4_HEADER.pack(0x45, 0, 20 + udp_length, 1, 0, 64, socket.IPPROTO_UDP, 0, source, destination)
    ip = ip[:10] + _checksum(ip).to_bytes(2, "big") + ip[12:]
    pseudo = source + destination + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_length)
    udp_checksum = _checksum(pseudo + _UDP_HEADER.pack(sport, dport, udp_length, 0) + payload) or 0xFFFF  # 0: none
    udp = _UDP_HEADER.pack(sport, dport, udp_length, udp_checksum)
    return bytes.fromhex(dst_mac.replace(":", "")) + src_mac + b"\x08\x00" + ip + udp + payload


def _interface_mac(interface: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        info = fcntl.ioctl(probe.fileno(), 0x8927, struct.pack("256s", interface.encode()[:15]))  # SIOCGIFHWADDR
    return info[18:24]


def interface_ipv4(interface: str) -> IPv4Address:
    """The (primary) IPv4 address of `interface`, for `server_ip` when serving on all addresses;
    OSError if the interface does not exist or has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        info = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15]))  # SIOCGIFADDR
    return IPv4Address(info[20:24])


class DHCPServer:
    """DHCP on one interface, in `mode` "full" (addresses from `pool` and `reservations`, plus boot),
    "proxy" (beside another DHCP server: boot options only, on ports 67 and 4011) or "off".

    `boot` defaults to TFTP and `http://<server_ip>/boot.ipxe` on this host. `lease_file` (full mode)
    is where leases persist; None keeps them in memory. `clock` is wall-clock seconds (for tests).
    """

    def __init__(
        self,
        interface: str,
        server_ip: IPv4Address | str,
        mode: Mode,
        *,
        pool: Pool | None = None,
        reservations: Iterable[Reservation] = (),
        boot: BootOptions | None = None,
        lease_file: Path | str | None = None,
        server_port: int = SERVER_PORT,
        client_port: int = CLIENT_PORT,
        pxe_port: int = PXE_PORT,
        offer_hold: int = 60,
        decline_hold: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"dhcp mode {mode!r}: choose one of {', '.join(MODES)}")
        if not interface or len(interface) > 15 or "/" in interface or interface.strip() != interface:
            raise ValueError(f"interface {interface!r} is not a network interface name")
        self.interface = interface
        self.server_ip = IPv4Address(str(server_ip))
        self.mode = mode
        self.pool = pool
        self.boot = boot or BootOptions(self.server_ip, f"http://{self.server_ip}/boot.ipxe")
        self.server_port, self.client_port, self.pxe_port = server_port, client_port, pxe_port
        self.table: LeaseTable | None = None
        if mode == "full":
            if pool is None:
                raise ValueError("full DHCP mode needs a pool (the network, range, router and DNS to hand out)")
            if self.server_ip not in pool.network:
                raise ValueError(f"server address {self.server_ip} is not in the pool network {pool.network}")
            self.table = LeaseTable(
                pool, self.server_ip, reservations, Path(lease_file) if lease_file else None, clock,
                offer_hold=offer_hold, decline_hold=decline_hold,
            )
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._counter_lock = threading.Lock()
        self._drop_log = _RateLimit()
        self._sockets: dict[int, socket.socket] = {}
        self._raw: socket.socket | None = None
        self._if_mac: bytes | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ---- public --------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """A snapshot of every counter (see COUNTERS); all keys are always present."""
        with self._counter_lock:
            return dict(self._counters)

    def leases(self) -> list[Lease]:
        """The unexpired leases (full mode), in address order."""
        return self.table.leases() if self.table is not None else []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Open the sockets and serve in a background thread. Mode "off" does nothing."""
        if self.mode == "off":
            log.info("dhcp off interface=%s", self.interface)
            return
        if self._thread is not None:
            raise RuntimeError("the DHCP server is already started")
        ports = [self.server_port] + ([self.pxe_port] if self.mode == "proxy" else [])
        try:
            for port in ports:
                self._sockets[port] = self._open_udp(port)
        except BaseException:
            self._close()
            raise
        try:
            self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: sends, receives nothing
            self._raw.bind((self.interface, 0))
            self._if_mac = _interface_mac(self.interface)
        except OSError as exc:
            if self._raw is not None:
                self._raw.close()
            self._raw = None
            log.warning("dhcp no-raw-socket interface=%s reason=%r: offers to clients that ask for unicast "
                        "will be broadcast instead", self.interface, str(exc))
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"dhcp-{self.interface}", daemon=True)
        self._thread.start()
        log.info("dhcp started mode=%s interface=%s server=%s ports=%s", self.mode, self.interface, self.server_ip,
                 ",".join(map(str, ports)))

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        self._thread.join(timeout=10)
        self._thread = None
        self._close()
        log.info("dhcp stopped interface=%s counters=%s", self.interface,
                 " ".join(f"{k}={v}" for k, v in self.counters().items()))

    def __enter__(self) -> DHCPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- deciding ------------------------------------------------------------------------------

    def handle(self, data: bytes, source: tuple[str, int], port: int) -> list[Reply]:
        """The replies to one datagram received on local `port` from `source`; never raises for bad input."""
        self._count("received")
        if self.mode == "off":
            self._count("ignored")
            return []
        try:
            request = parse_request(data)
        except Dropped as drop:
            self._count(drop.counter)
            self._log_drop(drop, data, source, port)
            return []
        self._count(request.name.lower())
        try:
            if port == self.pxe_port and self.mode == "proxy":
                reply, note = self._pxe_boot_server(request, source)
            elif self.mode == "proxy":
                reply, note = self._proxy(request)
            else:
                reply, note = self._full(request)
        except Dropped as drop:
            self._count(drop.counter)
            if drop.counter == "malformed":
                self._log_drop(drop, data, source, port)
            else:
                self._log_exchange(request, port, None, str(drop), level=logging.DEBUG)
            return []
        if reply is not None:
            self._count(reply.name.lower())
        self._log_exchange(request, port, reply, note)
        return [reply] if reply is not None else []

    def _full(self, request: Request) -> tuple[Reply | None, str]:
        table = self.table
        assert table is not None and self.pool is not None
        if request.giaddr != ZERO and request.giaddr not in self.pool.network:
            raise Ignored(f"relayed from {request.giaddr}, which is not in the served network {self.pool.network}")
        mac = request.mac
        if request.message_type == DISCOVER:
            address = table.choose(mac, request.requested_address)
            if address is None:
                self._count("no_address")
                log.warning("dhcp pool-exhausted client=%s msg=DISCOVER xid=0x%08x range=%s-%s", mac, request.xid,
                            self.pool.start, self.pool.end)
                return None, "no free address in the pool"
            return self._lease_reply(request, OFFER, address)

        if request.message_type == REQUEST:
            if request.server_id is not None and request.server_id != self.server_ip:
                table.forget_offer(mac)
                raise Ignored(f"client chose the offer of server {request.server_id}")
            if request.server_id is not None or request.requested_address is not None:
                address = request.requested_address or (request.ciaddr if request.ciaddr != ZERO else None)
            else:
                address = request.ciaddr if request.ciaddr != ZERO else None  # renewing or rebinding
            if address is None:
                return self._nak(request, "REQUEST names no address (no option 50 and no ciaddr)")
            why = table.check(mac, address)
            if why is not None:
                return self._nak(request, why)
            table.bind(mac, address, request.hostname)
            return self._lease_reply(request, ACK, address)

        if request.message_type == DECLINE:
            if request.server_id is not None and request.server_id != self.server_ip:
                raise Ignored(f"DECLINE for server {request.server_id}")
            if request.requested_address is None:
                raise Malformed("DECLINE without the declined address (option 50)")
            table.decline(mac, request.requested_address)
            log.warning("dhcp declined client=%s address=%s: held back from the pool", mac, request.requested_address)
            return None, f"address {request.requested_address} declined: in use by someone else"

        if request.message_type == RELEASE:
            if request.server_id is not None and request.server_id != self.server_ip:
                raise Ignored(f"RELEASE for server {request.server_id}")
            released = table.release(mac, request.ciaddr)
            return None, f"released {request.ciaddr}" if released else f"no lease of {request.ciaddr} to release"

        # INFORM: the client has an address (configured by hand) and asks for the other parameters.
        if request.ciaddr == ZERO:
            raise Malformed("INFORM without the client's address (ciaddr)")
        return self._lease_reply(request, ACK, None)

    def _proxy(self, request: Request) -> tuple[Reply | None, str]:
        if request.message_type != DISCOVER:
            raise Ignored(f"proxy mode answers only DISCOVER on port {self.server_port}, not {request.name}")
        if not request.is_pxe:
            raise Ignored("not a PXE client (no PXEClient vendor class, option 60)")
        return self._proxy_reply(request, OFFER)

    def _pxe_boot_server(self, request: Request, source: tuple[str, int]) -> tuple[Reply | None, str]:
        if request.message_type not in (REQUEST, INFORM):
            raise Ignored(f"the PXE boot server on port {self.pxe_port} answers REQUEST and INFORM, not {request.name}")
        if not request.is_pxe:
            raise Ignored("not a PXE client (no PXEClient vendor class, option 60)")
        return self._proxy_reply(request, ACK, source)

    # ---- building ------------------------------------------------------------------------------

    def _boot_options(self, request: Request) -> tuple[IPv4Address | None, bytes, list, str | None, str]:
        """(siaddr, file field, options, boot file, why) for a client that wants to boot."""
        boot_file, why = self.boot.choose(request.arch, request.is_ipxe)
        if boot_file is None:
            return None, b"", [], None, why
        file_field = boot_file.encode() if len(boot_file.encode()) < 128 else b""
        options = [("tftp_server_name", str(self.boot.tftp_server)), ("boot-file-name", boot_file.encode())]
        return self.boot.tftp_server, file_field, options, boot_file, why  # type: ignore[return-value]

    def _lease_reply(self, request: Request, message_type: int, address: IPv4Address | None) -> tuple[Reply, str]:
        pool = self.pool
        assert pool is not None and self.table is not None
        options: list[Any] = []
        if address is not None:
            seconds = pool.lease_time
            options += [("lease_time", seconds), ("renewal_time", seconds // 2), ("rebinding_time", seconds * 7 // 8)]
        options += [("subnet_mask", str(pool.netmask)), ("broadcast_address", str(pool.broadcast))]
        if pool.router is not None:
            options.append(("router", str(pool.router)))
        if pool.dns:
            options.append(("name_server", *(str(a) for a in pool.dns)))
        if pool.domain:
            options.append(("domain", pool.domain.encode()))
        reservation = self.table.reservation(request.mac)
        if reservation is not None and reservation.hostname:
            options.append(("hostname", reservation.hostname.encode()))
        if pool.mtu is not None:
            options.append(("interface-mtu", pool.mtu))
        siaddr, file_field, boot_file, note = None, b"", None, "no boot requested"
        if request.wants_boot:
            siaddr, file_field, boot, boot_file, note = self._boot_options(request)
            options += boot
            if boot_file is None:
                self._count("no_boot_file")
            elif request.is_ipxe:
                # This offer names the boot script already, and in full mode no ProxyDHCP server has more to add.
                options.append((IPXE_ENCAPSULATED, _IPXE_NO_PXEDHCP))
        payload = self._encode(
            request, message_type, options, yiaddr=address or ZERO,
            ciaddr=request.ciaddr if message_type == ACK else ZERO,
            siaddr=siaddr or ZERO, file_field=file_field,
        )
        destination, mac = self._destination(request, message_type, address)
        return Reply(message_type, payload, destination, self.server_port, mac, address, boot_file), note

    def _proxy_reply(
        self, request: Request, message_type: int, source: tuple[str, int] | None = None
    ) -> tuple[Reply | None, str]:
        siaddr, file_field, boot, boot_file, why = self._boot_options(request)
        if boot_file is None:
            self._count("no_boot_file")
            log.warning("dhcp no-boot-file client=%s msg=%s arch=%s reason=%r", request.mac, request.name,
                        request.arch, why)
            return None, why
        options: list[Any] = [("vendor_class_id", b"PXEClient")]
        if request.guid is not None:
            options.append(("pxe_client_machine_identifier", request.guid))
        vendor = self._pxe_vendor_options(request, message_type)
        if vendor is not None:
            options.append(("vendor_specific", vendor))
        options += boot
        payload = self._encode(
            request, message_type, options, yiaddr=ZERO, ciaddr=request.ciaddr,
            siaddr=siaddr or ZERO, file_field=file_field, sname=str(self.boot.tftp_server).encode(),
        )
        if source is not None:  # port 4011: answer whoever asked, where it asked from
            port = self.pxe_port
            destination = source if source[0] != "0.0.0.0" else (str(BROADCAST), self.client_port)
            if request.giaddr != ZERO:
                destination = (str(request.giaddr), self.server_port)
        else:
            port = self.server_port
            destination, _ = self._destination(request, message_type, None)
        return Reply(message_type, payload, destination, port, None, None, boot_file), why

    def _pxe_vendor_options(self, request: Request, message_type: int) -> bytes | None:
        """Option 43 for a proxy reply.

        OFFER to BIOS PXE and to iPXE: discovery control "boot the file in this offer". OFFER to UEFI:
        none, so the firmware asks the boot server on port 4011, which UEFI PXE implementations do
        reliably, while several ignore offers that bypass discovery. ACK on 4011: echo the client's
        PXE_BOOT_ITEM (layer and type), as a PXE boot server reply must.
        """
        if message_type == OFFER:
            if request.is_ipxe or request.arch == 0:
                return _PXE_BOOT_FROM_OFFER
            return None
        data = request.vendor_options or b""
        while len(data) >= 2 and data[0] != PXE_END:
            tag, size = data[0], data[1]
            if tag == 0:
                data = data[1:]
                continue
            if tag == PXE_BOOT_ITEM and size == 4 and len(data) >= 6:
                return data[:6] + bytes([PXE_END])
            data = data[2 + size:]
        return None

    def _nak(self, request: Request, why: str) -> tuple[Reply, str]:
        payload = self._encode(request, NAK, [("error_message", why.encode()[:255])], yiaddr=ZERO, ciaddr=ZERO,
                               siaddr=ZERO, file_field=b"", broadcast=request.giaddr != ZERO)
        destination, _ = self._destination(request, NAK, None)
        return Reply(NAK, payload, destination, self.server_port), why

    def _encode(
        self, request: Request, message_type: int, options: list, *, yiaddr: IPv4Address, ciaddr: IPv4Address,
        siaddr: IPv4Address, file_field: bytes, sname: bytes = b"", broadcast: bool = False,
    ) -> bytes:
        flags = request.flags & _BROADCAST_FLAG
        if broadcast:
            flags |= _BROADCAST_FLAG
        if request.relay_info is not None and request.giaddr != ZERO and len(request.relay_info) <= 255:
            options = [*options, ("relay_agent_information", request.relay_info)]  # RFC 3046: last, echoed
        # sname and file are zero-padded (or cut) to their fixed sizes, as scapy's BOOTP does.
        header = _BOOTP_HEADER.pack(
            2, 1, 6, 0, request.xid, 0, flags, ciaddr.packed, yiaddr.packed, siaddr.packed, request.giaddr.packed,
            request.chaddr, sname, file_field,
        )
        encoded = _options_field([("message-type", message_type), ("server_id", str(self.server_ip)), *options, "end"])
        payload = header + dhcpmagic + encoded
        return payload + b"\0" * (MIN_REPLY - len(payload)) if len(payload) < MIN_REPLY else payload

    def _destination(
        self, request: Request, message_type: int, yiaddr: IPv4Address | None
    ) -> tuple[tuple[str, int], str | None]:
        """RFC 2131 section 4.1: relay, else NAK broadcast, else ciaddr, else broadcast flag, else unicast
        to chaddr/yiaddr (the client has no address yet, so as an Ethernet frame)."""
        if request.giaddr != ZERO:
            return (str(request.giaddr), self.server_port), None
        if message_type == NAK:
            return (str(BROADCAST), self.client_port), None
        if request.ciaddr != ZERO:
            return (str(request.ciaddr), self.client_port), None
        if request.broadcast or yiaddr is None or yiaddr == ZERO:
            return (str(BROADCAST), self.client_port), None
        return (str(yiaddr), self.client_port), request.mac

    # ---- logging and counting ------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += amount

    def _log_exchange(self, request: Request, port: int, reply: Reply | None, note: str,
                      level: int = logging.INFO) -> None:
        boot = reply.boot_file if reply is not None else None
        to = f"{reply.destination[0]}:{reply.destination[1]}" if reply is not None else "-"
        if reply is not None and reply.mac is not None:
            to += f"@{reply.mac}"
        log.log(
            level if reply is None or reply.message_type != NAK else logging.WARNING,
            "dhcp exchange client=%s msg=%s xid=0x%08x port=%d reply=%s address=%s arch=%s ipxe=%s boot=%s to=%s "
            "note=%r",
            request.mac, request.name, request.xid, port, reply.name if reply is not None else "-",
            (reply.address if reply is not None and reply.address is not None else "-"),
            request.arch if request.arch is not None else "-", "yes" if request.is_ipxe else "no",
            boot or "-", to, note,
        )

    def _log_drop(self, drop: Dropped, data: bytes, source: tuple[str, int], port: int) -> None:
        if drop.counter != "malformed":
            log.debug("dhcp ignored client=%s:%s port=%d reason=%r", source[0], source[1], port, str(drop))
            return
        if not self._drop_log.allow(time.monotonic()):
            return
        mac = ":".join(f"{b:02x}" for b in data[28:34]) if len(data) >= 34 else "?"
        log.warning("dhcp malformed client=%s:%s mac=%s port=%d reason=%r request=len:%d,head:%s",
                    source[0], source[1], mac, port, str(drop), len(data), data[:32].hex())

    # ---- sockets -------------------------------------------------------------------------------

    def _open_udp(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            try:  # room for a burst of requests (a rack powering on, or a flood of garbage)
                sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("0.0.0.0", port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise DHCPStartError(f"dhcp cannot listen on interface {self.interface} UDP port {port}: {exc}") from exc
        return sock

    def _close(self) -> None:
        for sock in [*self._sockets.values(), self._raw, self._wake_r, self._wake_w]:
            if sock is not None:
                sock.close()
        self._sockets, self._raw, self._wake_r, self._wake_w = {}, None, None, None

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        assert self._wake_r is not None
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        for port, sock in self._sockets.items():
            selector.register(sock, selectors.EVENT_READ, port)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=1.0):
                    if key.data is None:
                        continue
                    self._receive(key.fileobj, key.data)  # type: ignore[arg-type]
        finally:
            selector.close()

    def _receive(self, sock: socket.socket, port: int) -> None:
        for _ in range(64):  # drain a burst, but let stop() and the other socket in between
            try:
                data, source = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if not self._stop.is_set():
                    self._count("errors")
                    log.error("dhcp receive-failed interface=%s port=%d reason=%r", self.interface, port, str(exc))
                return
            try:
                replies = self.handle(data, source, port)
            except Exception:
                self._count("errors")
                log.exception("dhcp internal-error client=%s:%s port=%d request=len:%d,head:%s",
                              source[0], source[1], port, len(data), data[:32].hex())
                continue
            for reply in replies:
                self._send(reply)

    def _send(self, reply: Reply) -> None:
        try:
            if reply.mac is not None and self._raw is not None and self._if_mac is not None:
                self._raw.send(_udp_frame(self._if_mac, reply.mac, self.server_ip, reply.destination[0],
                                          self.server_port, reply.destination[1], reply.payload))
                return
            destination = reply.destination
            if reply.mac is not None:  # no raw socket: broadcast instead (RFC 2131 allows it)
                destination = (str(BROADCAST), self.client_port)
            sock = self._sockets.get(reply.port) or self._sockets[self.server_port]
            sock.sendto(reply.payload, destination)
        except OSError as exc:
            self._count("send_errors")
            log.error("dhcp send-failed reply=%s to=%s:%s mac=%s reason=%r", reply.name, reply.destination[0],
                      reply.destination[1], reply.mac or "-", str(exc))


__all__ = [
    "BootOptions", "DHCPServer", "interface_ipv4", "DHCPStartError", "Dropped", "Ignored", "Malformed", "Pool", "Reply", "Request",
    "Reservation", "normalize_mac", "parse_request",
]
