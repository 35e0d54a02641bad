"""Netboot DHCP against dnsmasq: N simulated clients complete DISCOVER, OFFER, REQUEST, ACK.

    .venv/bin/python benchmarks/netboot_dhcp.py [--clients 1000] [--window 64] [--rounds 3]
                                                [--lease-dir /dev/shm]

Two private network namespaces joined by a veth pair. In the server namespace runs Stellwerk's
DHCPServer (full mode with a lease file, as `stellwerk netboot serve --dhcp full` runs it, in a
process of its own), then dnsmasq for the same range, lease time and router (no DNS, --no-ping,
--quiet-dhcp, its lease file in the same temporary directory): one after the other, never both,
alternating for --rounds rounds, each run with a fresh server and lease file. In the client
namespace one process precomputes every DISCOVER and a REQUEST template per client (scapy, one
MAC per client), then sends them from a raw AF_PACKET socket with up to --window exchanges in
flight, matches OFFER and ACK by xid, patches the offered address and server identifier into the
REQUEST, and retransmits whatever got no answer within --retransmit seconds.

Prints, per server, the median run: clients, how many completed DORA (the fewest of any run), the
seconds until the last ACK, and the p50/p99 DORA latency (first DISCOVER sent to ACK received);
then the ratio of the times, each run's seconds, and how busy the client process was (its CPU
time over the run's wall time: far below 100% means the client was not what limited the rate).
Target: Stellwerk takes at most 2x dnsmasq's time for 1000 clients.

Both servers fsync their lease file for every new lease, so on a slow or shared disk the figures
follow the disk; --lease-dir /dev/shm measures the servers alone. Needs root (apt-get installs
dnsmasq-base when missing). Everything it creates is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

LEASE_TIME = 3600
SERVER_HOST = 1  # the server's address is the network's first host; the dynamic range starts at RANGE_START
RANGE_START = 10
DNSMASQ = "/usr/sbin/dnsmasq"

BOOTREPLY = 2  # BOOTP op
OFFER, ACK, NAK = 2, 5, 6  # DHCP message types (option 53)
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23  # Linux 4.20: our own DISCOVERs never come back up the socket
ETH_P_IP = 0x0800


# ---- orchestration (the benchmark's own process, in the host namespace) --------------------------


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout


def ensure_dnsmasq() -> None:
    if Path(DNSMASQ).exists():
        return
    print("installing dnsmasq-base with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "dnsmasq-base"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


@dataclass(frozen=True)
class Net:
    server_ns: str
    client_ns: str
    server_if: str
    client_if: str
    network: ipaddress.IPv4Network

    @property
    def server_ip(self) -> ipaddress.IPv4Address:
        return self.network.network_address + SERVER_HOST

    @property
    def range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.network.network_address + RANGE_START, self.network.broadcast_address - 1


def network_for(clients: int) -> ipaddress.IPv4Network:
    """The smallest network, at least a /24, whose dynamic range holds twice the clients (a /21 for
    1000). In a nearly full range dnsmasq, which with --no-ping keeps no note of what it offered,
    offers one free address to several clients in flight and NAKs all but one of them (about 140
    NAKs per 1000 clients in a /22); the headroom keeps that retry traffic out of its figures. The
    namespaces are private, so the addresses cannot clash with the host's."""
    needed = 2 * clients + RANGE_START + 1  # the range runs from RANGE_START to the last host address
    prefix = min(24, 32 - math.ceil(math.log2(needed)))
    if prefix < 16:
        raise SystemExit(f"--clients {clients}: at most a /16 of addresses is set up; use fewer clients")
    return ipaddress.IPv4Network(f"10.77.0.0/{prefix}")


def plan_network(clients: int) -> Net:
    tag = secrets.token_hex(3)  # unique names: several runs (or a test run) may overlap
    return Net(f"swbench-srv-{tag}", f"swbench-cli-{tag}", f"swbs{tag}", f"swbc{tag}", network_for(clients))


