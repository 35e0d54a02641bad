"""Rung 3 of the testing ladder: real firmware and real iPXE boot real VMs from `stellwerk netboot serve`.

One isolated libvirt network (its own bridge, no libvirt DHCP, router advertisements from lab/routeradv.py) and one
netboot server (full DHCP, TFTP on port 69, HTTP) serve both VMs, one after the other (TCG is slow and the CI host
has two cores):

- BIOS: SeaBIOS runs the virtio NIC's iPXE ROM (Debian's ipxe-qemu), which gets DHCP from Stellwerk, chains
  /boot.ipxe, runs the machine's /ipxe script and boots a Debian kernel with a busybox initramfs (tests/vmboot.py);
- UEFI: OVMF with the NIC's ROM disabled, so the firmware's own PXE client is sent to TFTP for ipxe.efi, which then
  goes the same HTTP way.

The initramfs fetches `ignition.config.url` from its kernel command line and prints the sha256 of what it got. It
must equal the digest of what the server hands the test for the same MAC: what is compared is what is served, not
the file on disk. The server adds to a config what belongs to the asking client (a one-time token bound to the
client's address), so once the VM is off the test asks from the VM's own address, out of a network namespace
plugged into the test's bridge. The server's log must show the machine's own requests.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import vmboot
from support.paths import EXAMPLE
from support.tools import require_tool

log = logging.getLogger(__name__)

W1_MAC = "52:54:00:00:00:21"
CHAIN = ("/boot.ipxe", "/ipxe", "/assets/lab/vmlinuz", "/assets/lab/initrd.img", "/ignition")  # HTTP, in order
TFTP_PORT = 69  # firmware PXE clients know no other
EXAMPLE_SUBNET = ipaddress.IPv4Network("10.213.0.0/24")  # the example's nodeCIDR; its gateway .1 is the host
# Seconds until a VM must have reported. Under TCG on two cores a boot takes about 15 s (BIOS) and 25 s (UEFI),
# from starting the domain to the digest on the console; the limits leave room for a slow, busy CI host.
BIOS_TIMEOUT = 300.0
UEFI_TIMEOUT = 420.0

# ---- the host side ------------------------------------------------------------------------------


def cluster_file(directory: Path, subnet: ipaddress.IPv4Network) -> Path:
    """The lab example, moved to `subnet` when its own is taken (every node address moves along)."""
    text = EXAMPLE.read_text()
    if subnet != EXAMPLE_SUBNET:
        old, new = "10.213.0.", ".".join(str(subnet.network_address).split(".")[:3]) + "."
        text = text.replace(old, new)
    path = directory / "cluster.yaml"
    path.write_text(text)
    return path


def free_tcp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """The running `stellwerk netboot serve` and everything it has logged so far."""

    process: subprocess.Popen
    base_url: str
    assets: Path
    records: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def since(self, mark: int) -> list[dict]:
        with self.lock:
            return list(self.records[mark:])

    def mark(self) -> int:
        with self.lock:
            return len(self.records)

    def tail(self, count: int = 40) -> str:
        with self.lock:
            return "\n".join(json.dumps(record) for record in self.records[-count:])


def _read_log(server: Server) -> None:
    """Collect the server's stderr: JSON lines become records; anything else (a traceback) is kept as text."""
    for line in server.process.stderr:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = {"logger": "stderr", "message": line.rstrip("\n")}
        if record.get("logger") == "stellwerk.netboot.http":
            try:
                record["http"] = json.loads(record["message"])
            except (KeyError, ValueError):
                pass
        with server.lock:
            server.records.append(record)


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (libvirt's system instance, a bridge, DHCP on port 67, TFTP on 69)")
    for tool in ("qemu-system-x86_64", "libvirtd", "virtlogd", "apt-get", "dpkg-deb", "depmod"):
        require_tool(tool, f"/usr/sbin/{tool}")


@pytest.fixture(scope="module")
def kernel(host_tools) -> vmboot.TestKernel:
    return vmboot.kernel_for_tests()


@pytest.fixture(scope="module")
def accel(kernel):
    from stellwerk.lab.accel import detect

    chosen = detect(kernel.vmlinuz)
    print(f"\nVM accelerator: {chosen}")
    log.info("VM accelerator: %s", chosen)
    return chosen


@pytest.fixture(scope="module")
def conn(host_tools):
    from stellwerk.lab.daemons import connect

    connection = connect()
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def lab_network(conn):
    """The isolated network, with router advertisements so that iPXE does not wait ~13 s for IPv6 per boot."""
    from stellwerk.lab import network
    from stellwerk.lab.routeradv import RouterAdvertiser

    subnet = vmboot.free_subnet(EXAMPLE_SUBNET)
    tag = secrets.token_hex(4)
    spec = network.NetworkSpec(name=f"stellwerk-nbt-{tag}", bridge=f"swnb{tag}",
                               host=ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}"))
    with network.isolated(conn, spec), RouterAdvertiser(spec.bridge):
        yield spec


@pytest.fixture(scope="module")
def machine_dir() -> Iterator[Path]:
    """Console logs and NVRAM: in a directory libvirt's QEMU user can enter (pytest's tmp_path is root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="stellwerk-vmtest-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, lab_network, kernel) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("netboot-vm")
    assets = work / "assets"
    cluster = cluster_file(work, lab_network.subnet)
    rendered = subprocess.run([sys.executable, "-m", "stellwerk", "render", str(cluster), "-o", str(assets)],
                              capture_output=True, text=True, timeout=300)
    assert rendered.returncode == 0, rendered.stderr
    vmboot.install_boot_files(assets, kernel, secrets.token_hex(8))
    address = str(lab_network.address)
    http_port = free_tcp_port(address)
    process = subprocess.Popen(
        [sys.executable, "-m", "stellwerk", "netboot", "serve", str(assets), "--listen", address,
         "--http-port", str(http_port), "--tftp-port", str(TFTP_PORT), "--dhcp", "full",
         "--interface", lab_network.bridge],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = Server(process, f"http://{address}:{http_port}", assets)
    threading.Thread(target=_read_log, args=(running,), daemon=True).start()
    try:
        line = _first_line(process, timeout=60)
        assert "serving" in line, f"the server did not start: {line!r}\n{running.tail()}"
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else f"(nothing on stdout within {timeout:g} s; exit status {process.poll()})"


# ---- one boot -----------------------------------------------------------------------------------


@dataclass
class Boot:
    report: vmboot.Report
    console: str
    records: list[dict]
    seconds: float


def boot_vm(conn, accel, lab_network, server: Server, kernel, machine_dir: Path, *, name: str, firmware: str,
            rom, timeout: float) -> Boot:
    """Boot one VM with w1's MAC until its initramfs reports; the domain and its NVRAM are gone afterwards."""
    from stellwerk.lab import domain

    nonce = secrets.token_hex(8)
    vmboot.install_boot_files(server.assets, kernel, nonce)  # a fresh nonce: this boot's lines only
    console_log = machine_dir / f"{name}.console.log"
    nvram = machine_dir / f"{name}_VARS.fd" if firmware == "uefi" else None
    spec = domain.DomainSpec(
        name=f"stellwerk-nbt-{secrets.token_hex(3)}-{name}", domain_type=accel.domain_type, firmware=firmware,
        nics=(domain.Nic(W1_MAC, lab_network.name, rom=rom),), console_log=console_log, nvram=nvram,
        memory_mib=512, on_reboot="destroy")  # a machine that reboots has failed: stop it, and the test, at once
    mark = server.mark()
    started = time.monotonic()
    with domain.running(conn, spec) as machine:
        if nvram is not None:
            assert nvram.stat().st_size == domain.OVMF_VARS.stat().st_size  # its own copy of the template
        report, console = wait_for_report(lambda: domain.state(machine) == "running", console_log, nonce, server,
                                          mark, started + timeout, f"{name} ({accel.name})")
    seconds = time.monotonic() - started
    # Removal took everything along: no domain, no NVRAM file.
    assert domain.remove(conn, spec.name) is False
    if nvram is not None:
        assert not nvram.exists()
    print(f"\n{name}: reported after {seconds:.1f} s with {accel.name}")
    return Boot(report, console, server.since(mark), seconds)


def wait_for_report(running, console_log: Path, nonce: str, server: Server, mark: int, deadline: float,
                    what: str) -> tuple[vmboot.Report, str]:
    """Poll the console until the initramfs reports; fail early when the boot cannot succeed any more."""
    while True:
        alive = running()  # before reading the console: a VM that stopped has written its last line by then
        console = console_log.read_text(errors="replace") if console_log.exists() else ""
        report = vmboot.read_report(console, nonce)
        if report.done:
            return report, console
        refused = [r for r in server.since(mark) if (r.get("http", {}).get("status") or 0) >= 400
                   or str(r.get("tftp", {}).get("result", "")).startswith("error-")]
        if refused:
            pytest.fail(f"{what}: the netboot server refused a request of the booting VM: {json.dumps(refused[0])}"
                        f"{_diagnosis(console, server)}")
        if server.process.poll() is not None:
            pytest.fail(f"{what}: the netboot server exited with status {server.process.returncode}"
                        f"{_diagnosis(console, server)}")
        if not alive:
            pytest.fail(f"{what}: the VM stopped without reporting a digest{_diagnosis(console, server)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: no report before the timeout{_diagnosis(console, server)}")
        time.sleep(0.5)


def _diagnosis(console: str, server: Server) -> str:
    return (f"\n--- console (last 40 lines) ---\n{_tail(console)}"
            f"\n--- netboot server log (last 40 records) ---\n{server.tail()}")


def _tail(text: str, count: int = 40) -> str:
    return "\n".join(text.splitlines()[-count:])


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr.strip()}"


