"""Secrets by one-time token over HTTPS: the real Ignition fetches them through the pinned cluster CA, once.

The lab example is rendered by the real `stellwerk render`; the netboot server runs on 127.0.0.1 with its HTTPS
listener; Debian's `ignition` applies what a machine is served; `openssl verify` checks the server certificate.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support import ignition_engine
from support.netboot_servers import LOOPBACK, private_copy, render, secure_server
from support.paths import EXAMPLE
from support.tools import require_tool
from support.webserver import static_http
from support.netboot_configs import assert_public_part_of, pointer, public_part
from stellwerk.ignition.secretsplit import split
from stellwerk.netboot.http import BootServer
from stellwerk.netboot.machines import MachineRegistry
from stellwerk.netboot.store import Store
from stellwerk.netboot.tls import server_identity

MACS = {"c1": "52:54:00:00:00:11", "w1": "52:54:00:00:00:21"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    return render(EXAMPLE, tmp_path_factory.mktemp("lab") / "lab")


@pytest.fixture
def assets(rendered, tmp_path) -> Path:
    return private_copy(rendered, tmp_path / "lab")


@pytest.fixture
def server(assets):
    boot = secure_server(assets)
    yield boot
    boot.stop()


def served(server: BootServer, node: str) -> requests.Response:
    return requests.get(f"{server.url}/ignition", params={"mac": MACS[node]}, timeout=10)


def https_get(url: str, assets: Path, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET over TLS verified against the cluster CA, from a chosen loopback source address."""
    context = ssl.create_default_context(cafile=str(assets / "pki/ca.crt"))
    target = url.removeprefix("https://")
    hostport, _, path = target.partition("/")
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0)) as raw:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode, owner and content digest."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.name == ".ignition-result.json":  # Ignition's own report of the run, with its times
            continue
        info = path.lstat()
        digest = None
        if stat.S_ISREG(info.st_mode):
            data = path.read_bytes()
            if path.suffix == ".preset":  # Ignition writes preset lines in Go map order, which varies run to run
                data = b"\n".join(sorted(data.splitlines()))
            digest = hashlib.sha256(data).hexdigest()
        found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid,
                                              info.st_gid, digest)
    return found


# -- the split --------------------------------------------------------------------------------------------------

def test_split_moves_owner_only_files_and_password_hashes_and_nothing_else():
    config = {"ignition": {"version": "3.3.0"},
              "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA"],
                                    "passwordHash": "$6$x$y"}, {"name": "ops"}]},
              "storage": {"files": [{"path": "/a", "mode": 0o644}, {"path": "/key", "mode": 0o600},
                                    {"path": "/group-readable", "mode": 0o640}, {"path": "/no-mode"},
                                    {"path": "/owner-exec", "mode": 0o700}]},
              "systemd": {"units": [{"name": "x.service"}]}}
    public, secret = split(config)
    assert [f["path"] for f in public["storage"]["files"]] == ["/a", "/group-readable", "/no-mode"]
    assert [f["path"] for f in secret["storage"]["files"]] == ["/key", "/owner-exec"]
    assert public["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}, {"name": "ops"}]
    assert secret["passwd"] == {"users": [{"name": "core", "passwordHash": "$6$x$y"}]}
    assert secret["ignition"] == {"version": "3.3.0"} and "systemd" not in secret
    assert public["systemd"] == config["systemd"] and config["storage"]["files"][1]["path"] == "/key"  # input intact
    assert split({"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/a", "mode": 420}]}})[1] is None


def test_no_rendered_public_part_holds_a_private_key(rendered):
    for config in sorted(rendered.glob("nodes/*/ignition.json")):
        public = public_part(config)
        assert "PRIVATE KEY" not in json.dumps(public), config
        paths = {entry["path"] for entry in public["storage"]["files"]}
        assert not paths & {"/etc/systemd/network/wg0.key", "/etc/kubernetes/bootstrap-kubelet.conf",
                            "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/etcd/peer.key"}, config


# -- the real Ignition ------------------------------------------------------------------------------------------

@pytest.mark.engine
@pytest.mark.parametrize("node", ["c1", "w1"])
def test_ignition_fetches_the_secret_part_over_pinned_tls_and_ends_with_the_rendered_config(
        server, assets, tmp_path, node):
    ignition_engine.require_engine()
    response = served(server, node)
    assert response.status_code == 200
    assert_public_part_of(response.content, assets / f"nodes/{node}/ignition.json")
    assert pointer(response.content)["source"].startswith(f"https://127.0.0.1:{server.tls_port}/secrets?token=")
    ignition_engine.apply(response.content, tmp_path / "netbooted", online=True, sysext_from=assets)
    ignition_engine.apply((assets / f"nodes/{node}/ignition.json").read_bytes(), tmp_path / "rendered",
                          sysext_from=assets)
    netbooted, rendered = tree(tmp_path / "netbooted"), tree(tmp_path / "rendered")
    assert netbooted == rendered
    key = "etc/kubernetes/pki/ca.key" if node == "c1" else "etc/systemd/network/wg0.key"
    assert netbooted[key][1] == 0o600


