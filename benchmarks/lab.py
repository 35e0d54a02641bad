"""The lab's boot, timed: `lab up` of a cluster until every node reported, each node's boot phases, and the floor.

    .venv/bin/python benchmarks/lab.py [CLUSTER_FILE]     (default: examples/lab-cluster.yaml; needs root)

Prints:
- the time from `lab up` to all nodes reported (and how much of it went to rendering and the lab OS image);
- per node, the boot phases from the netboot log and the first report: firmware and PXE (power-on to the kernel
  request), kernel and initramfs (to the config request), Ignition (to the secret part, i.e. the end of Ignition's
  fetch stage), userspace ready (to the first report);
- the floor: the same kernel and initrd booted directly by QEMU (libvirt's <kernel>/<initrd>, no firmware, no
  PXE) into the same node, time to its first report.
Target: the 4-node lab checks green in under 6 minutes on this machine. The lab is taken down at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stellwerk.lab import daemons  # noqa: E402
from stellwerk.lab.collector import read_report  # noqa: E402
from stellwerk.lab.lifecycle import LabOptions, up, wait_for_reports  # noqa: E402
from stellwerk.lab.phases import boot_phases  # noqa: E402


def stellwerk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stellwerk", *args], capture_output=True, text=True, cwd=REPO)


def phase_table(lab, started: float) -> None:
    phases = boot_phases(lab.plan, lab.directory, since=started)
    print(f"{'node':<6} {'firmware+PXE':>13} {'kernel+initrd':>14} {'ignition':>9} {'userspace':>10} {'total':>7}")
    for node in lab.plan.nodes:
        seen = phases[node.name]
        powered_on = lab.state.powered_on.get(node.name, started)
        marks = [powered_on, seen.get("kernel"), seen.get("ignition"), seen.get("secrets"), seen.get("reported")]
        spans = [f"{b - a:.1f}" if a is not None and b is not None else "-" for a, b in zip(marks, marks[1:])]
        total = f"{marks[-1] - powered_on:.1f}" if marks[-1] else "-"
        print(f"{node.name:<6} {spans[0]:>13} {spans[1]:>14} {spans[2]:>9} {spans[3]:>10} {total:>7}")


def direct_boot_floor(lab, node_name: str) -> float:
    """Boot `node_name` again with the kernel and initrd given to QEMU directly, on fresh disks; seconds to report."""
    node = lab.plan.node(node_name)
    with daemons.connect() as conn:
        machine = conn.lookupByName(lab.state.domains[node_name])
        machine.destroy()
        xml = ET.fromstring(machine.XMLDesc(0))
    for index in range(3):  # fresh disks: the first boot of a node, as in `lab up`
        path = lab.directory / "disks" / f"{node_name}-nvme{index}.img"
        info = path.stat()
        path.unlink()
        with open(path, "xb") as handle:
            handle.truncate(info.st_size)
        os.chown(path, info.st_uid, info.st_gid)
        os.chmod(path, 0o600)
    assert stellwerk("netboot", "reprovision", str(lab.assets), node_name).returncode == 0
    profile_args = "ignition.firstboot ignition.platform.id=metal console=tty0 console=ttyS0,115200n8"
    url = f"http://{lab.state.host_address}:8080/ignition?mac={node.mac.replace(':', '-')}"
    os_element = xml.find("os")
    for boot in os_element.findall("boot"):
        os_element.remove(boot)
    ET.SubElement(os_element, "kernel").text = str(lab.assets / "boot/lab/vmlinuz")
    ET.SubElement(os_element, "initrd").text = str(lab.assets / "boot/lab/initrd.img")
    ET.SubElement(os_element, "cmdline").text = f"{profile_args} ignition.config.url={url}"
    started = time.time()
    with daemons.connect() as conn:
        direct = conn.createXML(ET.tostring(xml, encoding="unicode"), 0)  # transient: gone when it powers off
        try:
            wait_for_reports(lab, {node_name}, started, 900)
        finally:
            direct.destroy()
    return read_report(lab.directory, node_name, first=True)["received"] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cluster", nargs="?", type=Path, default=REPO / "examples/lab-cluster.yaml")
    parser.add_argument("--lab-dir", type=Path, default=Path("/var/lib/stellwerk/lab-bench"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the lab benchmark needs root (libvirt, bridges)")
    started = time.time()
    try:
        lab = up(LabOptions(args.cluster, args.lab_dir), say=lambda line: None)
        reported = time.time()
        print(f"lab up to all {len(lab.plan.nodes)} nodes reported: {reported - started:.1f} s ({lab.state.accel})")
        phase_table(lab, started)
        checked = stellwerk("lab", "check", str(args.cluster), "--lab-dir", str(args.lab_dir))
        print(f"lab check: exit {checked.returncode}, green after {time.time() - started:.1f} s (target 360 s)")
        floor_node = lab.plan.workers[0].name if lab.plan.workers else lab.plan.nodes[-1].name
        print(f"floor, {floor_node} booted directly (no firmware, no PXE), to its report: "
              f"{direct_boot_floor(lab, floor_node):.1f} s")
    finally:
        stellwerk("lab", "down", str(args.cluster), "--lab-dir", str(args.lab_dir))


if __name__ == "__main__":
    main()
