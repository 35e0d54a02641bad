"""The HTTP boot service, over real sockets on 127.0.0.1: requests for the well-behaved clients, raw sockets for
everything a well-behaved client would never send.

The assets are the example lab cluster rendered by the real `stellwerk render`, plus a hand-written machine store
(render does not write netboot/ yet) and small boot files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import random
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support.clusters import write_cluster
from support.paths import BASE_EXAMPLE_TEXT, EXAMPLE
from support.tools import require_tool
from support.netboot_configs import assert_public_part_of, public_part, without_pointer
from stellwerk.netboot.http import BootServer
from stellwerk.netboot.machines import MachineRegistry
from stellwerk.netboot.store import Store
from stellwerk.netboot.tls import server_identity

MACS = {"c1": "52:54:00:00:00:11", "c2": "52:54:00:00:00:12", "c3": "52:54:00:00:00:13", "w1": "52:54:00:00:00:21"}
KERNEL_SIZE = 12 * 1024 * 1024 + 7  # big enough that sendfile runs many rounds; odd so ranges do not align
_RENDERED: dict[str, Path] = {}


def hexhyp(mac: str) -> str:
    return mac.replace(":", "-")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def write_lab_store(root: Path) -> None:
    """What render will write for the lab: a profile per role, a group per node; plus an 'installed' group."""
    profiles = root / "netboot" / "profiles"
    for role in ("controller", "worker"):
        write_json(profiles / f"lab-{role}.json", {
            "id": f"lab-{role}", "kernel": "/assets/lab/vmlinuz", "initrd": ["/assets/lab/initrd.img"],
            "args": ["console=ttyS0", "ignition.firstboot", "ignition.platform.id=metal"], "config": "ignition"})
    write_json(profiles / "lab-installed.json", {
        "id": "lab-installed", "kernel": "/assets/lab/vmlinuz", "initrd": [], "args": ["root=/dev/nvme0n1p2"],
        "config": "ignition"})
    groups = root / "netboot" / "groups"
    for node, mac in MACS.items():
        role = "worker" if node.startswith("w") else "controller"
        write_json(groups / f"{node}.json", {"name": node, "profile": f"lab-{role}", "selector": {"mac": mac},
                                             "metadata": {"node": node, "role": role}})
    write_json(groups / "c1-installed.json", {"name": "c1-installed", "profile": "lab-installed",
                                              "selector": {"mac": MACS["c1"], "os": "installed"},
                                              "metadata": {"node": "c1", "role": "controller"}})


def write_boot(root: Path) -> None:
    """Boot files, and the traps: links out of boot/ and inside it, a hidden file, a FIFO."""
    lab = root / "boot" / "lab"
    lab.mkdir(parents=True)
    (lab / "vmlinuz").write_bytes(random.Random(7).randbytes(KERNEL_SIZE))
    (lab / "initrd.img").write_bytes(random.Random(8).randbytes(100_000))
    (lab / "empty").write_bytes(b"")
    (root / "boot" / "escape").symlink_to("../nodes/c1")  # a directory outside boot/
    (lab / "ca-link").symlink_to(root / "pki" / "ca.key")  # a file outside boot/
    (root / "boot" / "inside-link").symlink_to("lab/initrd.img")  # inside, but links are never followed
    (root / "boot" / ".hidden").write_bytes(b"hidden")
    os.mkfifo(lab / "fifo")


@pytest.fixture
def lab_assets(run_cli, tmp_path_factory) -> Path:
    """The lab cluster rendered once for this module; servers only read it."""
    if "lab" not in _RENDERED:
        root = tmp_path_factory.mktemp("netboot-http") / "lab"
        result = run_cli("render", EXAMPLE, "-o", root)
        assert result.code == 0, result.err
        write_lab_store(root)
        write_boot(root)
        _RENDERED["lab"] = root
    return _RENDERED["lab"]


@pytest.fixture
def serve():
    servers: list[tuple[BootServer, Path]] = []

    def start(assets: Path, secure: bool = False, **options) -> BootServer:
        options.setdefault("request_timeout", 5.0)
        options.setdefault("idle_timeout", 5.0)
        if secure:  # the HTTPS listener and the machine states, as `netboot serve` runs them
            options.update(tls=server_identity(assets, [ipaddress.ip_address("127.0.0.1")]), tls_port=0,
                           machines=MachineRegistry(assets))
        server = BootServer(Store.load(assets), assets, "127.0.0.1", 0, **options).start()
        servers.append((server, assets))
        return server

    yield start
    for server, assets in servers:
        server.stop()
        (assets / "state/machines.json").unlink(missing_ok=True)  # tokens issued in one test stay in it


@pytest.fixture
def lab(lab_assets, serve) -> BootServer:
    return serve(lab_assets, secure=True)


def test_configs_with_secrets_are_refused_without_the_https_listener(lab_assets, serve):
    server = serve(lab_assets)
    for node in ("c1", "w1"):  # a worker's config holds its WireGuard key and bootstrap token
        response = requests.get(f"{server.url}/ignition", params={"mac": hexhyp(MACS[node])}, timeout=10)
        assert response.status_code == 403 and b"PRIVATE KEY" not in response.content
        assert b"served only over HTTPS with a one-time token" in response.content


class Raw:
    """A raw HTTP/1.1 client on one connection."""

    def __init__(self, server: BootServer, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, target: str, method: str = "GET", extra: str = "") -> None:
        self.send(f"{method} {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode("latin-1"))

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        line = self.file.readline()
        if not line:
            raise EOFError("connection closed before a response")
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (header := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if head_only else self.file.read(int(headers.get("content-length", "0")))
        return status, headers, body

    def closed_by_server(self) -> bool:
        """True when the server closed the connection (reads end-of-stream)."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_get(server: BootServer, target: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    with Raw(server) as client:
        client.get(target, extra=extra + "Connection: close\r\n")
        return client.response()