def create_network(net: Net) -> None:
    """Two namespaces and a veth pair between them. The caller runs `remove_network` in any case,
    also when this fails half-way."""
    for namespace in (net.server_ns, net.client_ns):
        run("ip", "netns", "add", namespace)
        # No IPv6 on the link: router solicitations and DAD frames would be noise on the client's socket.
        run("ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1")
        run("ip", "-n", namespace, "link", "set", "lo", "up")
    # Created directly inside the namespaces: the host's interfaces never see either end.
    run("ip", "link", "add", net.server_if, "netns", net.server_ns, "type", "veth", "peer", "name", net.client_if,
        "netns", net.client_ns)
    run("ip", "-n", net.server_ns, "addr", "add", f"{net.server_ip}/{net.network.prefixlen}", "dev", net.server_if)
    run("ip", "-n", net.server_ns, "link", "set", net.server_if, "up")
    # No address on the client end: the kernel there stays out of the exchange; promiscuous, so the
    # raw socket sees replies unicast to the simulated clients' MACs.
    run("ip", "-n", net.client_ns, "link", "set", net.client_if, "promisc", "on", "up")


def remove_network(net: Net) -> None:
    """Delete both namespaces (missing ones are no error); that deletes the veth pair with them."""
    for namespace in (net.server_ns, net.client_ns):
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


# Every process this benchmark starts, from the moment it exists: `stop_children` ends them all,
# also when an interruption comes while one is still starting up.
_children: list[subprocess.Popen] = []


def in_namespace(namespace: str, *command: str, **popen: Any) -> subprocess.Popen:
    # A process group of its own: Ctrl-C reaches only this process, which then stops its children
    # in order (SIGTERM) instead of having them die mid-run with tracebacks of their own.
    process = subprocess.Popen(["ip", "netns", "exec", namespace, *command], process_group=0, **popen)
    _children.append(process)
    return process


def stop_children() -> None:
    for process in reversed(_children):
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        finish(process)