@contextmanager
def namespace_at(bridge: str, address: ipaddress.IPv4Interface) -> Iterator[str]:
    """A network namespace plugged into the test's `bridge` by a veth pair, holding `address`; removed afterwards."""
    tag = secrets.token_hex(3)
    namespace, outside, inside = f"stellwerk-nbt-{tag}", f"swnbh{tag}", f"swnbn{tag}"
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
        _ip("link", "set", outside, "master", bridge, "up")
        _ip("-n", namespace, "addr", "add", str(address), "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)  # takes both veth ends along
        subprocess.run(["ip", "link", "del", outside], capture_output=True)


FETCH = """
import hashlib, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as response:
    print(response.status, hashlib.sha256(response.read()).hexdigest())
"""


def served_digest(server: Server, lab_network, address: str, mac: str) -> str:
    """sha256 of what the server serves on GET /ignition?mac=MAC to a client at `address` (the VM's, now free)."""
    url = f"{server.base_url}/ignition?mac={mac}"
    with namespace_at(lab_network.bridge, ipaddress.IPv4Interface(f"{address}/{lab_network.subnet.prefixlen}")) as ns:
        fetched = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FETCH, url],
                                 capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, f"GET {url} from {address}: {fetched.stderr.strip()}"
    status, digest = fetched.stdout.split()
    assert status == "200", fetched.stdout
    return digest


