"""Two-stage installs, as Flatcar machines go through them: the live installer, its report, the installed boot.

The rack example (Flatcar) is rendered by the real `stellwerk render`; the server runs on 127.0.0.1 with HTTPS;
the real Ignition validates and applies the installer config and follows the pointer it leaves on the disk.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from pathlib import Path

import pytest
import requests

from support import ignition_engine
from support.netboot_servers import private_copy, render, secure_server
from support.paths import REPO
from stellwerk.netboot.installer import POINTER_PATH
from stellwerk.netboot.machines import MachineRegistry
from stellwerk.netboot.store import Store

RACK = REPO / "examples/rack-cluster.yaml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    return render(RACK, tmp_path_factory.mktemp("rack") / "rack")


@pytest.fixture
def assets(rendered, tmp_path) -> Path:
    return private_copy(rendered, tmp_path / "rack")


@pytest.fixture
def server(assets):
    boot = secure_server(assets)
    yield boot
    boot.stop()


@pytest.fixture
def node(assets) -> tuple[str, str, dict]:
    group = json.loads((assets / "netboot/groups/c1.json").read_text())
    return "c1", group["selector"]["mac"], group["metadata"]


def state(assets: Path, name: str) -> str | None:
    return MachineRegistry(assets).statuses([name])[0].state


def test_render_writes_an_installer_group_and_an_installed_group_per_node(assets, node):
    name, mac, metadata = node
    installed = json.loads((assets / f"netboot/groups/{name}-installed.json").read_text())
    assert installed["selector"] == {"mac": mac, "os": "installed"} and installed["profile"] == "installed-disk"
    assert json.loads((assets / "netboot/profiles/installed-disk.json").read_text()) == {
        "id": "installed-disk", "config": "ignition"}
    assert metadata["installDisk"].startswith("/dev/") and set(metadata["flatcar"]) == {"channel", "version"}
    store = Store.load(assets)
    assert store.select({"mac": mac}).profile.config == "installer"
    assert store.select({"mac": mac, "os": "installed"}).profile.kernel is None


@pytest.mark.engine
def test_a_machine_goes_from_installer_to_its_installed_config(server, assets, node, tmp_path):
    ignition_engine.require_engine()
    name, mac, metadata = node
    script = requests.get(f"{server.url}/ipxe", params={"mac": mac}, timeout=10).text
    assert "flatcar_production_pxe.vmlinuz" in script and "flatcar.first_boot=1" in script
    assert state(assets, name) == "discovered"

    # Stage one: the live system's config. Valid for the real Ignition, and nothing secret in it.
    installer = requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)
    assert installer.status_code == 200 and state(assets, name) == "installing"
    ignition_engine.validate(installer.content)
    assert b"PRIVATE KEY" not in installer.content and b"secrets?token" not in installer.content
    root = tmp_path / "live"
    ignition_engine.apply(installer.content, root)
    unit = (root / "etc/systemd/system/stellwerk-install.service").read_text()
    version = metadata["flatcar"]["version"]
    assert (f"ExecStart=/usr/bin/flatcar-install -d {metadata['installDisk']} -b "
            f"{server.url}/assets/flatcar/{metadata['flatcar']['channel']} -V {version} -i {POINTER_PATH}") in unit
    assert f"-X POST {server.url}/report?mac={mac.replace(':', '-')}&event=installed" in unit
    presets = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert "enable stellwerk-install.service" in presets
    authorized = (root / "home/core/.ssh/authorized_keys.d/ignition").read_text()
    assert "ssh-ed25519" in authorized
    pointer = (root / POINTER_PATH.lstrip("/")).read_bytes()
    assert json.loads(pointer)["ignition"]["config"]["replace"]["source"] == (
        f"{server.url}/ignition?mac={mac.replace(':', '-')}&os=installed")

    # The installer reports; from now on the machine's network boot hands over to its disk.
    report = requests.post(f"{server.url}/report", params={"mac": mac, "event": "installed"}, timeout=10)
    assert report.status_code == 200 and state(assets, name) == "installed"
    local = requests.get(f"{server.url}/ipxe", params={"mac": mac}, timeout=10).text
    assert local.splitlines()[-1] == "exit" and "kernel" not in local

    # Stage two: the installed system's Ignition follows the pointer and gets the whole rendered config.
    merged = json.loads(ignition_engine.merged_by_ignition(pointer, online=True))
    rendered = json.loads((assets / f"nodes/{name}/ignition.json").read_bytes())
    assert {f["path"] for f in merged["storage"]["files"]} == {f["path"] for f in rendered["storage"]["files"]}
    assert state(assets, name) == "booted"
    assert MachineRegistry(assets).statuses([name])[0].secrets.startswith("delivered")


def test_an_installed_machine_booting_the_network_again_boots_its_disk_until_reprovisioned(server, assets, node,
                                                                                          run_cli):
    name, mac, _ = node
    requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)
    requests.post(f"{server.url}/report", params={"mac": mac, "event": "installed"}, timeout=10)
    assert requests.get(f"{server.url}/ipxe", params={"mac": mac}, timeout=10).text.splitlines()[-1] == "exit"
    assert run_cli("netboot", "reprovision", assets, name).code == 0
    assert "flatcar_production_pxe.vmlinuz" in requests.get(f"{server.url}/ipxe", params={"mac": mac}, timeout=10).text


def test_reports_are_checked(server, assets, node, run_cli):
    name, mac, _ = node
    assert requests.get(f"{server.url}/report", params={"mac": mac, "event": "installed"}, timeout=10).status_code == 405
    assert requests.post(f"{server.url}/report", params={"mac": mac, "event": "pwned"}, timeout=10).status_code == 400
    assert requests.post(f"{server.url}/report", params={"mac": mac}, timeout=10).status_code == 400
    unknown = requests.post(f"{server.url}/report", params={"mac": "02:00:00:00:00:99", "event": "installed"},
                            timeout=10)
    assert unknown.status_code == 404
    with_body = requests.post(f"{server.url}/report", params={"mac": mac, "event": "installed"}, data=b"x" * 10,
                              timeout=10)
    assert with_body.status_code == 413
    requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)
    failed = requests.post(f"{server.url}/report", params={"mac": mac, "event": "install-failed"}, timeout=10)
    assert failed.status_code == 200 and state(assets, name) == "installing"
    status = run_cli("netboot", "status", assets, "--history")
    assert "install-failed" in status.out and "installing" in status.out


def test_a_failed_provisioning_is_recorded_with_its_stage_reason_and_log_until_the_machine_gets_further(
        server, assets, node, run_cli):
    name, mac, _ = node
    report = {"mac": mac, "event": "provision-failed", "stage": "disks"}
    body = ("Ignition's disks stage failed (exit 1); its log is above\n"
            "disks: createFilesystems: failed to wait on filesystems devs: device unit dev-sda.device timeout\n"
            "\x1b[31mCRITICAL\x1b[0m | forged line\n").encode()
    assert requests.post(f"{server.url}/report", params=report, data=body, timeout=10).status_code == 200
    status = MachineRegistry(assets).statuses([name])[0]
    assert status.state == "failed" and status.failure["stage"] == "disks"
    assert status.failure["reason"] == "Ignition's disks stage failed (exit 1); its log is above"
    assert "device unit dev-sda.device timeout" in status.failure["log"]
    # what a machine sends cannot paint the operator's terminal: its escape sequences lose their ESC
    assert "\x1b" not in status.failure["log"] and "[31mCRITICAL[0m | forged line" in status.failure["log"]
    shown = run_cli("netboot", "status", assets, "--history")
    assert "failed: disks" in shown.out
    assert f"{name} failed in stage disks at " in shown.out and "dev-sda.device timeout" in shown.out
    for bad in ({**report, "stage": "Disks!"}, {"mac": mac, "event": "provision-failed"}):
        assert requests.post(f"{server.url}/report", params=bad, data=b"x", timeout=10).status_code == 400
    too_big = requests.post(f"{server.url}/report", params=report, data=b"x" * (16384 + 1), timeout=10)
    assert too_big.status_code == 413
    requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)  # it boots again and gets further
    assert MachineRegistry(assets).statuses([name])[0].failure is None and state(assets, name) == "installing"


def test_a_failure_report_keeps_tokens_config_dumps_and_format_characters_out_of_the_record(server, assets, node):
    name, mac, _ = node
    body = ("the fetch stage failed\n"
            "GET https://10.0.0.1:8443/secrets?mac=52-54-00-00-00-11&token=Sekr1t-Token_value: attempt #1\n"
            'fetched config: {"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/k.key"}]}}\n'
            "\u202edesab reversed\tand a tab\n").encode()
    report = {"mac": mac, "event": "provision-failed", "stage": "fetch"}
    assert requests.post(f"{server.url}/report", params=report, data=body, timeout=10).status_code == 200
    log = MachineRegistry(assets).statuses([name])[0].failure["log"]
    assert "Sekr1t" not in log and "token=<redacted>: attempt #1" in log
    assert "/etc/k.key" not in log and "fetched config" not in log
    assert "desab reversed and a tab" in log and "\u202e" not in log and "\t" not in log


def test_a_report_names_its_machine_by_mac_alone_and_counts_its_body_in_ascii_digits(server, assets, node):
    name, mac, _ = node
    steered = requests.post(f"{server.url}/report", params={"mac": mac, "event": "installed", "os": "installed"},
                            timeout=10)
    assert steered.status_code == 400 and state(assets, name) != "installed"
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    for length in ("²", "-1", "1e3"):
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(f"POST /report?mac={mac}&event=provision-failed&stage=disks HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Length: {length}\r\n\r\n".encode())
            assert conn.recv(200).startswith(b"HTTP/1.1 400 "), length


def test_a_failure_report_cannot_send_an_installed_machine_to_the_installer_again(server, assets, node, run_cli):
    name, mac, _ = node
    requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)
    requests.post(f"{server.url}/report", params={"mac": mac, "event": "installed"}, timeout=10)
    # Anyone on the provisioning network can send this: it is recorded, but the disk stays the machine's.
    forged = requests.post(f"{server.url}/report", params={"mac": mac, "event": "provision-failed", "stage": "disks"},
                           data=b"a forged failure\n", timeout=10)
    assert forged.status_code == 200 and state(assets, name) == "failed"
    assert requests.get(f"{server.url}/ipxe", params={"mac": mac}, timeout=10).text.splitlines()[-1] == "exit"
    assert run_cli("netboot", "reprovision", assets, name).code == 0
    assert MachineRegistry(assets).statuses([name])[0].failure is None
    assert "flatcar_production_pxe.vmlinuz" in requests.get(f"{server.url}/ipxe", params={"mac": mac}, timeout=10).text


def test_the_installer_needs_its_install_data(server, assets, node):
    name, mac, _ = node
    group_file = assets / f"netboot/groups/{name}.json"
    group = json.loads(group_file.read_text())
    del group["metadata"]["flatcar"]
    group_file.write_text(json.dumps(group))
    server.reload()
    response = requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)
    assert response.status_code == 500 and "metadata.flatcar.channel/version" in response.text


def test_a_disk_with_spaces_in_its_name_cannot_reach_the_installer_command_line(server, assets, node):
    name, mac, _ = node
    group_file = assets / f"netboot/groups/{name}.json"
    group = json.loads(group_file.read_text())
    group["metadata"]["installDisk"] = "/dev/sda; rm -rf /"
    group_file.write_text(json.dumps(group))
    server.reload()
    response = requests.get(f"{server.url}/ignition", params={"mac": mac}, timeout=10)
    assert response.status_code == 500 and "cannot be one word" in urllib.parse.unquote(response.text)
