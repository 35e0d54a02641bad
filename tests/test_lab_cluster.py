"""The example lab cluster, end to end, as CI runs it: `lab up`, `lab check`, fault cycles, a node broken on
purpose, `lab down`.

Four VMs (3 controllers, 1 worker; 1 vCPU, 768 MiB, TCG unless KVM truly works) netboot the real lab OS from
`stellwerk netboot serve`, run the real Ignition, and report; the checks probe them from the host. The test ends
with the host as it found it: no lab domain, network, disk or process left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.paths import EXAMPLE
from support.lab_runs import LAB_ROOT, lab_processes, stellwerk, virsh

pytestmark = pytest.mark.vm


def ignition_fetches(node_address: str, since: float) -> list[dict]:
    """The /ignition and /secrets requests from `node_address` in the lab's netboot log after `since`."""
    fetched = []
    for line in (LAB_ROOT / "lab/netboot.log").read_text().splitlines():
        try:
            record = json.loads(line)
            http = json.loads(record["message"]) if record.get("logger") == "stellwerk.netboot.http" else None
        except (ValueError, KeyError):
            continue
        if http and record["time"] >= since and str(http.get("client", "")).startswith(node_address + ":") \
                and http.get("endpoint") in ("/ignition", "/secrets"):
            fetched.append(http)
    return fetched


def remove_from_state_disk(image: Path, path: str) -> None:
    """Delete `path` from the node's state filesystem (its install disk), with the node powered off."""
    # The power cut left the journal unreplayed; e2fsck replays it (exit 1: "errors corrected" is that).
    assert subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True).returncode in (0, 1)
    removed = subprocess.run(["debugfs", "-w", "-R", f"rm {path}", str(image)], capture_output=True, text=True)
    assert removed.returncode == 0 and "not found" not in removed.stderr, removed.stderr
    gone = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True)
    assert "File not found" in gone.stderr, gone.stdout + gone.stderr


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (libvirt, bridges, raw sockets)")
    if LAB_ROOT.exists():
        stellwerk("lab", "down", str(EXAMPLE))
        shutil.rmtree(LAB_ROOT, ignore_errors=True)
    up = stellwerk("lab", "up", str(EXAMPLE), timeout=1500)
    try:
        assert up.returncode == 0, f"lab up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
        yield up
    finally:
        down = stellwerk("lab", "down", str(EXAMPLE))
        assert down.returncode == 0, down.stderr
        shutil.rmtree(LAB_ROOT, ignore_errors=True)


def test_the_lab_comes_up_checks_green_survives_faults_and_leaves_nothing_behind(lab):
    assert "accelerator:" in lab.stdout

    check = stellwerk("lab", "check", str(EXAMPLE))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "all" in check.stdout and "checks passed" in check.stdout
    assert "3/3 members healthy" in check.stdout

    # One controller down: etcd keeps quorum, writes and reads still work, and the check says so.
    assert stellwerk("lab", "fault", str(EXAMPLE), "power-off", "c3").returncode == 0
    degraded = stellwerk("lab", "check", str(EXAMPLE))
    assert degraded.returncode == 0, degraded.stdout + degraded.stderr
    assert "degraded, quorum held" in degraded.stdout and "powered off" in degraded.stdout
    back = stellwerk("lab", "fault", str(EXAMPLE), "power-on", "c3")
    assert back.returncode == 0, back.stdout + back.stderr

    # A power cycle: the worker netboots again, Ignition does not run a second time, the data array keeps its data.
    before = json.loads((LAB_ROOT / "lab/reports/w1.json").read_text())
    reset_at = time.time()
    assert stellwerk("lab", "fault", str(EXAMPLE), "power-cycle", "w1").returncode == 0
    after = json.loads((LAB_ROOT / "lab/reports/w1.first.json").read_text())
    assert after["bootId"] != before["bootId"]
    assert after["ignition"] == before["ignition"]  # the result of the one Ignition run, from the first boot
    assert after["dataMarker"].strip() == before["dataMarker"].strip() != ""
    assert ignition_fetches("10.213.0.21", reset_at) == []

    final = stellwerk("lab", "check", str(EXAMPLE))
    assert final.returncode == 0, final.stdout + final.stderr
    assert "3/3 members healthy" in final.stdout
    assert "boot finished after power-on: " in final.stdout and "slowest check: " in final.stdout

    # A real failure still fails: w1 boots once more, without its WireGuard key. The check waits its deadline for
    # the mesh to settle, then names what never did, from both sides of every session w1 is part of.
    assert stellwerk("lab", "fault", str(EXAMPLE), "power-off", "w1").returncode == 0
    remove_from_state_disk(LAB_ROOT / "lab/disks/w1-nvme0.img", "/overlay/upper/etc/systemd/network/wg0.key")
    assert stellwerk("lab", "fault", str(EXAMPLE), "power-on", "w1").returncode == 0
    broken = stellwerk("lab", "check", str(EXAMPLE), "--timeout", "90")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    failed = next(line for line in broken.stdout.splitlines() if line.startswith("FAILED: "))
    for node in ("c1", "c2", "c3", "w1"):
        assert f"{node} wireguard" in failed and f"{node} mesh ping" in failed, failed
    assert "no wg0 interface" in broken.stdout or "wg0 has no private key" in broken.stdout
    assert "w1 has no session with c1" in broken.stdout  # c1's side: the session w1 no longer has
    assert "3/3 members healthy" in broken.stdout  # what w1 has no part in still passes

    # Down removes what the lab made and nothing else; a second down is harmless.
    down = stellwerk("lab", "down", str(EXAMPLE))
    assert down.returncode == 0 and "removed domain stellwerk-lab-c1" in down.stdout
    second = stellwerk("lab", "down", str(EXAMPLE))
    assert second.returncode == 0 and "no lab for cluster lab" in second.stdout
    assert "stellwerk-lab-" not in virsh("list", "--all", "--name")
    assert "stellwerk-lab" not in virsh("net-list", "--all", "--name")
    assert not Path("/sys/class/net/swlab-lab").exists()
    assert lab_processes() == []