def wait_for(condition, timeout: float = 10.0) -> None:
    """Bounded wait for something another thread does after the client has its answer (logs, counters)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- endpoints -------------------------------------------------------------------------------------------------

def test_healthz(lab):
    response = requests.get(f"{lab.url}/healthz", timeout=10)
    assert (response.status_code, response.text) == (200, "ok")


def test_boot_script_chains_with_the_machine_identity(lab):
    response = requests.get(f"{lab.url}/boot.ipxe", timeout=10)
    assert response.status_code == 200
    assert response.text.splitlines() == [
        "#!ipxe",
        "# Stellwerk netboot: send this machine's identity and run the boot script chosen for it.",
        f"chain {lab.url}/ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&hostname=${{hostname:uristring}}"
        "&serial=${serial:uristring}&buildarch=${buildarch:uristring}",
    ]


def test_machine_script(lab):
    response = requests.get(f"{lab.url}/ipxe", params={"mac": "52-54-00-00-00-11", "uuid": "", "hostname": "",
                                                       "serial": "", "buildarch": "x86_64"}, timeout=10)
    assert response.status_code == 200
    assert response.text.splitlines() == [
        "#!ipxe",
        "# Stellwerk netboot: group c1, profile lab-controller",
        f"kernel {lab.url}/assets/lab/vmlinuz initrd=initrd.img console=ttyS0 ignition.firstboot "
        f"ignition.platform.id=metal ignition.config.url={lab.url}/ignition?mac=${{mac:hexhyp}}",
        f"initrd --name initrd.img {lab.url}/assets/lab/initrd.img",
        "boot",
    ]
    # Any spelling of the MAC, the same script.
    for spelling in ("52:54:00:00:00:11", "5254.0000.0011", "525400000011"):
        assert requests.get(f"{lab.url}/ipxe?mac={spelling}", timeout=10).text == response.text
    installed = requests.get(f"{lab.url}/ipxe?mac=52-54-00-00-00-11&os=installed", timeout=10).text
    assert "group c1-installed, profile lab-installed" in installed
    # The config URL carries the extra selector key, so /ignition selects the same group.
    assert f"ignition.config.url={lab.url}/ignition?mac=${{mac:hexhyp}}&os=installed" in installed


def test_a_boot_as_ipxe_runs_it(lab, lab_assets):
    """Follow the scripts as iPXE would: expand the settings, chain, fetch kernel, initrds and the config."""
    settings = {"${mac:hexhyp}": hexhyp(MACS["w1"]), "${uuid}": "6f6c2e2a-0000-4000-8000-00000000abcd",
                "${hostname:uristring}": "", "${serial:uristring}": "To%20Be%20Filled", "${buildarch:uristring}": "x86_64"}

    def expand(line: str) -> str:
        for name, value in settings.items():
            line = line.replace(name, value)
        return line

    chain = requests.get(f"{lab.url}/boot.ipxe", timeout=10).text.splitlines()[-1]
    assert chain.startswith("chain ")
    script = requests.get(expand(chain.split()[1]), timeout=10).text
    fetched: dict[str, bytes] = {}
    for line in script.splitlines():
        words = expand(line).split()
        if words and words[0] == "kernel":
            fetched["kernel"] = requests.get(words[1], timeout=30).content
            url = next(word.split("=", 1)[1] for word in words if word.startswith("ignition.config.url="))
            fetched["config"] = requests.get(url, timeout=10).content
        elif words and words[0] == "initrd":
            fetched[words[2]] = requests.get(words[3], timeout=10).content
    assert fetched["kernel"] == (lab_assets / "boot/lab/vmlinuz").read_bytes()
    assert fetched["initrd.img"] == (lab_assets / "boot/lab/initrd.img").read_bytes()
    assert_public_part_of(fetched["config"], lab_assets / "nodes/w1/ignition.json")


def test_ignition_is_the_public_part_of_the_file_on_disk(lab, lab_assets):
    for node, mac in MACS.items():
        response = requests.get(f"{lab.url}/ignition", params={"mac": hexhyp(mac)}, timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/vnd.coreos.ignition+json"
        assert response.headers["Cache-Control"] == "no-store"
        assert_public_part_of(response.content, lab_assets / "nodes" / node / "ignition.json")
    installed = requests.get(f"{lab.url}/ignition?mac={MACS['c1']}&os=installed", timeout=10)
    assert_public_part_of(installed.content, lab_assets / "nodes/c1/ignition.json")


def test_metadata_is_the_group_metadata(lab):
    response = requests.get(f"{lab.url}/metadata?mac={MACS['c2']}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"node": "c2", "role": "controller"}


def test_cloud_config_of_an_ignition_machine_is_not_found(lab):
    response = requests.get(f"{lab.url}/cloud-config?mac={MACS['c1']}", timeout=10)
    assert response.status_code == 404
    assert "reads ignition, not cloud-config; fetch /ignition" in response.text


@pytest.mark.parametrize("endpoint", ["/ipxe", "/ignition", "/cloud-config", "/metadata", "/nocloud/x=1/user-data"])
def test_a_request_without_mac_is_refused(lab, endpoint):
    response = requests.get(f"{lab.url}{endpoint}", params={"hostname": "c1", "uuid": ""}, timeout=10)
    assert response.status_code == 400
    assert "mac is required" in response.text


@pytest.mark.parametrize("query", ["mac=52:54:00:00:00", "mac=zz-54-00-00-00-11", "mac=52-54-00-00-00-11&uuid=nope",
                                   "mac=52-54-00-00-00-11&Bad%20Key=1", "mac=52-54-00-00-00-11&os=%0a",
                                   "mac=52-54-00-00-00-11&mac=52-54-00-00-00-12", "mac=%ff"])
def test_malformed_labels_are_refused(lab, query):
    assert requests.get(f"{lab.url}/ignition?{query}", timeout=10).status_code == 400


def test_a_machine_gets_only_its_own_config(lab, lab_assets):
    own = public_part(lab_assets / "nodes/c1/ignition.json")
    others = [(lab_assets / "nodes" / node / "ignition.json").read_bytes() for node in ("c1", "c2", "c3", "w1")]
    hostnames = [f'"data:,{node}%0A"'.encode() for node in ("c1", "c2", "c3", "w1")]
    for query in (f"mac={MACS['c1']}&hostname=c2", f"mac={MACS['c1']}&node=c2&serial=c3&role=worker",
                  f"mac={MACS['c1']}&uuid=6f6c2e2a-0000-4000-8000-00000000abcd"):
        response = requests.get(f"{lab.url}/ignition?{query}", timeout=10)
        assert without_pointer(response.content) == own
    for query in (f"mac={MACS['c1']}&mac={MACS['c2']}", f"mac={MACS['c2']}&mac={MACS['c1']}"):
        response = requests.get(f"{lab.url}/ignition?{query}", timeout=10)
        assert response.status_code == 400
        assert not any(config[:100] in response.content for config in others)
        assert not any(hostname in response.content for hostname in hostnames)


def test_an_unknown_machine_without_default_group_gets_nothing(lab):
    for endpoint in ("/ipxe", "/ignition", "/metadata"):
        response = requests.get(f"{lab.url}{endpoint}?mac=52-54-00-99-99-99", timeout=10)
        assert response.status_code == 404
        assert "no group matches mac 52:54:00:99:99:99 and there is no default group" in response.text
    wait_for(lambda: lab.counters().get("unknown_machines") == 3)


def test_an_unknown_machine_gets_the_default_profile(tmp_path, serve):
    root = tmp_path / "assets"
    write_json(root / "netboot/profiles/discovery.json", {
        "id": "discovery", "kernel": "/assets/live/vmlinuz", "initrd": ["/assets/live/initrd.img", "/assets/live/extra.cpio"],
        "args": ["console=tty0"], "config": "ignition"})
    write_json(root / "netboot/groups/default.json", {"name": "default", "profile": "discovery", "selector": {},
                                                      "metadata": {"purpose": "discovery"}})
    server = serve(root)
    script = requests.get(f"{server.url}/ipxe?mac=02-00-00-00-00-01", timeout=10).text
    assert script.splitlines()[1:] == [
        "# Stellwerk netboot: group default, profile discovery",
        f"kernel {server.url}/assets/live/vmlinuz initrd=initrd.img initrd=extra.cpio console=tty0",
        f"initrd --name initrd.img {server.url}/assets/live/initrd.img",
        f"initrd --name extra.cpio {server.url}/assets/live/extra.cpio",
        "boot",
    ]  # no config URL: the default group names no node
    response = requests.get(f"{server.url}/ignition?mac=02-00-00-00-00-01", timeout=10)
    assert response.status_code == 404
    assert "names no node" in response.text
    assert requests.get(f"{server.url}/metadata?mac=02-00-00-00-00-01", timeout=10).json() == {"purpose": "discovery"}
    assert requests.get(f"{server.url}/assets/live/vmlinuz", timeout=10).status_code == 404  # no boot/ yet


def test_public_url_goes_into_the_scripts(lab_assets, serve):
    server = serve(lab_assets, public_url="http://boot.example:8080/")
    assert "chain http://boot.example:8080/ipxe?mac=" in requests.get(f"{server.url}/boot.ipxe", timeout=10).text
    script = requests.get(f"{server.url}/ipxe?mac={MACS['c3']}", timeout=10).text
    assert "kernel http://boot.example:8080/assets/lab/vmlinuz " in script
    assert "ignition.config.url=http://boot.example:8080/ignition?mac=${mac:hexhyp}" in script
    for bad in ("ftp://x", "http://a b", "http://x/${evil}", "http://x/?q"):
        with pytest.raises(ValueError):
            BootServer(Store.load(lab_assets), lab_assets, "127.0.0.1", 0, public_url=bad)


def test_the_store_render_writes_is_served_as_is(run_cli, tmp_path, serve):
    root = tmp_path / "lab"
    result = run_cli("render", EXAMPLE, "-o", root)
    assert result.code == 0, result.err
    server = serve(root, secure=True)
    for node, mac in MACS.items():
        script = requests.get(f"{server.url}/ipxe?mac={hexhyp(mac)}", timeout=10).text
        assert f"# Stellwerk netboot: group {node}, profile " in script
        assert f"ignition.config.url={server.url}/ignition?mac=${{mac:hexhyp}}" in script
        config = requests.get(f"{server.url}/ignition?mac={hexhyp(mac)}", timeout=10).content
        assert_public_part_of(config, root / "nodes" / node / "ignition.json")


# -- assets ----------------------------------------------------------------------------------------------------

def test_a_large_file_round_trips_through_sendfile(lab, lab_assets):
    expected = hashlib.sha256((lab_assets / "boot/lab/vmlinuz").read_bytes()).hexdigest()
    before = lab.counters().get("sendfile_bytes", 0)
    response = requests.get(f"{lab.url}/assets/lab/vmlinuz", timeout=60)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(KERNEL_SIZE)
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert hashlib.sha256(response.content).hexdigest() == expected
    wait_for(lambda: lab.counters().get("sendfile_bytes", 0) - before == KERNEL_SIZE)


@pytest.mark.parametrize("range_header, start, end", [
    ("bytes=0-99", 0, 99),  # the first bytes
    ("bytes=-1000", KERNEL_SIZE - 1000, KERNEL_SIZE - 1),  # a suffix
    ("bytes=12582900-", 12582900, KERNEL_SIZE - 1),  # open-ended
    ("bytes=100-99999999999", 100, KERNEL_SIZE - 1),  # the end is clipped to the file
    ("bytes=-99999999999", 0, KERNEL_SIZE - 1),  # a suffix longer than the file is the whole file
    ("bytes=5-5", 5, 5),
])
def test_ranges(lab, lab_assets, range_header, start, end):
    data = (lab_assets / "boot/lab/vmlinuz").read_bytes()
    response = requests.get(f"{lab.url}/assets/lab/vmlinuz", headers={"Range": range_header}, timeout=30)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{KERNEL_SIZE}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.content == data[start:end + 1]


@pytest.mark.parametrize("path, range_header", [
    ("/assets/lab/vmlinuz", f"bytes={KERNEL_SIZE}-"),
    ("/assets/lab/vmlinuz", f"bytes={KERNEL_SIZE + 10}-{KERNEL_SIZE + 20}"),
    ("/assets/lab/vmlinuz", "bytes=-0"),
    ("/assets/lab/empty", "bytes=0-"),
])
def test_unsatisfiable_ranges(lab, path, range_header):
    size = KERNEL_SIZE if path.endswith("vmlinuz") else 0
    response = requests.get(f"{lab.url}{path}", headers={"Range": range_header}, timeout=10)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "bytes=10-5", "lines=0-1", "bytes=a-b", "bytes=-"])
def test_ranges_that_are_not_one_valid_byte_range_get_the_whole_file(lab, range_header):
    response = requests.get(f"{lab.url}/assets/lab/initrd.img", headers={"Range": range_header}, timeout=10)
    assert response.status_code == 200
    assert len(response.content) == 100_000


def test_if_range_guards_ranges_against_a_changed_file(lab):
    first = requests.get(f"{lab.url}/assets/lab/initrd.img", headers={"Range": "bytes=0-9"}, timeout=10)
    etag = first.headers["ETag"]
    same = requests.get(f"{lab.url}/assets/lab/initrd.img", headers={"Range": "bytes=0-9", "If-Range": etag}, timeout=10)
    assert same.status_code == 206
    changed = requests.get(f"{lab.url}/assets/lab/initrd.img", headers={"Range": "bytes=0-9", "If-Range": '"old"'},
                           timeout=10)
    assert changed.status_code == 200 and len(changed.content) == 100_000


def test_head(lab, lab_assets):
    with Raw(lab) as client:
        client.get("/assets/lab/vmlinuz", method="HEAD")
        status, headers, _ = client.response(head_only=True)
        assert (status, headers["content-length"]) == (200, str(KERNEL_SIZE))
        served = requests.get(f"{lab.url}/ignition?mac={MACS['c1']}", timeout=10).content
        client.get(f"/ignition?mac={MACS['c1']}", method="HEAD")
        status, headers, _ = client.response(head_only=True)
        assert (status, int(headers["content-length"])) == (200, len(served))
        client.get("/healthz")  # the connection is still in step: no body was sent for the HEADs
        assert client.response()[::2] == (200, b"ok")


# -- connections -----------------------------------------------------------------------------------------------

def test_keep_alive_serves_several_requests_on_one_connection(lab, lab_assets):
    with Raw(lab) as client:
        client.get("/healthz")
        assert client.response()[::2] == (200, b"ok")
        client.get("/assets/lab/initrd.img", extra="Range: bytes=0-9\r\n")
        status, _, body = client.response()
        assert (status, body) == (206, (lab_assets / "boot/lab/initrd.img").read_bytes()[:10])
        # Pipelined: two requests in one write, two answers in order.
        client.send(f"GET /metadata?mac={MACS['w1']} HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n"
                    "Connection: close\r\n\r\n".encode())
        assert json.loads(client.response()[2]) == {"node": "w1", "role": "worker"}
        status, headers, body = client.response()
        assert (status, body, headers["connection"]) == (200, b"ok", "close")
        assert client.closed_by_server()
    # requests reuses the connection too.
    with requests.Session() as session:
        session.get(f"{lab.url}/healthz", timeout=10)
        session.get(f"{lab.url}/metadata?mac={MACS['c1']}", timeout=10)
    wait_for(lambda: lab.counters().get("requests", 0) >= 6)


def test_http_1_0_closes_unless_asked_to_keep_alive(lab):
    with Raw(lab) as client:
        client.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert client.response()[::2] == (200, b"ok")
        assert client.closed_by_server()
    with Raw(lab) as client:
        client.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = client.response()
        assert headers["connection"] == "keep-alive"
        client.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert client.response()[0] == 200


TRAVERSALS = [
    "/assets/../nodes/c1/ignition.json",
    "/assets/lab/../../nodes/c1/ignition.json",
    "/assets/%2e%2e/nodes/c1/ignition.json",
    "/assets/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/assets/lab/%2e%2e%2f%2e%2e%2fnodes%2fc1%2fignition.json",
    "/assets/%252e%252e/nodes/c1/ignition.json",  # double-encoded
    "/assets/%25252e%25252e/%25252e%25252e/pki/ca.key",  # triple-encoded
    "/assets/..%c0%af..%c0%afpki/ca.key",  # overlong UTF-8 '/'
    "/assets//etc/passwd",  # absolute
    "/assets/%2fetc%2fpasswd",
    "/assets/..\\nodes\\c1\\ignition.json",  # backslashes
    "/assets/lab%5c..%5c..%5cnodes%5cc1%5cignition.json",
    "/assets/lab/initrd.img%00",  # NUL
    "/assets/lab/initrd.img%00/../../../nodes/c1/ignition.json",
    "/assets/escape/ignition.json",  # a linked directory pointing out of boot/
    "/assets/lab/ca-link",  # a linked file pointing out of boot/
    "/assets/inside-link",  # links are refused even when they stay inside
    "/assets/.hidden",
    "/assets/lab/./initrd.img",
    "/assets/lab/",
    "/assets/lab",  # a directory
    "/assets/lab/fifo",  # not a regular file (and must not hang the server)
    "/../pki/ca.key",
    "/%2e%2e/pki/ca.key",
    "/pki/ca.key",
    "/nodes/c1/ignition.json",
    "/assets/lab/vmlinuz/../../../pki/ca.key",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_traversal_is_refused(lab, lab_assets, target):
    secrets = [(lab_assets / "nodes/c1/ignition.json").read_bytes(), (lab_assets / "pki/ca.key").read_bytes(), b"root:x:"]
    status, _, body = raw_get(lab, target)
    assert status in (400, 403, 404), (target, status)
    assert not any(secret in body for secret in secrets)


def test_traversal_with_raw_bytes_in_the_request_line(lab, lab_assets):
    for target in (b"/assets/lab/initrd.img\x00", b"/assets/\xc0\xae\xc0\xae/pki/ca.key", b"/assets/lab/\r/x"):
        with Raw(lab) as client:
            client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = client.response()
            assert status == 400, target
            assert (lab_assets / "pki/ca.key").read_bytes() not in body


def test_refused_paths_are_counted(lab):
    for target in TRAVERSALS[:3]:
        raw_get(lab, target)
    wait_for(lambda: lab.counters().get("refused_paths", 0) >= 3)


def test_oversized_request_line_gets_414_and_a_closed_connection(lab):
    with Raw(lab) as client:
        client.send(b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = client.response()
        assert status == 414 and b"longer than 8192 bytes" in body
        assert client.closed_by_server()
    with Raw(lab) as client:  # no line end at all: refused as soon as the limit is passed
        client.send(b"GET /" + b"a" * 20000)
        assert client.response()[0] == 414
        assert client.closed_by_server()


def test_oversized_headers_get_431_and_a_closed_connection(lab):
    with Raw(lab) as client:
        client.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
        assert client.response()[0] == 431
        assert client.closed_by_server()
    with Raw(lab) as client:
        client.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-A: 1\r\n" * 100 + b"\r\n")
        assert client.response()[0] == 431
        assert client.closed_by_server()
    # Just under the limits is fine.
    with Raw(lab) as client:
        client.send(b"GET /healthz?" + b"a" * 8000 + b" HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 8000 + b"\r\n\r\n")
        assert client.response()[0] == 200


@pytest.mark.parametrize("request_bytes, status", [
    (b"BREW /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 405),
    (b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello, more or less
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
    (b"GET http://evil/healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n", 400),
])
def test_malformed_requests_get_a_clear_status(lab, request_bytes, status):
    with Raw(lab) as client:
        client.send(request_bytes)
        got, headers, body = client.response()
        assert got == status, body
        assert body.startswith(f"{status} ".encode())
        if status == 405:
            assert headers["allow"] == "GET, HEAD"
    wait_for(lambda: lab.counters().get("bad_requests", 0) >= 1)


def test_a_stalled_client_does_not_block_others(lab_assets, serve):
    server = serve(lab_assets, request_timeout=30.0, idle_timeout=30.0)
    with Raw(server) as stalled, Raw(server) as silent:
        stalled.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # never finishes its head
        for _ in range(3):
            assert requests.get(f"{server.url}/assets/lab/initrd.img", timeout=10).status_code == 200
        with Raw(server) as other:
            other.get("/healthz")
            assert other.response()[0] == 200
        for waiting in (stalled, silent):  # both still waiting (for the rest of a request, for one), unanswered
            waiting.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                waiting.sock.recv(1)


def test_a_stalled_client_is_timed_out(lab_assets, serve):
    server = serve(lab_assets, request_timeout=1.0, idle_timeout=1.0)
    with Raw(server) as stalled:
        stalled.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        status, _, body = stalled.response()
        assert status == 408 and b"request head not complete within 1 s" in body
        assert stalled.closed_by_server()
    with Raw(server) as idle:  # a keep-alive connection that says nothing is closed quietly
        assert idle.closed_by_server()
    wait_for(lambda: server.counters().get("timeouts", 0) == 1)


def test_a_client_dripping_bytes_is_timed_out(lab_assets, serve):
    """Each byte arrives well within the timeout; the request head as a whole does not."""
    server = serve(lab_assets, request_timeout=1.0, idle_timeout=1.0)
    with Raw(server) as client:
        request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 1000
        answer = b""
        for byte in request:
            try:
                client.sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            client.sock.setblocking(False)
            try:
                answer = client.sock.recv(65536)
            except BlockingIOError:
                continue
            finally:
                client.sock.setblocking(True)
            break
        assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_client_that_stops_reading_is_dropped(lab_assets, serve):
    server = serve(lab_assets, request_timeout=1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /assets/lab/vmlinuz HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: server.counters().get("timeouts", 0) == 1, timeout=30)
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        sock.close()


def test_connections_over_the_limit_get_503(lab_assets, serve):
    server = serve(lab_assets, max_connections=2)
    first, second = Raw(server), Raw(server)
    try:
        first.get("/healthz")  # both are served, and stay open
        second.get("/healthz")
        assert first.response()[0] == 200 and second.response()[0] == 200
        with Raw(server) as third:
            status, _, body = third.response()
            assert status == 503 and b"too many connections" in body
    finally:
        first.close()
        second.close()

    def served() -> bool:
        try:
            return requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(served)
    wait_for(lambda: server.counters().get("rejected_connections", 0) >= 1)


# -- logs ------------------------------------------------------------------------------------------------------

def test_every_request_is_one_json_line_without_config_contents(lab, lab_assets, caplog):
    caplog.set_level(logging.INFO, logger="stellwerk.netboot.http")
    config = (lab_assets / "nodes/c1/ignition.json").read_bytes().decode()
    served: list[bytes] = []

    def lines() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "stellwerk.netboot.http"]

    def send_oversized() -> None:
        with Raw(lab) as client:
            client.send(b"GET /" + b"a" * 9000 + b"\r\n")
            client.response()

    # One at a time: the server logs after it has answered, so the next answer could overtake a log line.
    for count, make_request in enumerate([
        lambda: served.append(requests.get(f"{lab.url}/ignition?mac={hexhyp(MACS['c1'])}", timeout=10).content),
        lambda: requests.get(f"{lab.url}/assets/lab/initrd.img", headers={"Range": "bytes=0-9"}, timeout=10),
        lambda: raw_get(lab, "/assets/%2e%2e/pki/ca.key"),
        send_oversized,
    ], start=1):
        make_request()
        wait_for(lambda n=count: len(lines()) >= n)
    ignition, asset, traversal, oversized = lines()[:4]
    assert {key: ignition[key] for key in ("client", "method", "endpoint", "mac", "group", "status", "bytes")} == {
        "client": ignition["client"], "method": "GET", "endpoint": "/ignition", "mac": MACS["c1"], "group": "c1",
        "status": 200, "bytes": len(served[0])}
    assert ignition["client"].startswith("127.0.0.1:") and ignition["time"].endswith("Z")
    assert "error" not in ignition
    assert (asset["endpoint"], asset["status"], asset["bytes"]) == ("/assets/lab/initrd.img", 206, 10)
    assert traversal["status"] == 400 and "refused segment '..'" in traversal["error"]
    assert traversal["request"] == "GET /assets/%2e%2e/pki/ca.key HTTP/1.1"
    assert oversized["status"] == 414 and oversized["request"].startswith("GET /aaaa") and len(oversized["request"]) < 300
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message
        assert config[:200] not in message and "PRIVATE KEY" not in message


# -- cloud-init ------------------------------------------------------------------------------------------------

@pytest.fixture
def debian_assets(run_cli, tmp_path, example_text) -> Path:
    """The lab cluster as Debian nodes (cloud-config.yaml), with a store whose profile reads cloud-config."""
    cluster = write_cluster(tmp_path, BASE_EXAMPLE_TEXT.replace("family: lab", "family: debian"))
    root = tmp_path / "assets"
    result = run_cli("render", cluster, "-o", root)
    assert result.code == 0, result.err
    write_json(root / "netboot/profiles/debian.json", {
        "id": "debian", "kernel": "/assets/debian/linux", "initrd": ["/assets/debian/initrd.gz"],
        "args": ["console=ttyS0"], "config": "cloud-config"})
    for node, mac in MACS.items():
        write_json(root / f"netboot/groups/{node}.json", {"name": node, "profile": "debian", "selector": {"mac": mac},
                                                          "metadata": {"node": node}})
    return root


def cmdline_of(script: str, mac: str) -> str:
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    return " ".join(kernel.split()[2:]).replace("${mac:hexhyp}", hexhyp(mac))


def test_cloud_config_machines(debian_assets, serve):
    server = serve(debian_assets)
    config = (debian_assets / "nodes/c2/cloud-config.yaml").read_bytes()
    response = requests.get(f"{server.url}/cloud-config?mac={MACS['c2']}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/cloud-config; charset=utf-8"
    assert response.content == config
    assert requests.get(f"{server.url}/ignition?mac={MACS['c2']}", timeout=10).status_code == 404
    script = requests.get(f"{server.url}/ipxe?mac={MACS['c2']}", timeout=10).text
    assert cmdline_of(script, MACS["c2"]).endswith(f" ds=nocloud-net;s={server.url}/nocloud/mac=52-54-00-00-00-12/")
    seed = f"{server.url}/nocloud/mac=52-54-00-00-00-12/"
    assert requests.get(seed + "user-data", timeout=10).content == config
    assert requests.get(seed + "meta-data", timeout=10).json() == {"instance-id": "c2", "local-hostname": "c2"}
    for name in ("vendor-data", "network-config"):
        response = requests.get(seed + name, timeout=10)
        assert (response.status_code, response.content) == (200, b"")
    assert requests.get(seed + "other", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/nocloud/mac=52-54-00-00-00-99/user-data", timeout=10).status_code == 404


NOCLOUD_SEED = """
import json, sys
from cloudinit import util
from cloudinit.sources.DataSourceNoCloud import load_cmdline_data
fill = {}
assert load_cmdline_data(fill, sys.argv[1]), "cloud-init did not recognise the ds= argument"
md, ud, vd = util.read_seeded(fill["seedfrom"], timeout=10, retries=0)[:3]
print(json.dumps({"fill": fill, "meta": md, "user": ud.decode(), "vendor": vd.decode()}))
"""


@pytest.mark.engine
def test_cloud_init_reads_its_seed_from_the_server(debian_assets, serve):
    """cloud-init's own NoCloud code parses the kernel argument netboot writes and fetches the seed with it."""
    require_tool("cloud-init")
    server = serve(debian_assets)
    script = requests.get(f"{server.url}/ipxe?mac={hexhyp(MACS['w1'])}", timeout=10).text
    result = subprocess.run(["/usr/bin/python3", "-c", NOCLOUD_SEED, cmdline_of(script, MACS["w1"])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seeded = json.loads(result.stdout)
    assert seeded["fill"]["dsmode"] == "net"
    assert seeded["fill"]["seedfrom"] == f"{server.url}/nocloud/mac=52-54-00-00-00-21/"
    assert seeded["meta"] == {"instance-id": "w1", "local-hostname": "w1"}
    assert seeded["user"] == (debian_assets / "nodes/w1/cloud-config.yaml").read_text()
    assert seeded["vendor"] == ""