def finish(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop one child this benchmark started: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


def read_line(stream: TextIO, process: subprocess.Popen, timeout: float, what: str) -> str:
    ready = select.select([stream], [], [], timeout)[0]
    line = stream.readline() if ready else ""
    if not line:
        raise SystemExit(f"{what}: no answer within {timeout:.0f} s (exit status {process.poll()})")
    return line


def wait_listening(net: Net, process: subprocess.Popen, what: str, log: Path) -> None:
    """Until something in the server namespace listens on UDP port 67 (dnsmasq prints no ready line)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}: {log.read_text()[-2000:]}")
        if run("ip", "netns", "exec", net.server_ns, "ss", "-Hlun", "sport = :67").strip():
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} does not listen on UDP port 67 after 30 s")


def start_stellwerk(net: Net, scratch: Path) -> subprocess.Popen:
    start, end = net.range
    config = {"interface": net.server_if, "server_ip": str(net.server_ip), "network": str(net.network),
              "start": str(start), "end": str(end), "lease_time": LEASE_TIME,
              "lease_file": str(scratch / "stellwerk-leases.json")}
    process = in_namespace(net.server_ns, sys.executable, __file__, "--stellwerk-server", json.dumps(config),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if read_line(process.stdout, process, 60, "the Stellwerk DHCP server").strip() != "ready":
        raise SystemExit("the Stellwerk DHCP server did not start")
    return process


def start_dnsmasq(net: Net, scratch: Path, clients: int) -> subprocess.Popen:
    start, end = net.range
    log = scratch / "dnsmasq.log"
    command = [
        DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--port=0", f"--interface={net.server_if}",
        "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range={start},{end},{net.network.netmask},{LEASE_TIME}",
        f"--dhcp-option=option:router,{net.server_ip}",  # what Stellwerk's pool sends (dnsmasq's default too)
        f"--dhcp-leasefile={scratch / 'dnsmasq.leases'}", "--dhcp-authoritative",
        f"--dhcp-lease-max={clients + 100}",  # the default, 1000, would turn client 1001 away
        # Stellwerk does not ping an address before offering it; dnsmasq's ping would time the ICMP
        # wait, not the DHCP server. Per-exchange logging is off, as Stellwerk's INFO lines are
        # unless logging is configured.
        "--no-ping", "--quiet-dhcp", "--pid-file=",
    ]
    with log.open("w") as stderr:
        process = in_namespace(net.server_ns, *command, stdout=subprocess.DEVNULL, stderr=stderr)
    wait_listening(net, process, "dnsmasq", log)
    return process


def stop_stellwerk(process: subprocess.Popen) -> dict[str, int]:
    """Close its stdin (the stop signal) and read the counters it prints on the way out."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    try:
        line = read_line(process.stdout, process, 30, "the Stellwerk DHCP server")
        process.wait(timeout=10)  # it exits by itself after the counters
        return json.loads(line)
    finally:
        finish(process)


class Client:
    """The client process in the client namespace, driven by one JSON line per run."""

    def __init__(self, net: Net, clients: int) -> None:
        self.process = in_namespace(net.client_ns, sys.executable, __file__, "--client", net.client_if, str(clients),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.call_timeout = 120.0
        ready = self._read("precomputing the packets")
        if ready.get("ready") != clients:
            raise SystemExit(f"the client process did not start: {ready}")

    def _read(self, what: str) -> dict:
        assert self.process.stdout is not None
        return json.loads(read_line(self.process.stdout, self.process, self.call_timeout, f"the client ({what})"))

    def run(self, window: int, retransmit: float, limit: float) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"window": window, "retransmit": retransmit, "limit": limit}) + "\n")
        self.process.stdin.flush()
        self.call_timeout = limit + 60
        return self._read("a run")

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        finish(self.process)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM tears down like Ctrl-C: through every finally below


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="simulated clients (default 1000)")
    parser.add_argument("--window", type=int, default=64, help="DORA exchanges in flight at most (default 64)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per server, alternating, each with a fresh server and lease file; the table "
                             "shows the median run (default 3)")
    parser.add_argument("--retransmit", type=float, default=2.0,
                        help="seconds without an answer before a packet is sent again (default 2)")
    parser.add_argument("--limit", type=float, default=300.0, help="give up a run after this many seconds")
    parser.add_argument("--lease-dir", type=Path, default=None,
                        help="where both servers keep their lease files (default: a new directory in the "
                             "system's temporary directory; e.g. /dev/shm leaves the disk's fsync time out)")
    args = parser.parse_args()
    if args.clients < 1 or args.window < 1 or args.rounds < 1:
        parser.error("--clients, --window and --rounds must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates network namespaces and sends from raw sockets")
    if shutil.which("ip") is None:
        raise SystemExit("needs iproute2 (ip)")
    ensure_dnsmasq()
    signal.signal(signal.SIGTERM, _raise_interrupt)

    runs: dict[str, list[dict]] = {"stellwerk": [], "dnsmasq": []}
    net = plan_network(args.clients)
    with tempfile.TemporaryDirectory(prefix="stellwerk-dhcp-bench-", dir=args.lease_dir) as scratch_name:
        try:
            create_network(net)
            client = Client(net, args.clients)
            # Alternating rounds, so a slow phase of the machine (or of its disk) hits both servers.
            for round_number in range(args.rounds):
                for name in runs:  # one after the other, never both at once
                    scratch = Path(scratch_name) / f"{name}-{round_number}"
                    scratch.mkdir()
                    if name == "stellwerk":
                        server = start_stellwerk(net, scratch)
                    else:
                        server = start_dnsmasq(net, scratch, args.clients)
                    result = client.run(args.window, args.retransmit, args.limit)
                    if name == "stellwerk":
                        counters = stop_stellwerk(server)
                        if counters["errors"] or counters["send_errors"]:
                            print(f"warning: the Stellwerk server counted errors: {counters}", file=sys.stderr)
                    else:
                        finish(server)
                    runs[name].append(result)
            client.close()
        finally:  # before the temporary directory goes: a server may still write its lease file there
            stop_children()
            remove_network(net)

    print(f"{'server':<10} {'clients':>8} {'completed':>10} {'seconds':>8} {'p50 ms':>8} {'p99 ms':>8}")
    medians: dict[str, dict] = {}
    for name, results in runs.items():
        medians[name] = median = sorted(results, key=lambda result: result["seconds"])[(len(results) - 1) // 2]
        latencies = sorted(median["latencies"])
        completed = min(result["completed"] for result in results)  # a failed round is never hidden
        print(f"{name:<10} {args.clients:>8} {completed:>10} {median['seconds']:>8.2f} "
              f"{percentile(latencies, 0.50):>8.1f} {percentile(latencies, 0.99):>8.1f}")
    ratio = medians["stellwerk"]["seconds"] / medians["dnsmasq"]["seconds"]
    print(f"stellwerk/dnsmasq time: {ratio:.2f}x (target <= 2x)")
    if args.rounds > 1:
        print("rounds: " + "; ".join(
            f"{name} " + " ".join(f"{result['seconds']:.2f}" for result in results) + " s"
            for name, results in runs.items()))
    print("client busy: " + ", ".join(
        f"{name} {max(100 * r['cpu'] / max(r['wall'], 1e-9) for r in results):.0f}% at most "
        f"({sum(r['retransmits'] for r in results)} retransmits, {sum(r['naks'] for r in results)} NAKs)"
        for name, results in runs.items()))
    for name, results in runs.items():
        for result in results:
            if result["completed"] < args.clients:
                print(f"warning: {args.clients - result['completed']} clients got no lease from {name}",
                      file=sys.stderr)


# ---- the Stellwerk server process (server namespace) ---------------------------------------------


def stellwerk_server(config: dict) -> None:
    """DHCPServer in full mode with a lease file, as `stellwerk netboot serve --dhcp full` runs it.
    Logging is left unconfigured, as the CLI leaves it. Prints "ready", serves until stdin closes,
    prints its counters."""
    from stellwerk.netboot.dhcp import DHCPServer
    from stellwerk.netboot.leases import Pool

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pool = Pool(config["network"], config["start"], config["end"], router=config["server_ip"],
                lease_time=config["lease_time"])
    server = DHCPServer(config["interface"], config["server_ip"], "full", pool=pool, lease_file=config["lease_file"])
    server.start()
    try:
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(json.dumps(server.counters()), flush=True)


# ---- the client process (client namespace) -------------------------------------------------------


class Frames:
    """Every client's DISCOVER frame and REQUEST template, built once with scapy before any timing.

    Both have xid 0 and REQUEST templates 0.0.0.0 as requested address (option 50) and server
    identifier (option 54); `with_xid` and `request` patch those bytes and adjust the UDP checksum
    incrementally (RFC 1624) instead of rebuilding the frame.
    """

    def __init__(self, count: int) -> None:
        from scapy.layers.dhcp import BOOTP, DHCP, dhcpmagic
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether

        self.count = count
        self.discovers: list[bytes] = []
        self.templates: list[bytes] = []
        parameters = [1, 3, 6, 15, 28, 51, 54, 58, 59]  # the parameter request list of a typical client
        for index in range(count):
            mac = bytes([0x02, 0x5B, *index.to_bytes(4, "big")])  # locally administered, one per client
            headers = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
                       / UDP(sport=68, dport=67))
            bootp = BOOTP(op=1, htype=1, hlen=6, chaddr=mac, xid=0, options=dhcpmagic)
            self.discovers.append(bytes(headers / bootp / DHCP(options=[
                ("message-type", "discover"), ("param_req_list", parameters), "end"])))
            self.templates.append(bytes(headers / bootp / DHCP(options=[
                ("message-type", "request"), ("requested_addr", "0.0.0.0"), ("server_id", "0.0.0.0"),
                ("param_req_list", parameters), "end"])))
        # Offsets of the patched fields; the same in every frame (fixed headers, same option order).
        self.xid_at = 14 + 20 + 8 + 4
        self.requested_at = 14 + 20 + 8 + 240 + 3 + 2
        self.server_id_at = self.requested_at + 6
        self.checksum_at = 14 + 20 + 6
        sample = self.templates[0]
        assert sample[self.requested_at - 2:self.requested_at] == b"\x32\x04"
        assert sample[self.server_id_at - 2:self.server_id_at] == b"\x36\x04"

    def with_xid(self, frame: bytes, xid: int) -> bytes:
        data = bytearray(frame)
        self._patch(data, self.xid_at, xid.to_bytes(4, "big"))
        return bytes(data)

    def request(self, template: bytes, requested: bytes, server_id: bytes) -> bytes:
        data = bytearray(template)
        self._patch(data, self.requested_at, requested)
        self._patch(data, self.server_id_at, server_id)
        return bytes(data)

    def _patch(self, data: bytearray, at: int, value: bytes) -> None:
        """Write `value` at `at` and fix the UDP checksum: subtract the old 16-bit words the field
        touches, add the new ones (RFC 1624). Words count from the UDP header, so a field at an odd
        offset (option 50 is one) is widened to whole words first."""
        udp = self.checksum_at - 6
        first = at - (at - udp) % 2
        last = at + len(value) + (at + len(value) - udp) % 2
        old_words = _word_sum(data[first:last])
        data[at:at + len(value)] = value
        new_words = _word_sum(data[first:last])
        checksum = (data[self.checksum_at] << 8) | data[self.checksum_at + 1]
        total = _fold((~checksum & 0xFFFF) + (~old_words & 0xFFFF) + new_words)
        checksum = ~total & 0xFFFF
        data[self.checksum_at:self.checksum_at + 2] = (checksum or 0xFFFF).to_bytes(2, "big")  # 0: "no checksum"


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _word_sum(data: bytes | bytearray) -> int:
    """Ones' complement sum of big-endian 16-bit words (`data` has an even length)."""
    return _fold(sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)))