def reserved_address(server: Server, mac: str) -> str:
    for group in (server.assets / "netboot" / "groups").glob("*.json"):
        data = json.loads(group.read_text())
        if data.get("selector", {}).get("mac") == mac:
            return data["metadata"]["address"]
    raise AssertionError(f"no group selects {mac}")


def dhcp_acks(records: list[dict], mac: str) -> list[dict[str, str]]:
    """The server's DHCP ACK lines for `mac`, as fields (the DHCP log is key=value text)."""
    acks = []
    for record in records:
        message = record.get("message", "")
        if record.get("logger") == "stellwerk.netboot.dhcp" and message.startswith("dhcp exchange "):
            fields = dict(word.split("=", 1) for word in message.split() if "=" in word)
            if fields.get("client") == mac and fields.get("reply") == "ACK":
                acks.append(fields)
    return acks


def http_requests(records: list[dict], address: str) -> list[dict]:
    """The HTTP request lines of the client at `address`."""
    return [record["http"] for record in records
            if "http" in record and str(record["http"].get("client", "")).rsplit(":", 1)[0] == address]


def check_boot(boot: Boot, server: Server, lab_network, address: str, firmware: str) -> None:
    """What every netbooted VM must show, whatever its firmware."""
    context = _diagnosis(boot.console, server)
    report = boot.report
    assert report.error is None, f"the initramfs failed: {report.error}{context}"
    # DHCP: the machine got its reservation, first as firmware/iPXE and then in the booted kernel.
    assert report.lease is not None and report.lease["ip"] == address, f"lease {report.lease}{context}"
    acks = dhcp_acks(boot.records, W1_MAC)
    assert any(ack.get("address") == address and ack.get("ipxe") == "yes"
               and ack.get("boot", "").endswith("/boot.ipxe") for ack in acks), \
        f"no DHCP ACK sent iPXE at {address} to /boot.ipxe{context}"
    # HTTP: the whole chain, each step answered with 200.
    fetched = http_requests(boot.records, address)
    by_endpoint: dict[str, list[dict]] = {}
    for request in fetched:
        by_endpoint.setdefault(request.get("endpoint"), []).append(request)
    for endpoint in CHAIN:
        assert any(r.get("status") == 200 for r in by_endpoint.get(endpoint, [])), \
            f"{firmware}: {address} did not fetch {endpoint}: {fetched}{context}"
    for endpoint in ("/ipxe", "/ignition"):
        assert {r.get("mac") for r in by_endpoint[endpoint] if r.get("status") == 200} == {W1_MAC}, fetched
    for endpoint, file in (("/assets/lab/vmlinuz", "vmlinuz"), ("/assets/lab/initrd.img", "initrd.img")):
        size = (server.assets / "boot" / "lab" / file).stat().st_size
        assert any(r.get("bytes") == size for r in by_endpoint[endpoint]), f"{endpoint}: not sent whole: {fetched}"
    # In the order of the chain: iPXE's script, the machine's script, kernel, initrd; then the booted initramfs.
    firsts = [fetched.index(by_endpoint[endpoint][0]) for endpoint in CHAIN]
    assert firsts == sorted(firsts), f"requests out of order: {[r.get('endpoint') for r in fetched]}"
    # The config: what the VM fetched is exactly what the server serves for its MAC.
    assert report.url is not None and "/ignition?mac=" in report.url
    assert report.sha256 == served_digest(server, lab_network, address, W1_MAC), f"digest mismatch{context}"


