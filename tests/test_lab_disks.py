"""`lab up` refuses, before any VM starts, a cluster whose nodes name disks the lab's VMs will not have."""

from __future__ import annotations

import pytest

from support.clusters import line_of, write_cluster
from support.paths import EXAMPLE
from stellwerk.lab import disks
from stellwerk.lab.lifecycle import domain_name
from stellwerk.load import load_cluster


def lab_problems(path):
    loaded = load_cluster(path)
    name = loaded.cluster.metadata.name
    return [str(problem) for problem in disks.problems(loaded, lambda node: domain_name(name, node))]


def test_every_name_udev_gives_a_lab_disk():
    install, data1, data2 = disks.lab_disks("stellwerk-lab-w1")
    assert install.names == ("/dev/nvme0n1", "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_stellwerk-lab-w1-0",
                             "/dev/disk/by-path/pci-0000:00:10.0-nvme-1")
    assert data2.names[0] == "/dev/nvme2n1" and data2.names[2] == "/dev/disk/by-path/pci-0000:00:12.0-nvme-1"
    assert (install.size_gib, data1.size_gib) == (disks.INSTALL_DISK_GIB, disks.DATA_DISK_GIB)


def test_the_lab_example_names_only_disks_its_vms_have():
    assert lab_problems(EXAMPLE) == []


def test_an_install_disk_the_vms_lack_is_refused_at_its_line(tmp_path):
    text = EXAMPLE.read_text().replace("address: 10.213.0.12, installDisk: /dev/nvme0n1}", "address: 10.213.0.12}")
    path = write_cluster(tmp_path, text)
    line = next(number for number, content in enumerate(text.splitlines(), 1) if "name: c2," in content)
    assert lab_problems(path) == [
        f"{path}:{line}: spec.controllers[1].installDisk: node c2: installDisk /dev/sda is not a disk of a lab VM, "
        "which has /dev/nvme0n1 (4 GiB, the install disk), /dev/nvme1n1 (2 GiB), /dev/nvme2n1 (2 GiB), also as "
        "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_<serial> and /dev/disk/by-path/pci-0000:00:10.0…-nvme-1; set "
        "installDisk: /dev/nvme0n1"]


@pytest.mark.parametrize("devices, refused", [
    ("[/dev/nvme1n1, /dev/sdb]", "/dev/sdb"),
    ("[/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_stellwerk-lab-w1-1, /dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_stellwerk-lab-c2-2]",
     "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_stellwerk-lab-c2-2"),  # c2's disk by its serial is not one of w1's
    ("[/dev/nvme1n1p3, /dev/disk/by-path/pci-0000:00:12.0-nvme-1]", None),  # a partition may exist on a real disk
])
def test_the_disks_components_claim_are_checked_too(tmp_path, devices, refused):
    text = EXAMPLE.read_text().replace("devices: [/dev/nvme1n1, /dev/nvme2n1]", f"devices: {devices}")
    path = write_cluster(tmp_path, text)
    load_cluster(path)  # valid as a cluster: only the lab lacks these disks
    found = lab_problems(path)
    if refused is None:
        assert found == []
    else:
        assert len(found) == 1 and (f"spec.components.nvme.raid.devices[1]: node w1: nvme.raid.devices {refused} is "
                                    "not a disk of a lab VM") in found[0]


def test_lab_up_refuses_it_before_it_makes_anything(tmp_path, run_cli):
    pytest.importorskip("libvirt")
    text = EXAMPLE.read_text().replace("address: 10.213.0.21, installDisk: /dev/nvme0n1}", "address: 10.213.0.21}")
    path = write_cluster(tmp_path, text)
    root = tmp_path / "labs"
    result = run_cli("lab", "up", path, "--lab-dir", root)
    assert result.code == 2, result.err
    assert "spec.workerPools[0].nodes[0].installDisk: node w1: installDisk /dev/sda is not a disk of a lab VM" in \
        result.err
    assert "Traceback" not in result.err and not root.exists()


def test_lab_up_checks_patches_before_it_touches_anything(tmp_path, run_cli):
    pytest.importorskip("libvirt")
    text = EXAMPLE.read_text().replace(
        "        - {name: lab-etcd-check, protocol: tcp, ports: [2379], from: [10.213.0.1/32], roles: [controller]}\n",
        "        - {name: lab-etcd-check, protocol: tcp, ports: [2379], from: [10.213.0.1/32], roles: [controller]}\n"
        "      patches:\n"
        "        - {target: {kind: HostEndpoint, name: stellwerk-host-telnet}, merge: {metadata: {annotations: {a: b}}}}\n")
    assert "stellwerk-host-telnet" in text
    root = tmp_path / "labs"
    result = run_cli("lab", "up", write_cluster(tmp_path, text), "--lab-dir", root)
    assert result.code == 2 and "spec.components.hostProtection.patches[0]" in result.err, result.err
    assert "Traceback" not in result.err and not root.exists()


def test_lab_up_refuses_a_sysext_url_the_lab_does_not_serve_before_it_makes_anything(tmp_path, run_cli):
    pytest.importorskip("libvirt")
    text = EXAMPLE.read_text().replace("sysextBaseURL: http://10.213.0.1:8080/assets/sysext",
                                       "sysextBaseURL: http://10.213.0.9:8080/assets/sysext")
    root = tmp_path / "labs"
    path = write_cluster(tmp_path, text)
    result = run_cli("lab", "up", path, "--lab-dir", root)
    assert result.code == 2 and "Traceback" not in result.err and not root.exists()
    assert (f"{path}:{line_of(text, 'sysextBaseURL')}: spec.os.sysextBaseURL: the lab's netboot serves the sysext "
            "images at http://10.213.0.1:8080/assets/sysext") in result.err