def client_process(interface: str, count: int) -> None:
    """Precompute, say ready, then one DORA run per command line on stdin; one JSON result line each."""
    frames = Frames(count)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((interface, ETH_P_IP))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: a burst of replies is never dropped here
    print(json.dumps({"ready": count}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        result = dora_run(sock, frames, command["window"], command["retransmit"], command["limit"])
        print(json.dumps(result), flush=True)


def dora_run(sock: socket.socket, frames: Frames, window: int, retransmit: float, limit: float) -> dict:
    """All clients through DORA against whichever server listens now; at most `window` in flight.

    The xids are fresh for each run (a random base plus the client's index), so a late reply from an
    earlier run can never be mistaken for one of this run.
    """
    count = frames.count
    base = secrets.randbits(31)
    discovers = [frames.with_xid(frame, base + index) for index, frame in enumerate(frames.discovers)]
    templates = [frames.with_xid(frame, base + index) for index, frame in enumerate(frames.templates)]
    requests: list[bytes | None] = [None] * count
    phase = bytearray(count)  # 0 waiting to start, 1 DISCOVER sent, 2 REQUEST sent, 3 bound
    started = [0.0] * count
    last_sent = [0.0] * count
    latencies: list[float] = []
    in_flight: set[int] = set()
    retransmits = naks = 0
    send, recv, clock = sock.send, sock.recv, time.perf_counter
    sock.setblocking(False)
    while True:  # drop whatever is left over from the previous run
        try:
            recv(4096)
        except BlockingIOError:
            break
    sock.settimeout(0.01)

    cpu_start = time.process_time()
    begin = clock()
    finished_at = begin
    next_client = 0
    next_check = begin + retransmit / 4
    while len(latencies) < count:
        now = clock()
        while len(in_flight) < window and next_client < count:
            send(discovers[next_client])
            started[next_client] = last_sent[next_client] = now
            phase[next_client] = 1
            in_flight.add(next_client)
            next_client += 1
        if now >= next_check:
            if now - begin > limit:
                break
            for index in in_flight:
                if now - last_sent[index] >= retransmit:
                    send(discovers[index] if phase[index] == 1 else requests[index])  # type: ignore[arg-type]
                    last_sent[index] = now
                    retransmits += 1
            next_check = now + retransmit / 4
        try:
            data = recv(4096)
        except TimeoutError:
            continue
        # Ethernet, IPv4 (any header length), UDP to port 68, BOOTREPLY with one of our xids.
        if len(data) < 282 or data[23] != 17:
            continue
        udp = 14 + (data[14] & 0x0F) * 4
        if data[udp + 2] != 0 or data[udp + 3] != 68 or data[udp + 8] != BOOTREPLY:
            continue
        bootp = udp + 8
        index = int.from_bytes(data[bootp + 4:bootp + 8], "big") - base
        if not 0 <= index < count:
            continue
        message, server_id, at, end = 0, b"", bootp + 240, len(data)
        while at < end:  # options: find 53 (message type) and 54 (server identifier)
            code = data[at]
            if code == 255:
                break
            if code == 0:
                at += 1
                continue
            if at + 1 >= end:
                break
            if code == 53:
                message = data[at + 2]
            elif code == 54:
                server_id = data[at + 2:at + 6]
            at += 2 + data[at + 1]
        now = clock()
        if message == OFFER and phase[index] == 1 and len(server_id) == 4:
            request = frames.request(templates[index], data[bootp + 16:bootp + 20], server_id)
            requests[index] = request
            send(request)
            phase[index] = 2
            last_sent[index] = now
        elif message == ACK and phase[index] == 2:
            phase[index] = 3
            in_flight.discard(index)
            latencies.append((now - started[index]) * 1000)
            finished_at = now
        elif message == NAK and phase[index] == 2:
            naks += 1  # start over, as a client does
            send(discovers[index])
            phase[index] = 1
            last_sent[index] = now
    end_time = clock()
    complete = len(latencies) == count
    return {
        "completed": len(latencies),
        "seconds": (finished_at if complete else end_time) - begin,
        "wall": end_time - begin,
        "cpu": time.process_time() - cpu_start,
        "latencies": latencies,
        "retransmits": retransmits,
        "naks": naks,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--stellwerk-server":
        stellwerk_server(json.loads(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--client":
        client_process(sys.argv[2], int(sys.argv[3]))
    else:
        try:
            main()
        except KeyboardInterrupt:
            print("interrupted: the servers, the client and the namespaces are gone", file=sys.stderr)
            sys.exit(130)