@pytest.mark.engine
def test_ignition_refuses_a_secret_part_that_does_not_match_its_hash(server, assets):
    ignition_engine.require_engine()
    response = served(server, "w1")
    # The node is re-rendered between the two fetches: its secret part changes, the hash it was sent does not.
    path = assets / "nodes/w1/ignition.json"
    config = json.loads(path.read_bytes())
    for entry in config["storage"]["files"]:
        if entry["path"] == "/etc/systemd/network/wg0.key":
            entry["contents"]["source"] = "data:,tampered%0A"
    path.write_text(json.dumps(config))
    with pytest.raises(AssertionError, match="hash"):
        ignition_engine.merged_by_ignition(response.content, online=True)


# -- one time, one address --------------------------------------------------------------------------------------

def test_a_replayed_token_is_refused_and_logged_as_a_security_event(server, assets, caplog):
    caplog.set_level(logging.INFO)
    url = pointer(served(server, "c1").content)["source"]
    token = url.split("token=", 1)[1]
    status, body = https_get(url, assets)
    assert status == 200 and json.loads(body)["storage"]["files"]
    status, body = https_get(url, assets)
    assert status == 403 and b"replay refused" in body and b"PRIVATE KEY" not in body
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "stellwerk.netboot.security"]
    assert [e["node"] for e in events] == ["c1"] and "replay refused" in events[0]["security"]
    assert all(token not in record.getMessage() for record in caplog.records)
    assert server.counters()["security_events"] == 1


def test_a_token_presented_from_another_address_is_refused(server, assets, caplog):
    caplog.set_level(logging.WARNING, logger="stellwerk.netboot.security")
    url = pointer(served(server, "w1").content)["source"]
    status, body = https_get(url, assets, source="127.0.0.2")
    assert status == 403 and b"issued to 127.0.0.1, presented by 127.0.0.2" in body
    assert caplog.records and "presented by 127.0.0.2" in caplog.records[0].getMessage()
    status, _ = https_get(url, assets)  # not spent by the refused attempt: the machine itself still gets it
    assert status == 200


def test_the_same_machine_gets_the_same_token_until_it_is_used(server):
    first, second = served(server, "w1").content, served(server, "w1").content
    assert first == second
    assert pointer(first)["source"] != pointer(served(server, "c1").content)["source"]


def test_secrets_are_not_on_plain_http_and_https_serves_nothing_else(server, assets, caplog):
    caplog.set_level(logging.WARNING, logger="stellwerk.netboot.security")
    token = pointer(served(server, "c1").content)["source"].split("token=", 1)[1]
    plain = requests.get(f"{server.url}/secrets", params={"token": token}, timeout=10)
    assert plain.status_code == 403 and "only over HTTPS" in plain.text
    base = f"https://127.0.0.1:{server.tls_port}"
    assert https_get(f"{base}/ignition?mac={MACS['c1']}", assets)[0] == 404
    assert https_get(f"{base}/secrets?token=short", assets)[0] == 400
    assert https_get(f"{base}/secrets?token={token}&token={token}", assets)[0] == 400
    status, body = https_get(f"{base}/secrets?token={'A' * 43}", assets)
    assert status == 403 and b"unknown" in body
    assert any("unknown or superseded token" in r.getMessage() for r in caplog.records)
    assert https_get(f"{base}/secrets?token={token}", assets)[0] == 200  # the probes spent nothing


def test_a_plain_http_client_on_the_https_port_is_dropped_without_harm(server):
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as sock:
        sock.sendall(b"GET /secrets HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:  # the handshake failed: the server closed with our bytes unread
            answer = b""
    assert not answer.startswith(b"HTTP/")
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    while server.counters().get("tls_failures") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.counters().get("tls_failures") == 1


def test_a_server_without_https_refuses_configs_that_hold_secrets(assets):
    with BootServer(Store.load(assets), assets, "127.0.0.1", 0) as plain:
        response = requests.get(f"{plain.url}/ignition", params={"mac": MACS["w1"]}, timeout=10)
    assert response.status_code == 403 and "one-time token" in response.text


# -- once per provisioning --------------------------------------------------------------------------------------

def test_after_delivery_the_config_is_refused_until_the_operator_rearms_it(server, assets, run_cli, caplog):
    caplog.set_level(logging.WARNING, logger="stellwerk.netboot.security")
    requests.get(f"{server.url}/ipxe", params={"mac": MACS["c1"]}, timeout=10)
    status = run_cli("netboot", "status", assets)
    assert status.code == 0
    assert "c1" in status.out and "discovered" in status.out and "not seen" in status.out
    assert https_get(pointer(served(server, "c1").content)["source"], assets)[0] == 200
    again = served(server, "c1")
    assert again.status_code == 403 and "netboot reprovision" in again.text
    assert any("asked for again" in r.getMessage() for r in caplog.records)
    status = run_cli("netboot", "status", assets, "--history")
    assert "booted" in status.out and "delivered" in status.out and "secrets delivered" in status.out
    assert run_cli("netboot", "reprovision", assets, "c1").code == 0
    fresh = served(server, "c1")
    assert fresh.status_code == 200 and https_get(pointer(fresh.content)["source"], assets)[0] == 200
    refused = run_cli("netboot", "reprovision", assets, "c9")
    assert refused.code == 2 and "'c9' is not a node" in refused.err and "Traceback" not in refused.err


def test_machine_states_are_private_and_survive_a_restart(server, assets):
    url = pointer(served(server, "w1").content)["source"]
    server.stop()
    state = assets / "state/machines.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    restarted = BootServer(Store.load(assets), assets, "127.0.0.1", 0, tls=server_identity(assets, [LOOPBACK]),
                           tls_port=0, machines=MachineRegistry(assets)).start()
    try:
        assert pointer(served(restarted, "w1").content)["source"].split("token=")[1] == url.split("token=")[1]
    finally:
        restarted.stop()


