"""`stellwerk netboot serve` as an operator runs it: the real command, real HTTP and TFTP clients, on loopback."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from support.paths import EXAMPLE
from support.tools import require_tool
from support.netboot_configs import assert_public_part_of, pointer


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path, run_cli):
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    (assets / "boot/lab").mkdir(parents=True)
    (assets / "boot/lab/vmlinuz").write_bytes(b"kernel" * 1000)
    (assets / "boot/lab/initrd.img").write_bytes(b"initrd" * 1000)
    http_port, tftp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    https_port = free_port(socket.SOCK_STREAM)
    process = subprocess.Popen(
        [sys.executable, "-m", "stellwerk", "netboot", "serve", str(assets), "--listen", "127.0.0.1",
         "--http-port", str(http_port), "--https-port", str(https_port), "--tftp-port", str(tftp_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "serving 4 machines" in line, line + process.stderr.read() if process.poll() is not None else line
        yield assets, f"http://127.0.0.1:{http_port}", tftp_port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_serve_answers_booting_machines_and_stops_cleanly(served):
    assets, base, tftp_port, process = served
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    chain = requests.get(f"{base}/boot.ipxe", timeout=10).text
    assert chain.startswith("#!ipxe")
    script = requests.get(f"{base}/ipxe", params={"mac": "52-54-00-00-00-21"}, timeout=10).text
    assert "/assets/lab/vmlinuz" in script and "ignition.config.url=" in script
    config = requests.get(f"{base}/ignition", params={"mac": "52:54:00:00:00:21"}, timeout=10)
    assert config.status_code == 200
    assert_public_part_of(config.content, assets / "nodes/w1/ignition.json")
    assert requests.get(f"{base}/ignition", params={"mac": "52:54:00:00:99:99"}, timeout=10).status_code == 404
    # A controller's CA keys never cross plain HTTP: they are behind a one-time HTTPS URL.
    controller = requests.get(f"{base}/ignition", params={"mac": "52:54:00:00:00:11"}, timeout=10)
    assert controller.status_code == 200
    assert_public_part_of(controller.content, assets / "nodes/c1/ignition.json")
    secret = requests.get(pointer(controller.content)["source"], verify=assets / "pki/ca.crt", timeout=10)
    assert secret.status_code == 200 and b"\"path\":\"/etc/kubernetes/pki/ca.key\"" in secret.content
    kernel = requests.get(f"{base}/assets/lab/vmlinuz", headers={"Range": "bytes=0-5"}, timeout=10)
    assert kernel.status_code == 206 and kernel.content == b"kernel"
    curl = require_tool("curl")
    fetched = subprocess.run([curl, "-s", "--max-time", "30", f"tftp://127.0.0.1:{tftp_port}/undionly.kpxe"],
                             capture_output=True, timeout=60)
    assert fetched.returncode == 0
    assert hashlib.sha256(fetched.stdout).digest() == hashlib.sha256(Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()).digest()
    # A re-render adds a machine; SIGHUP makes the running server see it.
    import json

    group = json.loads((assets / "netboot/groups/w1.json").read_text())
    group.update(name="w9", selector={"mac": "52:54:00:00:00:99"})
    (assets / "netboot/groups/w9.json").write_text(json.dumps(group))
    process.send_signal(signal.SIGHUP)
    assert "reloaded: serving 5 machines" in process.stdout.readline()
    assert requests.get(f"{base}/ignition", params={"mac": "52:54:00:00:00:99"}, timeout=10).status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


def test_serve_refuses_what_it_cannot_do(tmp_path, run_cli):
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    result = run_cli("netboot", "serve", assets, "--listen", "127.0.0.1", "--http-port", "0", "--tftp-port", "0",
                     "--dhcp", "full")
    assert result.code == 2 and "needs --interface" in result.err
    result = run_cli("netboot", "serve", assets, "--range", "10.213.0.100")
    assert result.code == 2 and "FIRST-LAST" in result.err
    result = run_cli("netboot", "serve", tmp_path / "missing")
    assert result.code == 2


def test_bad_addresses_interfaces_and_busy_ports_are_user_errors(tmp_path, run_cli):
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    result = run_cli("netboot", "serve", assets, "--listen", "foo")
    assert result.code == 2 and "--listen foo: is not an IPv4 address" in result.err
    result = run_cli("netboot", "serve", assets, "--interface", "nosuch0")
    assert result.code == 2 and "--interface nosuch0: has no usable IPv4 address" in result.err
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("netboot", "serve", assets, "--listen", "127.0.0.1", "--http-port", port, "--tftp-port", "0")
    assert result.code == 2 and f"--http-port {port}: cannot start" in result.err
    assert "Traceback" not in result.err
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("netboot", "serve", assets, "--listen", "127.0.0.1", "--http-port", "0", "--https-port",
                         port, "--tftp-port", "0")
    assert result.code == 2 and f"--https-port {port}: cannot start" in result.err
