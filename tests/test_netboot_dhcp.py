"""The netboot DHCP server: full and proxy mode, with scapy clients.

Unit tests call the parser, the lease table and `DHCPServer.handle` directly. The network tests
create their own network namespace and veth pair (as root): the server listens on the host end,
scapy-built frames are sent and captured on the namespace end by a small stdlib helper process
running inside the namespace. Nothing is sent anywhere else. Waits are bounded; nothing is timed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import random
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.tools import require_tool
from scapy.layers.dhcp import BOOTP, DHCP, dhcpmagic
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from stellwerk.netboot.dhcp import (
    ACK,
    COUNTERS,
    DHCPServer,
    Ignored,
    Malformed,
    NAK,
    OFFER,
    BootOptions,
    interface_ipv4,
    parse_request,
)
from stellwerk.netboot.leases import LeaseFileError, LeaseTable, Pool, Reservation, reservations_from_nodes

PXE_BIOS = [("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), ("pxe_client_architecture", b"\x00\x00")]
PXE_UEFI = [("vendor_class_id", b"PXEClient:Arch:00007:UNDI:003016"), ("pxe_client_architecture", b"\x00\x07")]
GUID = b"\x00" + bytes(range(1, 17))


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def bootp(mac: str, message: str, *options, xid: int = 1, broadcast: bool = False, ciaddr: str = "0.0.0.0",
          giaddr: str = "0.0.0.0") -> BOOTP:
    return BOOTP(op=1, chaddr=mac_bytes(mac), xid=xid, flags=0x8000 if broadcast else 0, ciaddr=ciaddr,
                 giaddr=giaddr, options=dhcpmagic) / DHCP(options=[("message-type", message), *options, "end"])


def options_of(payload: bytes) -> dict:
    packet = BOOTP(payload)
    result = {}
    for entry in packet[DHCP].options:
        if isinstance(entry, tuple):
            result.setdefault(entry[0], entry[1] if len(entry) == 2 else entry[1:])
    return result


# ---- unit: parser, boot choice, lease table, decisions ------------------------------------------------


def _valid_discover() -> bytes:
    return bytes(bootp("52:54:00:00:00:01", "discover", *PXE_BIOS, xid=9))


def _with_options(raw_options: bytes) -> bytes:
    return _valid_discover()[:240] + raw_options


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "truncated"),
        (_valid_discover()[:239], "truncated"),
        (_valid_discover()[:236] + b"\x63\x82\x53\x64" + _valid_discover()[240:], "magic cookie"),
        (b"\x02" + _valid_discover()[1:], "wrong op"),
        (_valid_discover() + bytes(5000), "oversized"),
        (_with_options(b"\x35\x01\x01\x3c\xff" + b"PXEClient"), "claims 255 bytes"),
        (_with_options(b"\x35\x01\x01\x01\x03\xff\xff\xff\xff"), "wrong size"),  # subnet mask of 3 bytes
        (_with_options(b"\x35\x01\xc8\xff"), "not a client message"),  # message type 200
        (_with_options(b"\x35\x01\x02\xff"), "not a client message"),  # OFFER from a client
        (_with_options(b"\x35\x00\xff"), "wrong size"),
        (_with_options(b"\x35\x01\x01\x5d\x01\x00\xff"), "option 93"),
        (_with_options(b"\x35\x01\x01\x61\x05\x00\x01\x02\x03\x04\xff"), "option 97"),
        (_with_options(b"\x35\x01\x01\x36\x08" + bytes(8) + b"\xff"), "exactly one value"),  # two server ids
        (_with_options(b"\x35\x01\x01\x34\x01\x07\xff"), "overload"),
        (b"\x01\x01\x11" + _valid_discover()[3:], "hardware address length"),
    ],
    ids=["empty", "short", "cookie", "op", "oversized", "claim", "mask-size", "type-200", "type-offer",
         "type-empty", "arch", "guid", "two-server-ids", "overload", "hlen"],
)
def test_parser_rejects_malformed(data, reason):
    with pytest.raises(Malformed, match=reason):
        parse_request(data)


def test_parser_ignores_what_it_does_not_serve_and_reads_the_rest():
    with pytest.raises(Ignored, match="BOOTP"):
        parse_request(bytes(BOOTP(op=1, chaddr=mac_bytes("52:54:00:00:00:01"), options=dhcpmagic) / DHCP(options=["end"])))
    with pytest.raises(Ignored, match="hardware type"):
        parse_request(b"\x01\x20\x06" + _valid_discover()[3:])
    request = parse_request(bytes(bootp(
        "52:54:00:aa:bb:cc", "request", ("requested_addr", "10.0.0.7"), ("server_id", "10.0.0.1"),
        ("user_class", b"iPXE"), ("pxe_client_architecture", b"\x00\x07\x00\x09"), ("pxe_client_machine_identifier", GUID),
        ("hostname", b"node-1"), xid=0xDEADBEEF, broadcast=True,
    )) + b"garbage after the end option is padding")
    assert (request.mac, request.xid, request.broadcast) == ("52:54:00:aa:bb:cc", 0xDEADBEEF, True)
    assert (str(request.requested_address), str(request.server_id), request.arch) == ("10.0.0.7", "10.0.0.1", 7)
    assert request.is_ipxe and request.guid == GUID and request.hostname == "node-1"
    assert parse_request(bytes(bootp("52:54:00:aa:bb:cc", "discover", ("user_class", b"\x04iPXE")))).is_ipxe
    no_option_93 = bootp("52:54:00:aa:bb:cc", "discover", ("vendor_class_id", b"PXEClient:Arch:00007:UNDI:003016"))
    assert parse_request(bytes(no_option_93)).arch == 7


def test_boot_file_by_architecture_and_ipxe():
    boot = BootOptions("10.0.0.1", "http://10.0.0.1:8080/boot.ipxe")
    assert boot.choose(0, False)[0] == "undionly.kpxe"
    assert boot.choose(7, False)[0] == "ipxe.efi"
    assert boot.choose(9, False)[0] == "ipxe.efi"
    assert boot.choose(11, False) == (None, "no boot file for architecture 11 (arm64-uefi)")
    assert boot.choose(None, False)[0] is None
    for arch in (0, 7, 11, None):
        assert boot.choose(arch, True)[0] == "http://10.0.0.1:8080/boot.ipxe"
    with pytest.raises(ValueError, match="http"):
        BootOptions("10.0.0.1", "tftp://10.0.0.1/boot.ipxe")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lease_table_persists_reclaims_and_holds_declined(tmp_path):
    clock = FakeClock()
    pool = Pool("10.0.0.0/24", "10.0.0.10", "10.0.0.12", router="10.0.0.1", lease_time=600)
    path = tmp_path / "state" / "leases.json"
    table = LeaseTable(pool, "10.0.0.1", [Reservation("52-54-00-00-00-AA", "10.0.0.200", "c1")], path, clock)
    a, b = "52:54:00:00:00:01", "52:54:00:00:00:02"
    assert table.choose("52:54:00:00:00:aa") == ipaddress.IPv4Address("10.0.0.200")
    first = table.choose(a)
    assert first == ipaddress.IPv4Address("10.0.0.10")
    assert table.choose(b) == ipaddress.IPv4Address("10.0.0.11")  # .10 is offered to a
    table.bind(a, first)
    saved = json.loads(path.read_text())
    assert saved["leases"] == [{"address": "10.0.0.10", "expires": 1_700_000_600, "mac": a}]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in path.parent.iterdir() if p.name != "leases.json"]  # no temp files left

    reloaded = LeaseTable(pool, "10.0.0.1", [], path, clock)
    assert [(lease.mac, str(lease.address)) for lease in reloaded.leases()] == [(a, "10.0.0.10")]
    assert reloaded.check(b, ipaddress.IPv4Address("10.0.0.10")) == "10.0.0.10 is leased to another client"
    assert "outside the dynamic range" in reloaded.check(b, ipaddress.IPv4Address("10.0.0.50"))
    assert "not in the served network" in reloaded.check(b, ipaddress.IPv4Address("192.168.1.5"))

    reloaded.decline(b, ipaddress.IPv4Address("10.0.0.11"))
    assert reloaded.choose(b) == ipaddress.IPv4Address("10.0.0.12")
    clock.now += 601  # the lease and the decline have run out
    assert reloaded.leases() == []
    assert json.loads(path.read_text()) == {"declined": [], "leases": [], "version": 1}
    assert reloaded.choose("52:54:00:00:00:03") == ipaddress.IPv4Address("10.0.0.10")

    # A lease file with an expired lease: reclaimed when loaded.
    table.bind(a, first)
    clock.now += 10_000
    assert LeaseTable(pool, "10.0.0.1", [], path, clock).leases() == []
    assert json.loads(path.read_text())["leases"] == []


def test_lease_file_errors_and_bad_configuration(tmp_path):
    path = tmp_path / "leases.json"
    path.write_text("{not json")
    pool = Pool("10.0.0.0/24", "10.0.0.10", "10.0.0.20")
    with pytest.raises(LeaseFileError, match="leases.json"):
        LeaseTable(pool, "10.0.0.1", [], path)
    path.write_text(json.dumps({"version": 1, "leases": [{"mac": "nope", "address": "10.0.0.10", "expires": 1}]}))
    with pytest.raises(LeaseFileError, match="not a MAC"):
        LeaseTable(pool, "10.0.0.1", [], path)
    with pytest.raises(ValueError, match="not in 10.0.0.0/24"):
        LeaseTable(pool, "10.0.0.1", [Reservation("52:54:00:00:00:01", "10.1.0.5")])
    with pytest.raises(ValueError, match="reserved for both"):
        LeaseTable(pool, "10.0.0.1", [Reservation("52:54:00:00:00:01", "10.0.0.5"),
                                      Reservation("52:54:00:00:00:02", "10.0.0.5")])
    with pytest.raises(ValueError, match="empty"):
        Pool("10.0.0.0/24", "10.0.0.20", "10.0.0.10")
    with pytest.raises(ValueError, match="needs a pool"):
        DHCPServer("eth9", "10.0.0.1", "full")
    with pytest.raises(ValueError, match="mode"):
        DHCPServer("eth9", "10.0.0.1", "sometimes")  # type: ignore[arg-type]


def test_handle_relay_release_decline_inform_without_sockets():
    @dataclass
    class Node:
        name: str
        mac: str
        address: str

    server = DHCPServer(
        "eth9", "10.0.0.1", "full", pool=Pool("10.0.0.0/24", "10.0.0.100", "10.0.0.101", dns=("10.0.0.53",)),
        reservations=reservations_from_nodes([Node("w1", "52:54:00:00:00:21", "10.0.0.21")]),
    )
    relayed = server.handle(bytes(bootp("52:54:00:00:00:01", "discover", ("relay_agent_information", b"\x01\x02ab"),
                                        giaddr="10.0.0.254")), ("10.0.0.254", 67), 67)
    assert relayed[0].destination == ("10.0.0.254", 67) and relayed[0].mac is None
    assert options_of(relayed[0].payload)["relay_agent_information"] == b"\x01\x02ab"
    foreign_relay = server.handle(bytes(bootp("52:54:00:00:00:01", "discover", giaddr="10.7.0.1")), ("10.7.0.1", 67), 67)
    assert foreign_relay == []

    mac = "52:54:00:00:00:01"
    ack = server.handle(bytes(bootp(mac, "request", ("requested_addr", "10.0.0.100"))), ("0.0.0.0", 68), 67)[0]
    assert ack.message_type == ACK and options_of(ack.payload)["name_server"] == "10.0.0.53"
    release = bootp(mac, "release", ("server_id", "10.0.0.1"), ciaddr="10.0.0.100")
    assert server.handle(bytes(release), ("10.0.0.100", 68), 67) == [] and server.leases() == []

    server.handle(bytes(bootp(mac, "decline", ("server_id", "10.0.0.1"), ("requested_addr", "10.0.0.100"))),
                  ("0.0.0.0", 68), 67)
    offer = server.handle(bytes(bootp("52:54:00:00:00:02", "discover")), ("0.0.0.0", 68), 67)[0]
    assert str(offer.address) == "10.0.0.101"  # .100 is held back after the decline
    assert server.handle(bytes(bootp("52:54:00:00:00:03", "discover")), ("0.0.0.0", 68), 67) == []  # pool full

    inform = server.handle(bytes(bootp("52:54:00:00:00:04", "inform", ciaddr="10.0.0.77")), ("10.0.0.77", 68), 67)[0]
    assert inform.destination == ("10.0.0.77", 68) and inform.address is None
    assert "lease_time" not in options_of(inform.payload)
    assert BOOTP(inform.payload).ciaddr == "10.0.0.77" and BOOTP(inform.payload).yiaddr == "0.0.0.0"

    counts = server.counters()
    assert set(counts) == set(COUNTERS)
    assert (counts["release"], counts["decline"], counts["inform"], counts["no_address"]) == (1, 1, 1, 1)
    assert counts["ignored"] == 1  # the relay from a network we do not serve


# ---- network namespace harness -------------------------------------------------------------------------

HELPER = r'''
import json, select, socket, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
sock.bind((sys.argv[1], 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

def reply_to(frame, xid):
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    udp = 14 + (frame[14] & 0x0F) * 4
    bootp = udp + 8
    return (int.from_bytes(frame[udp:udp + 2], "big") in (67, 4011) and frame[bootp] == 2
            and int.from_bytes(frame[bootp + 4:bootp + 8], "big") == xid)

for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "send":
        for frame in command["frames"]:
            sock.send(bytes.fromhex(frame))
        result = {"sent": len(command["frames"])}
    else:
        frame, found = bytes.fromhex(command["frame"]), []
        for _ in range(command["tries"]):  # a DHCP client retransmits; so does this one
            sock.send(frame)
            deadline = time.monotonic() + command["interval"]
            while not found:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    break
                data, address = sock.recvfrom(65535)
                if address[2] != 4 and reply_to(data, command["xid"]):  # 4: PACKET_OUTGOING
                    found.append(data.hex())
            if found:
                break
        result = {"replies": found}
    print(json.dumps(result), flush=True)
'''


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class Net:
    namespace: str
    host_if: str
    host_ip: str
    host_mac: str
    client_ip: str
    subnet: ipaddress.IPv4Network

    def address(self, host: int) -> str:
        return str(self.subnet.network_address + host)


class Client:
    """Sends frames from inside the namespace and returns the server's replies, decoded by scapy."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.put(line)

    def _call(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        try:
            return json.loads(self.lines.get(timeout=60))
        except queue.Empty:
            pytest.fail("the namespace client helper did not answer")

    def send(self, frames: list[bytes]) -> None:
        self._call({"op": "send", "frames": [frame.hex() for frame in frames]})

    def exchange(self, frame: bytes, xid: int, tries: int = 5) -> BOOTP | None:
        replies = self._call({"op": "exchange", "frame": frame.hex(), "xid": xid, "tries": tries, "interval": 1.0})
        if not replies["replies"]:
            return None
        ether = Ether(bytes.fromhex(replies["replies"][0]))
        decoded = BOOTP(bytes(ether[UDP].payload))
        decoded.ether = ether  # the frame's Ethernet/IP/UDP headers, for destination checks
        return decoded


def frame(packet: BOOTP | bytes, mac: str, *, src_ip: str = "0.0.0.0", dst_ip: str = "255.255.255.255",
          dst_mac: str = "ff:ff:ff:ff:ff:ff", dport: int = 67) -> bytes:
    payload = packet if isinstance(packet, bytes) else bytes(packet)
    return bytes(Ether(src=mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(sport=68, dport=dport) / Raw(payload))


def opts(reply: BOOTP) -> dict:
    return options_of(bytes(reply))


def wait_for(condition, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        message = "network namespace tests need root and iproute2"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    tag = secrets.token_hex(3)
    namespace, host_if = f"swtest-{tag}", f"sws{tag}"
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    third = next(n for n in random.sample(range(100, 250), 150) if f"10.99.{n}." not in routes)
    subnet = ipaddress.IPv4Network(f"10.99.{third}.0/24")
    host_ip, client_ip = str(subnet.network_address + 1), str(subnet.network_address + 50)
    try:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", host_if, "mtu", "9000", "type", "veth", "peer", "name", "swc0", "mtu", "9000",
             "netns", namespace)
        _run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        _run("ip", "-n", namespace, "addr", "add", f"{client_ip}/24", "dev", "swc0")
        _run("ip", "-n", namespace, "link", "set", "swc0", "promisc", "on", "up")
        host_mac = Path(f"/sys/class/net/{host_if}/address").read_text().strip()
        yield Net(namespace, host_if, host_ip, host_mac, client_ip, subnet)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def client(net, tmp_path_factory):
    helper = tmp_path_factory.mktemp("dhcp-client") / "client.py"
    helper.write_text(HELPER)
    process = subprocess.Popen(
        ["ip", "netns", "exec", net.namespace, sys.executable, "-u", str(helper), "swc0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        yield Client(process)
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def serve(net, tmp_path):
    """Start a DHCPServer on the host end of the veth pair; stopped after the test."""
    started: list[DHCPServer] = []

    def start(mode: str = "full", **kwargs) -> DHCPServer:
        if mode == "full":
            kwargs.setdefault("pool", Pool(net.subnet, net.address(100), net.address(119), router=net.host_ip,
                                           dns=(net.host_ip,), domain="lab.test", lease_time=3600))
        kwargs.setdefault("boot", BootOptions(net.host_ip, f"http://{net.host_ip}:8080/boot.ipxe"))
        server = DHCPServer(net.host_if, net.host_ip, mode, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


_xids = iter(range(0x5000_0000, 0x6000_0000))


def next_xid() -> int:
    return next(_xids)


def dora(client: Client, mac: str, *options, broadcast: bool = False) -> tuple[BOOTP, BOOTP]:
    xid = next_xid()
    offer = client.exchange(frame(bootp(mac, "discover", *options, xid=xid, broadcast=broadcast), mac), xid)
    assert offer is not None, f"no OFFER for {mac}"
    assert opts(offer)["message-type"] == OFFER
    request = bootp(mac, "request", ("server_id", opts(offer)["server_id"]), ("requested_addr", offer.yiaddr),
                    *options, xid=xid, broadcast=broadcast)
    ack = client.exchange(frame(request, mac), xid)
    assert ack is not None, f"no reply to the REQUEST of {mac}"
    return offer, ack


# ---- network tests -------------------------------------------------------------------------------------


def test_full_mode_dora_unicast_and_broadcast(net, client, serve):
    server = serve("full")
    assert str(interface_ipv4(net.host_if)) == net.host_ip
    mac = "52:54:00:10:00:01"
    offer, ack = dora(client, mac, *PXE_BIOS)
    assert offer.yiaddr == net.address(100) and ack.yiaddr == net.address(100)
    assert opts(ack)["message-type"] == ACK
    # No broadcast flag and no address yet: the reply is an Ethernet unicast to the client's MAC.
    assert ack.ether.dst == mac and ack.ether[IP].dst == net.address(100) and ack.ether[IP].src == net.host_ip
    options = opts(ack)
    assert options["subnet_mask"] == "255.255.255.0" and options["router"] == net.host_ip
    assert options["name_server"] == net.host_ip and options["server_id"] == net.host_ip
    assert options["lease_time"] == 3600 and options["domain"] == b"lab.test"
    assert ack.siaddr == net.host_ip and ack.file.rstrip(b"\0") == b"undionly.kpxe"
    assert options["tftp_server_name"] == net.host_ip.encode() and options["boot-file-name"] == b"undionly.kpxe"
    assert "vendor_class_id" not in options  # full mode is no proxyDHCP: no 4011 round trip

    second = "52:54:00:10:00:02"
    offer, ack = dora(client, second, broadcast=True)  # a client without PXE gets no boot options
    assert ack.yiaddr == net.address(101) and ack.ether.dst == "ff:ff:ff:ff:ff:ff"
    assert ack.ether[IP].dst == "255.255.255.255" and "boot-file-name" not in opts(ack)
    assert [(lease.mac, str(lease.address)) for lease in server.leases()] == [
        (mac, net.address(100)), (second, net.address(101))]
    counts = server.counters()
    assert (counts["discover"], counts["offer"], counts["request"], counts["ack"]) == (2, 2, 2, 2)



def test_renew_and_inform_are_answered_at_the_client_address(net, client, serve):
    mac = "52:54:00:10:00:05"
    server = serve("full", reservations=[Reservation(mac, net.client_ip, "n5")])  # the namespace end's address
    xid = next_xid()
    renew = bootp(mac, "request", *PXE_BIOS, xid=xid, ciaddr=net.client_ip)  # RENEWING: ciaddr, no 50/54
    ack = client.exchange(frame(renew, mac, src_ip=net.client_ip, dst_ip=net.host_ip, dst_mac=net.host_mac), xid)
    assert ack is not None and opts(ack)["message-type"] == ACK
    assert ack.yiaddr == ack.ciaddr == net.client_ip and ack.ether[IP].dst == net.client_ip
    assert ack.ether[UDP].dport == 68 and opts(ack)["hostname"] == b"n5"

    xid = next_xid()
    inform = bootp("52:54:00:10:00:06", "inform", xid=xid, ciaddr=net.client_ip)
    ack = client.exchange(frame(inform, "52:54:00:10:00:06", src_ip=net.client_ip, dst_ip=net.host_ip,
                                dst_mac=net.host_mac), xid)
    assert ack is not None and opts(ack)["message-type"] == ACK and ack.ether[IP].dst == net.client_ip
    assert ack.yiaddr == "0.0.0.0" and "lease_time" not in opts(ack) and opts(ack)["router"] == net.host_ip
    assert [str(lease.address) for lease in server.leases()] == [net.client_ip]


def test_reservation_gets_its_address_and_hostname(net, client, serve):
    mac = "52:54:00:10:00:11"
    server = serve("full", reservations=[Reservation(mac, net.address(11), "c1")])
    offer, ack = dora(client, mac.upper(), *PXE_UEFI)
    assert offer.yiaddr == ack.yiaddr == net.address(11)
    assert opts(ack)["hostname"] == b"c1" and opts(ack)["boot-file-name"] == b"ipxe.efi"
    assert server.leases()[0].hostname == "c1"
    # Nobody else is offered the reserved address, even when asking for it.
    xid = next_xid()
    other = "52:54:00:10:00:12"
    offer = client.exchange(frame(bootp(other, "discover", ("requested_addr", net.address(11)), xid=xid), other), xid)
    assert offer is not None and offer.yiaddr == net.address(100)


@pytest.mark.parametrize(
    "options, expected",
    [
        (PXE_BIOS, b"undionly.kpxe"),
        (PXE_UEFI, b"ipxe.efi"),
        ([("vendor_class_id", b"PXEClient:Arch:00009:UNDI:003016"), ("pxe_client_architecture", b"\x00\x09")],
         b"ipxe.efi"),
        ([*PXE_BIOS, ("user_class", b"iPXE")], "http"),
        ([*PXE_UEFI, ("user_class", b"iPXE")], "http"),
        ([("vendor_class_id", b"PXEClient:Arch:00011:UNDI:003000"), ("pxe_client_architecture", b"\x00\x0b")], None),
    ],
    ids=["bios", "uefi-7", "uefi-9", "ipxe-bios", "ipxe-uefi", "arm64-none"],
)
def test_boot_file_branches_on_architecture_and_ipxe(net, client, serve, options, expected):
    server = serve("full")
    mac = "52:54:00:10:00:21"
    xid = next_xid()
    offer = client.exchange(frame(bootp(mac, "discover", *options, xid=xid, broadcast=True), mac), xid)
    assert offer is not None
    if expected == "http":
        expected = f"http://{net.host_ip}:8080/boot.ipxe".encode()
    if expected is None:
        assert "boot-file-name" not in opts(offer) and offer.file.rstrip(b"\0") == b""
        assert server.counters()["no_boot_file"] == 1
    else:
        assert opts(offer)["boot-file-name"] == expected and offer.file.rstrip(b"\0") == expected
        assert offer.siaddr == net.host_ip


def test_proxy_mode_answers_pxe_only_without_an_address(net, client, serve):
    server = serve("proxy")
    mac = "52:54:00:20:00:01"

    xid = next_xid()
    offer = client.exchange(frame(bootp(mac, "discover", *PXE_BIOS, ("pxe_client_machine_identifier", GUID),
                                        xid=xid), mac), xid)
    assert offer is not None and opts(offer)["message-type"] == OFFER
    assert offer.yiaddr == "0.0.0.0" and offer.siaddr == net.host_ip
    assert offer.ether[IP].dst == "255.255.255.255" and offer.ether[UDP].sport == 67
    options = opts(offer)
    assert options["vendor_class_id"] == b"PXEClient" and options["pxe_client_machine_identifier"] == GUID
    assert options["vendor_specific"] == b"\x06\x01\x08\xff"  # PXE_DISCOVERY_CONTROL: boot the offered file
    assert options["boot-file-name"] == b"undionly.kpxe" and "lease_time" not in options
    assert "subnet_mask" not in options and "router" not in options

    xid = next_xid()
    offer = client.exchange(frame(bootp(mac, "discover", *PXE_UEFI, xid=xid), mac), xid)
    assert offer is not None and offer.yiaddr == "0.0.0.0"
    assert "vendor_specific" not in opts(offer)  # UEFI firmware then asks the boot server on 4011

    # The PXE boot server exchange on port 4011: the client has an address from the other DHCP server.
    xid = next_xid()
    request = bootp(mac, "request", *PXE_UEFI, ("pxe_client_machine_identifier", GUID),
                    ("vendor_specific", b"\x47\x04\x80\x00\x00\x00\xff"), xid=xid, ciaddr=net.client_ip)
    ack = client.exchange(frame(request, mac, src_ip=net.client_ip, dst_ip=net.host_ip, dst_mac=net.host_mac,
                                dport=4011), xid)
    assert ack is not None and opts(ack)["message-type"] == ACK
    assert ack.ether[UDP].sport == 4011 and ack.ether[IP].dst == net.client_ip and ack.ether[UDP].dport == 68
    assert ack.yiaddr == "0.0.0.0" and ack.ciaddr == net.client_ip
    options = opts(ack)
    assert options["boot-file-name"] == b"ipxe.efi" and ack.file.rstrip(b"\0") == b"ipxe.efi"
    assert options["pxe_client_machine_identifier"] == GUID and options["vendor_class_id"] == b"PXEClient"
    assert options["vendor_specific"] == b"\x47\x04\x80\x00\x00\x00\xff"  # PXE_BOOT_ITEM echoed

    xid = next_xid()
    offer = client.exchange(frame(bootp(mac, "discover", *PXE_BIOS, ("user_class", b"iPXE"), xid=xid), mac), xid)
    assert offer is not None and opts(offer)["boot-file-name"] == f"http://{net.host_ip}:8080/boot.ipxe".encode()

    # Not PXE, or not a DISCOVER: the other DHCP server's business. Counted, not answered.
    before = server.counters()
    client.send([frame(bootp(mac, "discover", xid=next_xid()), mac),
                 frame(bootp(mac, "request", *PXE_BIOS, ("requested_addr", net.address(60)), xid=next_xid()), mac)])
    wait_for(lambda: server.counters()["received"] == before["received"] + 2, "the two ignored requests")
    after = server.counters()
    assert after["ignored"] == before["ignored"] + 2
    assert (after["offer"], after["ack"], after["nak"]) == (before["offer"], before["ack"], before["nak"])
    assert server.leases() == []


def test_leases_survive_a_restart(net, client, serve, tmp_path):
    lease_file = tmp_path / "dhcp-leases.json"
    first = serve("full", lease_file=lease_file)
    a, b = "52:54:00:30:00:01", "52:54:00:30:00:02"
    assert dora(client, a)[1].yiaddr == net.address(100)
    assert dora(client, b)[1].yiaddr == net.address(101)
    first.stop()
    saved = json.loads(lease_file.read_text())
    assert [(entry["mac"], entry["address"]) for entry in saved["leases"]] == [(a, net.address(100)),
                                                                                 (b, net.address(101))]

    second = serve("full", lease_file=lease_file)
    # b asks first this time; without the lease file it would get the lowest free address (.100).
    offer, ack = dora(client, b)
    assert offer.yiaddr == ack.yiaddr == net.address(101)
    assert dora(client, a)[1].yiaddr == net.address(100)
    assert len(second.leases()) == 2


def test_nak_for_a_foreign_request(net, client, serve):
    server = serve("full")
    mac = "52:54:00:40:00:01"
    for requested, reason in (("192.168.77.5", b"is not in the served network"),
                              (net.address(200), b"is outside the dynamic range")):
        xid = next_xid()
        nak = client.exchange(frame(bootp(mac, "request", ("requested_addr", requested), xid=xid), mac), xid)
        assert nak is not None and opts(nak)["message-type"] == NAK
        assert nak.yiaddr == "0.0.0.0" and nak.ether[IP].dst == "255.255.255.255"
        assert reason in opts(nak)["error_message"], (requested, opts(nak)["error_message"])
    holder = "52:54:00:40:00:02"
    dora(client, holder)
    xid = next_xid()
    nak = client.exchange(frame(bootp(mac, "request", ("server_id", net.host_ip), ("requested_addr", net.address(100)),
                                      xid=xid), mac), xid)
    assert nak is not None and opts(nak)["error_message"] == f"{net.address(100)} is leased to another client".encode()

    # The client chose another server's offer: RFC 2131 says stay silent (and drop our offer).
    before = server.counters()
    client.send([frame(bootp(mac, "request", ("server_id", net.address(254)), ("requested_addr", net.address(100)),
                             xid=next_xid()), mac)])
    wait_for(lambda: server.counters()["received"] == before["received"] + 1, "the REQUEST for another server")
    assert server.counters()["ignored"] == before["ignored"] + 1
    assert server.counters()["nak"] == before["nak"]
    assert server.counters()["nak"] == 3


def test_a_real_client_busybox_udhcpc_gets_its_reservation_and_boot_file(net, serve, tmp_path):
    busybox = require_tool("busybox")
    mac = subprocess.run(["ip", "netns", "exec", net.namespace, "cat", "/sys/class/net/swc0/address"],
                         capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    server = serve("full", reservations=[Reservation(mac, net.address(31), "w31")])
    script = tmp_path / "udhcpc-script"
    script.write_text(f"#!/bin/sh\nenv > {tmp_path}/event.$1\n")  # udhcpc hands the lease over in the environment
    script.chmod(0o755)
    result = subprocess.run(
        ["ip", "netns", "exec", net.namespace, busybox, "udhcpc", "-i", "swc0", "-f", "-q", "-n", "-t", "5", "-T", "1",
         "-s", str(script), "-V", "PXEClient:Arch:00000:UNDI:002001"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lease = dict(line.split("=", 1) for line in (tmp_path / "event.bound").read_text().splitlines() if "=" in line)
    assert (lease["ip"], lease["subnet"], lease["router"], lease["hostname"]) == (
        net.address(31), "255.255.255.0", net.host_ip, "w31")
    assert (lease["siaddr"], lease["boot_file"], lease["serverid"]) == (net.host_ip, "undionly.kpxe", net.host_ip)
    assert [(lease.mac, str(lease.address)) for lease in server.leases()] == [(mac, net.address(31))]


def _fuzz_payloads(rng: random.Random, count: int) -> list[bytes]:
    valid = bytes(bootp("52:54:00:50:00:01", "discover", *PXE_BIOS, ("pxe_client_machine_identifier", GUID)))
    body = valid[:240]
    payloads = []
    for index in range(count):
        kind = index % 6
        if kind == 0:  # truncated
            payload = valid[:rng.randrange(0, 240)]
        elif kind == 1:  # wrong magic cookie
            cookie = rng.randbytes(4)
            payload = valid[:236] + (cookie if cookie != dhcpmagic else b"\0\0\0\0") + valid[240:]
        elif kind == 2:  # an option longer than what is left
            size = rng.randrange(1, 60)
            payload = body + b"\x35\x01\x01" + bytes([rng.choice([12, 43, 60, 77, 97]), size + rng.randrange(1, 100)])
            payload += rng.randbytes(size)
        elif kind == 3:  # random bytes
            payload = rng.randbytes(rng.randrange(0, 600))
            if len(payload) >= 240 and payload[236:240] == dhcpmagic:
                payload = payload[:236] + b"\0\0\0\0" + payload[240:]
        elif kind == 4:  # wrong op, or garbled values in well-delimited options
            choice = rng.randrange(3)
            if choice == 0:
                payload = bytes([rng.choice([0, 2, 3, 255])]) + valid[1:]
            elif choice == 1:
                payload = body + b"\x35\x01" + bytes([rng.choice([0, 2, 5, 6, 14, 99, 255])]) + b"\xff"
            else:  # a server identifier that is not one address
                size = rng.choice([1, 2, 3, 5, 6, 7, 8])
                payload = body + b"\x35\x01\x01\x36" + bytes([size]) + rng.randbytes(size) + b"\xff"
        else:  # oversized datagram (the veth MTU is 9000)
            payload = valid + rng.randbytes(rng.randrange(4000, 8000))
        payloads.append(payload)
    return payloads


def test_fuzz_malformed_packets_are_counted_and_dropped(net, client, serve, caplog):
    server = serve("full")
    rng = random.Random(20240613)
    payloads = _fuzz_payloads(rng, 3000)
    for payload in payloads:  # every one of them is malformed by construction
        with pytest.raises(Malformed):
            parse_request(payload)
    mac = "52:54:00:50:00:01"
    frames = [frame(payload, mac) for payload in payloads]
    sent = 0
    for start in range(0, len(frames), 250):  # in bursts the veth backlog (1000 frames) absorbs
        batch = frames[start:start + 250]
        client.send(batch)
        sent += len(batch)
        wait_for(lambda: server.counters()["received"] >= sent, f"the server to read {sent} fuzz packets")
    counts = server.counters()
    assert counts["malformed"] == len(payloads) and counts["received"] == len(payloads)
    assert counts["errors"] == 0 and counts["offer"] == 0
    assert server.running

    offer, ack = dora(client, "52:54:00:50:00:02", *PXE_BIOS)
    assert ack.yiaddr == net.address(100) and opts(ack)["message-type"] == ACK
    warnings = [r.getMessage() for r in caplog.records if "dhcp malformed" in r.getMessage()]
    assert 0 < len(warnings) < len(payloads) // 2  # rate-limited; each names client, reason and request
    assert "client=0.0.0.0:68" in warnings[0] and "reason=" in warnings[0] and "request=len:" in warnings[0]