def test_a_damaged_state_file_is_a_clear_user_error(assets, run_cli):
    (assets / "state").mkdir()
    (assets / "state/machines.json").write_text("{not json")
    result = run_cli("netboot", "status", assets)
    assert result.code == 2 and "state/machines.json" in result.err and "move it aside" in result.err


# -- the server certificate -------------------------------------------------------------------------------------

def test_the_server_certificate_chains_to_the_cluster_ca_and_keeps_its_key(assets):
    openssl = require_tool("openssl")
    identity = server_identity(assets, [LOOPBACK])
    key = assets / "state/tls/netboot.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    check = subprocess.run([openssl, "verify", "-CAfile", str(assets / "pki/ca.crt"), "-purpose", "sslserver",
                            str(identity.cert_path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    text = subprocess.run([openssl, "x509", "-noout", "-ext", "subjectAltName", "-in", str(identity.cert_path)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "IP Address:127.0.0.1" in text
    first_cert, first_key = identity.cert_path.read_bytes(), key.read_bytes()
    assert server_identity(assets, [LOOPBACK]).cert_path.read_bytes() == first_cert  # reused as it is
    moved = server_identity(assets, [ipaddress.ip_address("10.213.0.1")])  # a new address: a new certificate
    text = subprocess.run([openssl, "x509", "-noout", "-ext", "subjectAltName", "-in", str(moved.cert_path)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "IP Address:10.213.0.1" in text and moved.cert_path.read_bytes() != first_cert
    assert key.read_bytes() == first_key


def test_serving_without_the_cluster_ca_is_a_user_error(assets, run_cli):
    os.unlink(assets / "pki/ca.key")
    result = run_cli("netboot", "serve", assets, "--listen", "127.0.0.1", "--http-port", "0", "--https-port", "0",
                     "--tftp-port", "0")
    assert result.code == 2 and "pki/ca.key" in result.err and "Traceback" not in result.err


# -- operator overlays ------------------------------------------------------------------------------------------

@pytest.mark.engine
def test_an_overlay_url_is_merged_last_by_the_real_ignition(assets, tmp_path):
    ignition_engine.require_engine()
    overlay = {"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/etc/motd.d/stellwerk.conf", "mode": 0o644, "overwrite": True, "contents": {"source": "data:,lab%0A"}},
        {"path": "/etc/lab-overlay", "mode": 0o644, "contents": {"source": "data:,reporting%0A"}}]}}
    (tmp_path / "www").mkdir()
    (tmp_path / "www/overlay.ign").write_text(json.dumps(overlay))
    with static_http(tmp_path / "www") as base, BootServer(
            Store.load(assets), assets, "127.0.0.1", 0, tls=server_identity(assets, [LOOPBACK]), tls_port=0,
            machines=MachineRegistry(assets), extra_merges=(f"{base}/overlay.ign",)) as server:
        config = served(server, "w1").content
        merges = json.loads(config)["ignition"]["config"]["merge"]
        assert [m["source"] for m in merges][-1] == f"{base}/overlay.ign"
        merged = json.loads(ignition_engine.merged_by_ignition(config, online=True))
    files = {entry["path"]: entry for entry in merged["storage"]["files"]}
    assert files["/etc/motd.d/stellwerk.conf"]["contents"]["source"] == "data:,lab%0A"  # the overlay won
    assert "/etc/lab-overlay" in files and "/etc/systemd/network/wg0.key" in files  # and the secret part is there too
    with pytest.raises(ValueError):
        BootServer(Store.load(assets), assets, "127.0.0.1", 0, extra_merges=("file:///etc/passwd",))


def test_serve_refuses_a_bad_merge_url(assets, run_cli):
    result = run_cli("netboot", "serve", assets, "--merge-url", "ftp://x/overlay.ign")
    assert result.code == 2 and "--merge-url" in result.err and "Traceback" not in result.err