# ---- the tests ----------------------------------------------------------------------------------


@pytest.mark.vm
def test_bios_vm_boots_through_ipxe_rom_and_fetches_its_config(conn, accel, lab_network, server, kernel,
                                                                machine_dir, record_property):
    rom = Path("/usr/lib/ipxe/qemu/pxe-virtio.rom")
    if not rom.is_file():
        require_tool(str(rom))  # fails in CI, skips elsewhere: Debian's ipxe-qemu is missing
    record_property("accelerator", str(accel))
    boot = boot_vm(conn, accel, lab_network, server, kernel, machine_dir, name="bios", firmware="bios", rom=rom,
                   timeout=BIOS_TIMEOUT)
    record_property("boot_seconds", round(boot.seconds, 1))
    address = reserved_address(server, W1_MAC)
    check_boot(boot, server, lab_network, address, "bios")
    # The iPXE ROM asked for the HTTP script right away: no TFTP step for this machine.
    assert not [r for r in boot.records if "tftp" in r and r["tftp"]["client"].startswith(f"{address}:")]


@pytest.mark.vm
def test_uefi_vm_gets_ipxe_efi_by_tftp_then_boots_over_http(conn, accel, lab_network, server, kernel,
                                                             machine_dir, record_property):
    from stellwerk.lab.domain import ROM_OFF

    record_property("accelerator", str(accel))
    boot = boot_vm(conn, accel, lab_network, server, kernel, machine_dir, name="uefi", firmware="uefi", rom=ROM_OFF,
                   timeout=UEFI_TIMEOUT)
    record_property("boot_seconds", round(boot.seconds, 1))
    address = reserved_address(server, W1_MAC)
    check_boot(boot, server, lab_network, address, "uefi")
    # The firmware's PXE client (architecture 7) was sent to TFTP for ipxe.efi, and fetched it whole.
    acks = dhcp_acks(boot.records, W1_MAC)
    assert any(ack.get("arch") == "7" and ack.get("ipxe") == "no" and ack.get("boot") == "ipxe.efi"
               for ack in acks), acks
    size = Path("/usr/lib/ipxe/ipxe.efi").stat().st_size
    transfers = [(index, r["tftp"]) for index, r in enumerate(boot.records) if "tftp" in r]
    loaded = [index for index, t in transfers if t["file"] == "ipxe.efi" and t["result"] == "ok"
              and t["bytes"] == size and t["client"].startswith(f"{address}:")]
    assert loaded, f"no whole TFTP transfer of ipxe.efi ({size} bytes) to {address}: {transfers}"
    # ... before iPXE, now running, asked for its script over HTTP.
    chained = [index for index, r in enumerate(boot.records)
               if r.get("http", {}).get("endpoint") == "/boot.ipxe"
               and str(r["http"].get("client", "")).startswith(f"{address}:")]
    assert chained and loaded[0] < chained[0], (loaded, chained)


