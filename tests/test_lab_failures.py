"""A lab node whose provisioning fails says so at once: the real lab OS, its real Ignition and netboot, in a VM.

The cluster's one controller puts its data mirror on a partition that its blank data disk does not have. `lab up`
cannot know that before the boot (on a real machine the partition may well exist), so the node boots; Ignition's
disks stage waits for the partition, gives up, and the initrd reports the failed stage and its log to netboot before
it halts. `lab up` must stop on that report, not wait out its timeout, and `netboot status` must show it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support.clusters import write_cluster
from support.lab_runs import LAB_ROOT, lab_processes, stellwerk, virsh

pytestmark = pytest.mark.vm

CLUSTER = """\
apiVersion: stellwerk.dev/v1alpha1
kind: Cluster
metadata: {name: labfail}
spec:
  kubernetes: {apiEndpoint: 10.214.0.11}
  os: {family: lab, sysextBaseURL: "http://10.214.0.1:8080/assets/sysext"}
  network: {nodeCIDR: 10.214.0.0/24, gateway: 10.214.0.1}
  controllers:
    - {name: c1, mac: "52:54:00:00:04:11", address: 10.214.0.11, installDisk: /dev/nvme0n1}
  components:
    nvme:
      raid: {level: 1, devices: [/dev/nvme1n1p3, /dev/nvme2n1], wipeDevices: true, nodes: [c1]}
"""


@pytest.fixture
def failing_cluster(tmp_path) -> Path:
    import os

    if os.geteuid() != 0:
        pytest.skip("the lab needs root (libvirt, bridges, raw sockets)")
    path = write_cluster(tmp_path, CLUSTER)
    yield path
    stellwerk("lab", "down", str(path))
    shutil.rmtree(LAB_ROOT / "labfail", ignore_errors=True)


def test_a_node_that_fails_its_disks_stage_stops_lab_up_with_the_stage_and_the_reason(failing_cluster):
    up = stellwerk("lab", "up", str(failing_cluster), timeout=1500)
    assert up.returncode == 1, up.stdout[-3000:] + up.stderr[-3000:]
    assert "c1: provisioning failed in stage disks: Ignition's disks stage failed" in up.stderr, up.stderr
    assert "nvme1n1p3" in up.stderr  # Ignition's own words, from the node's journal
    assert "c1: failed: disks: Ignition's disks stage failed" in up.stdout  # the live table's line for it
    # It was the report that ended the wait: its arrival is in netboot's record, and nothing timed out.
    assert "did not report within" not in up.stderr
    machines = json.loads((LAB_ROOT / "labfail/assets/state/machines.json").read_text())["machines"]
    assert machines["c1"]["state"] == "failed" and machines["c1"]["failure"]["stage"] == "disks"
    status = stellwerk("netboot", "status", str(LAB_ROOT / "labfail/assets"), lab_dir=False)
    assert "failed: disks" in status.stdout and "c1 failed in stage disks at " in status.stdout

    down = stellwerk("lab", "down", str(failing_cluster))
    assert down.returncode == 0 and "removed domain stellwerk-labfail-c1" in down.stdout
    assert "stellwerk-labfail-" not in virsh("list", "--all", "--name")
    assert [line for line in lab_processes() if "labfail" in line] == []