# ---- what the VMs showed the DHCP server must do ------------------------------------------------


def _offer_options(mode: str, *client_options) -> dict:
    """The options of the server's OFFER to one DISCOVER, decided by DHCPServer.handle (no sockets)."""
    from scapy.layers.dhcp import BOOTP, DHCP, dhcpmagic

    from stellwerk.netboot.dhcp import BootOptions, DHCPServer, Pool

    server = DHCPServer("swnbunit0", "10.213.0.1", mode, pool=Pool("10.213.0.0/24", start="10.213.0.100",
                                                                    end="10.213.0.199") if mode == "full" else None,
                        boot=BootOptions("10.213.0.1", "http://10.213.0.1:8080/boot.ipxe"))
    discover = BOOTP(op=1, chaddr=bytes.fromhex("525400000021"), xid=7, flags=0x8000, options=dhcpmagic) / DHCP(
        options=[("message-type", "discover"), *client_options, "end"])
    replies = server.handle(bytes(discover), ("0.0.0.0", 68), 67)
    assert len(replies) == 1, replies
    return {entry[0]: entry[1] for entry in BOOTP(replies[0].payload)[DHCP].options if isinstance(entry, tuple)}


IPXE_BIOS = [("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), ("pxe_client_architecture", b"\x00\x00"),
             ("user_class", b"iPXE")]


def test_full_mode_tells_ipxe_not_to_wait_for_proxydhcp_offers():
    """Without iPXE's no-pxedhcp (175.176 = 1), iPXE holds the offer ~3 s for ProxyDHCP offers on every boot."""
    options = _offer_options("full", *IPXE_BIOS)
    assert options["boot-file-name"] == b"http://10.213.0.1:8080/boot.ipxe"
    assert options[175] == bytes([176, 1, 1])


@pytest.mark.parametrize(("mode", "client"), [
    ("full", IPXE_BIOS[:2]),  # firmware PXE: not iPXE, the option means nothing to it
    ("proxy", IPXE_BIOS),  # beside another DHCP server, whose offer is the one iPXE takes its address from
])
def test_no_pxedhcp_goes_to_ipxe_in_full_mode_only(mode, client):
    assert 175 not in _offer_options(mode, *client)
