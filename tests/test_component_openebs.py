"""The openebs component end to end: the real CLI renders, the upstream schemas and kubernetes-validate check the
objects, ignition-validate and Ignition itself check and apply the node configs, sh runs the setup scripts against
stand-in LVM and ZFS tools, and systemd checks the units and their names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from support.clusters import component_filesystems, line_of, write_cluster
from support.paths import BASE_EXAMPLE_TEXT
from support.sysext import build_images, on_flatcar
from support.tools import require_tool
from support.ignition_engine import apply, require_engine, validate
from support.k8s_schemas import validate_object

KUBERNETES = "1.31.4"
EXAMPLE_TEXT = BASE_EXAMPLE_TEXT
W2 = '        - {name: w2, mac: "52:54:00:00:00:22", address: 10.213.0.22, installDisk: /dev/sda}\n'
W3 = '        - {name: w3, mac: "52:54:00:00:00:23", address: 10.213.0.23}\n'
_W1 = '        - {name: w1, mac: "52:54:00:00:00:21", address: 10.213.0.21, installDisk: /dev/nvme0n1}\n'


def cluster_text(component: str, *, workers: str = "", family: str = "lab") -> str:
    """The example cluster with `component` (YAML under spec.components.openebs, 6-space indented) and extra workers."""
    assert _W1 in EXAMPLE_TEXT and "  snippets:\n" in EXAMPLE_TEXT
    text = EXAMPLE_TEXT.replace(_W1, _W1 + workers)
    text = on_flatcar(text) if family == "flatcar" else text.replace("    family: lab\n", f"    family: {family}\n")
    return text.replace("  snippets:\n", "  components:\n    openebs:\n" + component + "  snippets:\n")


@pytest.fixture(autouse=True)
def empty_upstream_cache(tmp_path, monkeypatch):
    # Only Stellwerk's own objects under manifests/openebs: no cached upstream install manifest.
    monkeypatch.setenv("STELLWERK_CACHE_DIR", str(tmp_path / "cache"))


def render(run_cli, tmp_path: Path, text: str) -> Path:
    cluster = write_cluster(tmp_path, text)
    checked = run_cli("validate", cluster)
    assert checked.code == 0, checked.err
    assets = tmp_path / "assets"
    if "family: flatcar" in text:
        build_images(cluster, assets)
    result = run_cli("render", cluster, "-o", assets)
    assert result.code == 0, result.err
    return assets


def objects(assets: Path) -> list[dict]:
    files = sorted((assets / "manifests/openebs").glob("*.yaml"))
    assert files, "no manifests/openebs"
    out = []
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert len(docs) == 1, f"{path.name}: one object per file"
        out.append(docs[0])
    return out


def schema_checked(assets: Path) -> list[dict]:
    """Every object, the core ones validated (DiskPool has no upstream schema; see test_mayastor)."""
    found = objects(assets)
    for obj in found:
        if obj["kind"] != "DiskPool":
            validate_object(obj, KUBERNETES)
    return found


def node_json(assets: Path, node: str) -> dict:
    return json.loads((assets / f"nodes/{node}/ignition.json").read_bytes())


@pytest.fixture
def scratch():
    """Roots for Ignition outside pytest's base directory: a pytest session starting meanwhile (another test run on
    this machine) resets that directory to 0700, and Ignition writes user core's ssh keys as core."""
    made = Path(tempfile.mkdtemp(prefix="stellwerk-openebs-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def applied(assets: Path, node: str, root: Path) -> Path:
    data = (assets / f"nodes/{node}/ignition.json").read_bytes()
    validate(data)
    apply(data, root, sysext_from=assets)
    return root


def units_of(config: dict) -> dict[str, dict]:
    return {unit["name"]: unit for unit in config.get("systemd", {}).get("units", [])}


def paths_of(config: dict) -> set[str]:
    storage = config.get("storage", {})
    return {entry["path"] for kind in ("files", "directories", "links") for entry in storage.get(kind, [])}


def preset(root: Path) -> list[str]:
    return (root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()


def systemd_verify(tmp_path: Path, name: str, text: str, root: Path | None = None) -> None:
    """systemd-analyze verify on a unit; ExecStart= is pointed into `root`, where Ignition put the script."""
    analyze = require_tool("systemd-analyze")
    directory = tmp_path / "verify"
    directory.mkdir(exist_ok=True)
    if root is not None:
        text = re.sub(r"^ExecStart=(/\S+)", lambda m: f"ExecStart={root}{m.group(1)}", text, flags=re.M)
    (directory / name).write_text(text)
    result = subprocess.run([analyze, "verify", "--man=no", str(directory / name)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), f"systemd-analyze verify {name}:\n{result.stderr}"


# --------------------------------------------------------------------------- hostpath


def test_hostpath_with_a_disk(run_cli, tmp_path, scratch):
    require_engine()
    assets = render(run_cli, tmp_path, cluster_text(
        "      engine: hostpath\n"
        "      hostpath: {device: /dev/disk/by-id/ata-DISK_01, filesystem: ext4}\n"
        "      storageClass: {name: local-fast, default: true, reclaimPolicy: Retain}\n",
        workers=W2))
    [storage_class] = schema_checked(assets)
    assert storage_class["metadata"]["name"] == "local-fast"
    assert storage_class["provisioner"] == "openebs.io/local"
    annotations = storage_class["metadata"]["annotations"]
    assert annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert annotations["openebs.io/cas-type"] == "local"
    assert yaml.safe_load(annotations["cas.openebs.io/config"]) == [
        {"name": "StorageType", "value": "hostpath"}, {"name": "BasePath", "value": "/var/mnt/openebs"}]
    assert storage_class["reclaimPolicy"] == "Retain"
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    assert "allowVolumeExpansion" not in storage_class
    assert storage_class["allowedTopologies"] == [
        {"matchLabelExpressions": [{"key": "kubernetes.io/hostname", "values": ["w1", "w2"]}]}]

    worker = node_json(assets, "w1")
    assert component_filesystems(worker["storage"]) == [
        {"device": "/dev/disk/by-id/ata-DISK_01", "format": "ext4", "wipeFilesystem": False, "label": "openebs"}]
    mount = units_of(worker)["var-mnt-openebs.mount"]
    assert mount["enabled"] is True
    root = applied(assets, "w1", scratch / "w1")
    assert (root / "var/mnt/openebs").is_dir()
    text = (root / "etc/systemd/system/var-mnt-openebs.mount").read_text()
    assert "\nWhat=/dev/disk/by-label/openebs\n" in text and "\nWhere=/var/mnt/openebs\n" in text
    assert "\nType=ext4\n" in text and "\nWantedBy=local-fs.target\n" in text
    assert "enable var-mnt-openebs.mount" in preset(root)
    # systemd itself checks the unit, including that its name matches Where=.
    systemd_verify(tmp_path, "var-mnt-openebs.mount", text)
    # Controllers carry no storage by default.
    assert component_filesystems(node_json(assets, "c1").get("storage", {})) == []
    assert not any("openebs" in path for path in paths_of(node_json(assets, "c1")))


def test_hostpath_without_a_disk_on_chosen_nodes(run_cli, tmp_path, scratch):
    require_engine()
    assets = render(run_cli, tmp_path, cluster_text(
        "      nodes: [w2, c1]\n"
        "      hostpath: {basePath: /var/lib/open-ebs/volumes}\n", workers=W2))
    [storage_class] = schema_checked(assets)
    assert storage_class["metadata"]["name"] == "openebs-hostpath"
    assert "storageclass.kubernetes.io/is-default-class" not in storage_class["metadata"]["annotations"]
    assert yaml.safe_load(storage_class["metadata"]["annotations"]["cas.openebs.io/config"])[1] == {
        "name": "BasePath", "value": "/var/lib/open-ebs/volumes"}
    assert storage_class["allowedTopologies"][0]["matchLabelExpressions"][0]["values"] == ["w2", "c1"]
    for name in ("w2", "c1"):
        config = node_json(assets, name)
        assert "/var/lib/open-ebs/volumes" in paths_of(config)
        assert not any(unit.endswith(".mount") for unit in units_of(config))
    assert "/var/lib/open-ebs/volumes" not in paths_of(node_json(assets, "w1"))
    root = applied(assets, "c1", scratch / "c1")
    assert (root / "var/lib/open-ebs/volumes").is_dir()


def test_mount_unit_names_match_systemd_escape(tmp_path):
    from stellwerk.components.unitnames import device_unit_name, mount_unit_name

    escape = require_tool("systemd-escape")
    for path in ("/var/mnt/openebs", "/var/lib/open-ebs/x.y", "/var/mnt/.hidden/a_b:c", "/srv/data-1/ä"):
        expected = subprocess.run([escape, "--path", "--suffix=mount", path], capture_output=True, text=True,
                                  check=True).stdout.strip()
        assert mount_unit_name(path) == expected
    for device in ("/dev/sdb", "/dev/disk/by-id/nvme-Samsung_SSD_970-x+y", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"):
        expected = subprocess.run([escape, "--path", "--suffix=device", device], capture_output=True, text=True,
                                  check=True).stdout.strip()
        assert device_unit_name(device) == expected


# --------------------------------------------------------------------------- lvm


def stub_tools(directory: Path, log: Path, behaviour: dict[str, int]) -> None:
    """Stand-ins for vgs, pvs, pvcreate, vgcreate, zpool: log the call, exit with the given code."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool, code in behaviour.items():
        script = directory / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit {code}\n')
        script.chmod(0o755)


def run_setup(script: Path, tmp_path: Path, behaviour: dict[str, int]) -> tuple[int, list[str], str]:
    """Run a rendered setup script with its PATH pointed at stand-in tools."""
    bin_dir, log = tmp_path / "stub-bin", tmp_path / "calls.log"
    shutil.rmtree(bin_dir, ignore_errors=True)
    log.unlink(missing_ok=True)
    stub_tools(bin_dir, log, behaviour)
    text = script.read_text()
    assert "\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n" in text
    copy = tmp_path / "setup.sh"
    copy.write_text(text.replace("\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n", f"\nPATH={bin_dir}:/usr/bin:/bin\n"))
    result = subprocess.run(["sh", str(copy)], capture_output=True, text=True, timeout=30, check=False)
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, calls, result.stdout + result.stderr


def test_lvm_volume_group_from_disks(run_cli, tmp_path, scratch):
    require_engine()
    assets = render(run_cli, tmp_path, cluster_text(
        "      engine: lvm\n"
        "      lvm: {volumeGroup: data-vg, devices: [/dev/sdb, /dev/disk/by-path/pci-0000:00:1f.2-ata-2], "
        "thinProvision: true, filesystem: xfs}\n", workers=W2))
    [storage_class] = schema_checked(assets)
    assert storage_class["provisioner"] == "local.csi.openebs.io"
    assert storage_class["parameters"] == {"storage": "lvm", "volgroup": "data-vg", "fsType": "xfs",
                                           "thinProvision": "yes"}
    assert storage_class["allowVolumeExpansion"] is True
    assert storage_class["allowedTopologies"][0]["matchLabelExpressions"][0]["values"] == ["w1", "w2"]

    root = applied(assets, "w2", scratch / "w2")
    assert (root / "etc/modules-load.d/stellwerk-openebs.conf").read_text() == "dm-snapshot\ndm-thin-pool\n"
    script = root / "opt/stellwerk/bin/openebs-lvm-setup"
    assert script.stat().st_mode & 0o777 == 0o755
    subprocess.run(["sh", "-n", str(script)], check=True)
    unit = (root / "etc/systemd/system/stellwerk-openebs-lvm.service").read_text()
    assert "enable stellwerk-openebs-lvm.service" in preset(root)
    assert "\nRequires=dev-sdb.device\nAfter=dev-sdb.device\n" in unit
    assert "\nRequires=dev-disk-by\\x2dpath-pci\\x2d0000:00:1f.2\\x2data\\x2d2.device\n" in unit
    assert "\nBefore=kubelet.service\n" in unit and "\nType=oneshot\n" in unit
    systemd_verify(tmp_path, "stellwerk-openebs-lvm.service", unit, root)

    # First boot: no volume group; /dev/sdb already a PV (from an interrupted run), the other disk is new.
    code, calls, output = run_setup(script, tmp_path, {"vgs": 5, "pvs": 0, "pvcreate": 0, "vgcreate": 0})
    assert code == 0, output
    assert calls[0] == "vgs data-vg" and "pvcreate /dev/sdb" not in calls
    code, calls, output = run_setup(script, tmp_path, {"vgs": 5, "pvs": 5, "pvcreate": 0, "vgcreate": 0})
    assert code == 0, output
    assert calls == ["vgs data-vg", "pvs /dev/sdb", "pvcreate /dev/sdb", "pvs /dev/disk/by-path/pci-0000:00:1f.2-ata-2",
                     "pvcreate /dev/disk/by-path/pci-0000:00:1f.2-ata-2",
                     "vgcreate data-vg /dev/sdb /dev/disk/by-path/pci-0000:00:1f.2-ata-2"]
    # Later boots: the group exists, nothing is touched.
    code, calls, output = run_setup(script, tmp_path, {"vgs": 0, "pvs": 0, "pvcreate": 0, "vgcreate": 0})
    assert (code, calls) == (0, ["vgs data-vg"]) and "exists" in output
    # A disk that pvcreate refuses (it holds data) stops the script before vgcreate.
    code, calls, output = run_setup(script, tmp_path, {"vgs": 5, "pvs": 5, "pvcreate": 3, "vgcreate": 0})
    assert code != 0 and not any(call.startswith("vgcreate") for call in calls)
    # Without lvm2 it says so instead of failing somewhere in the middle.
    code, calls, output = run_setup(script, tmp_path, {"vgs": 5, "pvs": 5})
    assert code == 1 and calls == [] and "lvm2 is not installed" in output


def test_lvm_existing_group_needs_no_setup_unit(run_cli, tmp_path):
    assets = render(run_cli, tmp_path, cluster_text("      engine: lvm\n"))
    [storage_class] = schema_checked(assets)
    assert storage_class["metadata"]["name"] == "openebs-lvm"
    assert storage_class["parameters"] == {"storage": "lvm", "volgroup": "openebs-vg", "fsType": "ext4"}
    worker = node_json(assets, "w1")
    assert "stellwerk-openebs-lvm.service" not in units_of(worker)
    assert "/etc/modules-load.d/stellwerk-openebs.conf" in paths_of(worker)


# --------------------------------------------------------------------------- zfs


def test_zfs_pool_from_disks(run_cli, tmp_path, scratch):
    require_engine()
    assets = render(run_cli, tmp_path, cluster_text(
        "      engine: zfs\n"
        "      zfs: {pool: tank, devices: [/dev/sdb, /dev/sdc, /dev/sdd], layout: raidz, compression: lz4,"
        " thinProvision: true}\n"))
    [storage_class] = schema_checked(assets)
    assert storage_class["provisioner"] == "zfs.csi.openebs.io"
    assert storage_class["parameters"] == {"poolname": "tank", "fstype": "zfs", "compression": "lz4",
                                           "thinprovision": "yes"}
    root = applied(assets, "w1", scratch / "w1")
    assert (root / "etc/modules-load.d/stellwerk-openebs.conf").read_text() == "zfs\n"
    # The Flatcar sysext list is for Flatcar only.
    assert not (root / "etc/flatcar").exists()
    script = root / "opt/stellwerk/bin/openebs-zfs-setup"
    unit = (root / "etc/systemd/system/stellwerk-openebs-zfs.service").read_text()
    assert "\nAfter=zfs-import.target\n" in unit and "\nRequires=dev-sdd.device\n" in unit
    systemd_verify(tmp_path, "stellwerk-openebs-zfs.service", unit, root)
    subprocess.run(["sh", "-n", str(script)], check=True)

    code, calls, output = run_setup(script, tmp_path, {"zpool": 1})
    assert code != 0  # create failed too (the stand-in fails every call): the unit fails and says why
    code, calls, output = run_setup(script, tmp_path, {"zpool": 0})
    assert (code, calls) == (0, ["zpool list -H -o name tank"])
    # Not imported and not importable: created with the layout.
    bin_dir, log = tmp_path / "zbin", tmp_path / "zcalls.log"
    bin_dir.mkdir()
    (bin_dir / "zpool").write_text(
        f'#!/bin/sh\necho "zpool $*" >> "{log}"\ncase "$1" in create) exit 0;; *) exit 1;; esac\n')
    (bin_dir / "zpool").chmod(0o755)
    copy = tmp_path / "zfs-setup.sh"
    copy.write_text(script.read_text().replace("PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"PATH={bin_dir}:/usr/bin:/bin"))
    result = subprocess.run(["sh", str(copy)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["zpool list -H -o name tank", "zpool import -N tank",
                                            "zpool create -m none tank raidz /dev/sdb /dev/sdc /dev/sdd"]


def test_zfs_on_flatcar_enables_the_zfs_sysext(run_cli, tmp_path):
    from stellwerk.ignition.model import file_contents, loads

    assets = render(run_cli, tmp_path, cluster_text("      engine: zfs\n      zfs: {devices: [/dev/sdb]}\n",
                                                    family="flatcar"))
    schema_checked(assets)
    data = (assets / "nodes/w1/ignition.json").read_bytes()
    validate(data)
    config = loads(data)
    [sysext] = [f for f in config.files if f.path == "/etc/flatcar/enabled-sysext.conf"]
    # Appended, so other extensions listed in the same file are kept.
    assert sysext.append == (b"zfs\n",) and file_contents(sysext) == b"zfs\n"
    assert "stellwerk-openebs-zfs.service" in {u.name for u in config.units}
    assert not any(f.path == "/etc/flatcar/enabled-sysext.conf" for f in loads(
        (assets / "nodes/c1/ignition.json").read_bytes()).files)


# --------------------------------------------------------------------------- mayastor


MAYASTOR = (
    "      engine: mayastor\n"
    "      nodes: [w1, w2, w3]\n"
    "      mayastor:\n"
    "        hugepages2Mi: 4Gi\n"
    "        nodeMemoryGiB: 16\n"
    "        replicas: 2\n"
    "        pools:\n"
    "          - {node: w1, device: /dev/disk/by-id/nvme-Vendor_Model_SN01}\n"
    "          - {node: w2, device: /dev/sdb}\n"
    "          - {node: w2, device: /dev/sdc, name: w2-second}\n"
)


def test_mayastor(run_cli, tmp_path, scratch):
    require_engine()
    assets = render(run_cli, tmp_path, cluster_text(MAYASTOR, workers=W2 + W3))
    found = schema_checked(assets)
    assert [obj["kind"] for obj in found] == ["StorageClass", "DiskPool", "DiskPool", "DiskPool"]
    storage_class = found[0]
    assert storage_class["provisioner"] == "io.openebs.csi-mayastor"
    assert storage_class["parameters"] == {"protocol": "nvmf", "repl": "2"}
    assert "allowedTopologies" not in storage_class  # replicated volumes are reachable from every node
    # DiskPool: no upstream schema exists as YAML (the operator builds its CRD at run time), so check its shape
    # against mayastor-control-plane's v1beta2 DiskPoolSpec (node: string, disks: [string], topology optional).
    name_rule = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
    pools = found[1:]
    for pool in pools:
        assert pool["apiVersion"] == "openebs.io/v1beta2" and pool["kind"] == "DiskPool"
        assert set(pool) == {"apiVersion", "kind", "metadata", "spec"}
        assert pool["metadata"]["namespace"] == "openebs"
        assert name_rule.fullmatch(pool["metadata"]["name"]) and len(pool["metadata"]["name"]) <= 253
        assert set(pool["spec"]) == {"node", "disks"}
        assert isinstance(pool["spec"]["node"], str)
        assert isinstance(pool["spec"]["disks"], list) and len(pool["spec"]["disks"]) == 1
        assert all(isinstance(disk, str) and disk.startswith("/dev/") for disk in pool["spec"]["disks"])
    assert [(p["metadata"]["name"], p["spec"]["node"], p["spec"]["disks"]) for p in pools] == [
        ("w1-disk-by-id-nvme-vendor-model-sn01", "w1", ["/dev/disk/by-id/nvme-Vendor_Model_SN01"]),
        ("w2-sdb", "w2", ["/dev/sdb"]),
        ("w2-second", "w2", ["/dev/sdc"]),
    ]

    root = applied(assets, "w3", scratch / "w3")
    assert (root / "etc/modules-load.d/stellwerk-openebs.conf").read_text() == "nvme-tcp\n"
    assert (root / "etc/sysctl.d/70-stellwerk-openebs.conf").read_text() == "vm.nr_hugepages = 2048\n"
    kubelet = (root / "etc/systemd/system/kubelet.service.d/20-stellwerk.conf").read_text()
    labels = re.search(r"--node-labels=(\S+)", kubelet).group(1).split(",")
    assert "openebs.io/engine=mayastor" in labels
    assert "kernelArguments" not in node_json(assets, "w3")
    # Controllers are not storage nodes here and run no volumes: nothing. Workers would only mount volumes.
    assert "/etc/modules-load.d/stellwerk-openebs.conf" not in paths_of(node_json(assets, "c1"))


def test_mayastor_consumers_and_kernel_argument(run_cli, tmp_path):
    require_engine()
    assets = render(run_cli, tmp_path, cluster_text(
        "      engine: mayastor\n"
        "      nodes: [w2]\n"
        "      mayastor: {hugepages2Mi: 1536, kernelArgument: true, replicas: 1, pools: [{node: w2, device: /dev/sdb}]}\n",
        workers=W2, family="flatcar"))
    schema_checked(assets)
    storage = node_json(assets, "w2")
    assert storage["kernelArguments"] == {"shouldExist": ["hugepages=1536"]}
    validate((assets / "nodes/w2/ignition.json").read_bytes())
    # w1 carries no storage but may run pods with Mayastor volumes: it needs the NVMe/TCP initiator, nothing more.
    consumer = node_json(assets, "w1")
    validate((assets / "nodes/w1/ignition.json").read_bytes())
    assert "/etc/modules-load.d/stellwerk-openebs.conf" in paths_of(consumer)
    assert "/etc/sysctl.d/70-stellwerk-openebs.conf" not in paths_of(consumer)
    assert "kernelArguments" not in consumer
    assert "openebs.io/engine=mayastor" not in json.dumps(consumer)


# --------------------------------------------------------------------------- bad input



BAD = {
    "engine block of another engine": (
        "      engine: hostpath\n      lvm: {volumeGroup: vg0}\n", "",
        "lvm: {", "spec.components.openebs.lvm: options for engine lvm are set but engine is hostpath; "
        "remove the lvm block, or set engine: lvm"),
    "unknown storage node": (
        "      nodes: [w1, w9]\n", "", "nodes: [", "spec.components.openebs.nodes[1]: no node is named 'w9'"),
    "no storage nodes": (
        "      nodes: []\n", "", "nodes: []", "spec.components.openebs.nodes: is empty; list the nodes that carry storage"),
    "mayastor without pools": (
        "      engine: mayastor\n      mayastor: {replicas: 1}\n", "", "mayastor: {replicas: 1}",
        "spec.components.openebs.mayastor.pools: there are no DiskPools, so Mayastor has nowhere to put volumes"),
    "storage node twice": (
        "      nodes: [w1, w1]\n", "", "nodes: [", "spec.components.openebs.nodes[1]: w1 is listed twice"),
    "hostpath disk is the install disk": (
        "      hostpath: {device: /dev/nvme0n1}\n", "", "device: /dev/nvme0n1}",
        "spec.components.openebs.hostpath.device: /dev/nvme0n1 is the installDisk of w1, where the OS lives"),
    "hostpath Immediate binding": (
        "      storageClass:\n        volumeBindingMode: Immediate\n", "", "volumeBindingMode: Immediate",
        "spec.components.openebs.storageClass.volumeBindingMode: hostpath volumes live on one node"),
    "hostpath disk on debian": (
        "      hostpath:\n        device: /dev/sdb\n", "debian", "device: /dev/sdb",
        "spec.components.openebs.hostpath.device: os.family debian nodes get cloud-init, which cannot format"),
    "lvm disk is a partition of the install disk": (
        "      engine: lvm\n      lvm:\n        devices:\n          - /dev/sdb\n          - /dev/nvme0n1p4\n", "",
        "- /dev/nvme0n1p4",
        "spec.components.openebs.lvm.devices[1]: /dev/nvme0n1p4 is a partition of w1's installDisk /dev/nvme0n1"),
    "lvm disk listed twice": (
        "      engine: lvm\n      lvm:\n        devices:\n          - /dev/sdb\n          - /dev/sdb  # again\n", "",
        "# again", "spec.components.openebs.lvm.devices[1]: /dev/sdb is already listed as devices[0]"),
    "zfs mirror of one disk": (
        "      engine: zfs\n      zfs:\n        layout: mirror\n        devices: [/dev/sdb]\n", "",
        "devices: [/dev/sdb]", "spec.components.openebs.zfs.devices: layout mirror needs at least 2 disks but 1 is listed"),
    "zfs raidz of two disks": (
        "      engine: zfs\n      zfs:\n        layout: raidz\n        devices: [/dev/sdb, /dev/sdc]\n", "",
        "devices: [/dev/sdb, /dev/sdc]", "spec.components.openebs.zfs.devices: layout raidz needs at least 3 disks but 2 are listed; add disks or use layout stripe; "
        "with two disks use mirror"),
    "mayastor hugepages over half the memory": (
        "      engine: mayastor\n      mayastor:\n        hugepages2Mi: 3Gi\n        replicas: 1\n"
        "        nodeMemoryGiB: 32\n        perNodeMemoryGiB:\n          w1: 4\n"
        "        pools: [{node: w1, device: /dev/sdb}]\n", "",
        "w1: 4", "spec.components.openebs.mayastor.perNodeMemoryGiB.w1: 1536 huge pages of 2 MiB take 3 GiB, more "
        "than half of the 4 GiB of RAM of w1; lower mayastor.hugepages2Mi (Mayastor's minimum is 1024, 2Gi) or give "
        "the node at least 6 GiB"),
    "mayastor memory for an unknown node": (
        "      engine: mayastor\n      mayastor:\n        replicas: 1\n        perNodeMemoryGiB: {c1: 64}\n"
        "        pools: [{node: w1, device: /dev/sdb}]\n", "",
        "perNodeMemoryGiB: {c1: 64}", "spec.components.openebs.mayastor.perNodeMemoryGiB.c1: c1 is not a storage node; give memory only for storage "
        "nodes (w1)"),
    "mayastor pool on the install disk": (
        "      engine: mayastor\n      mayastor:\n        replicas: 1\n        pools:\n"
        "          - {node: w1, device: /dev/nvme0n1}\n", "",
        "{node: w1, device: /dev/nvme0n1}",
        "spec.components.openebs.mayastor.pools[0].device: /dev/nvme0n1 is the installDisk of w1"),
    "mayastor pool on a node without io-engine": (
        "      engine: mayastor\n      mayastor:\n        replicas: 1\n        pools:\n"
        "          - {node: w1, device: /dev/sdb}\n          - {node: c2, device: /dev/sdb}\n", "",
        "{node: c2, device: /dev/sdb}",
        "spec.components.openebs.mayastor.pools[1].node: c2 is not a storage node, so no io-engine runs there"),
    "mayastor pool on an unknown node": (
        "      engine: mayastor\n      mayastor:\n        pools:\n          - {node: w7, device: /dev/sdb}\n", "",
        "{node: w7, device: /dev/sdb}", "spec.components.openebs.mayastor.pools[0].node: no node is named 'w7'"),
    "mayastor same disk twice": (
        "      engine: mayastor\n      mayastor:\n        replicas: 1\n        pools:\n"
        "          - {node: w1, device: /dev/sdb}\n          - {node: w1, device: /dev/sdb, name: other}\n", "",
        "name: other}", "spec.components.openebs.mayastor.pools[1].device: /dev/sdb on w1 is already pools[0]"),
    "mayastor DiskPool name clash": (
        "      engine: mayastor\n      mayastor:\n        replicas: 1\n        pools:\n"
        "          - {node: w1, device: /dev/sdb}\n          - {node: w1, device: /dev/sdc, name: w1-sdb}\n", "",
        "name: w1-sdb}", "spec.components.openebs.mayastor.pools[1].name: DiskPool name w1-sdb is already used by pools[0]"),
    "mayastor more replicas than pool nodes": (
        "      engine: mayastor\n      mayastor:\n        replicas: 2\n        pools: [{node: w1, device: /dev/sdb}]\n", "",
        "replicas: 2", "spec.components.openebs.mayastor.replicas: 2 replicas need DiskPools on at least 2 nodes, but "
        "the pools are on 1 node (w1); add pools on more nodes or set replicas to 1"),
    "mayastor kernel argument off Flatcar": (
        "      engine: mayastor\n      mayastor:\n        kernelArgument: true\n        replicas: 1\n"
        "        pools: [{node: w1, device: /dev/sdb}]\n", "",
        "kernelArgument: true", "spec.components.openebs.mayastor.kernelArgument: kernel arguments are applied by "
        "Flatcar's Ignition only, and os.family is lab"),
    # Options constraints (the model itself)
    "unknown option": (
        "      storageClas: {name: x}\n", "", "storageClas:",
        "spec.components.openebs.storageClas: unknown key 'storageClas'; did you mean 'storageClass'?"),
    "unknown engine option": (
        "      hostpath: {basepath: /var/mnt/x}\n", "", "basepath:",
        "spec.components.openebs.hostpath.basepath: unknown key 'basepath'; did you mean 'basePath'?"),
    "unknown engine": (
        "      engine: ceph\n", "", "engine: ceph",
        "spec.components.openebs.engine: 'ceph' is not allowed; input should be 'hostpath', 'lvm', 'zfs' or 'mayastor'"),
    "too few huge pages": (
        "      engine: mayastor\n      mayastor:\n        hugepages2Mi: 512\n", "", "hugepages2Mi: 512",
        "spec.components.openebs.mayastor.hugepages2Mi: 512 pages of 2 MiB (1024 MiB) is below Mayastor's minimum of "
        "1024 pages (2Gi)"),
    "huge pages as a size below the minimum": (
        "      engine: mayastor\n      mayastor:\n        hugepages2Mi: 1Gi\n", "", "hugepages2Mi: 1Gi",
        "spec.components.openebs.mayastor.hugepages2Mi: 512 pages of 2 MiB (1024 MiB) is below"),
    "huge pages not a size": (
        "      engine: mayastor\n      mayastor:\n        hugepages2Mi: 2GB\n", "", "hugepages2Mi: 2GB",
        "spec.components.openebs.mayastor.hugepages2Mi: '2GB' is neither a number of 2 MiB pages"),
    "device not under /dev": (
        "      hostpath: {device: sdb}\n", "", "device: sdb",
        "spec.components.openebs.hostpath.device: 'sdb' is not a block device path"),
    "base path under /usr": (
        "      hostpath: {basePath: /usr/local/openebs}\n", "", "basePath:",
        "spec.components.openebs.hostpath.basePath: '/usr/local/openebs' is under /usr"),
    "base path not plain": (
        "      hostpath: {basePath: var/mnt/x}\n", "", "basePath:",
        "spec.components.openebs.hostpath.basePath: 'var/mnt/x' is not a plain absolute directory path"),
    "bad volume group name": (
        "      engine: lvm\n      lvm: {volumeGroup: -vg}\n", "", "volumeGroup:",
        "spec.components.openebs.lvm.volumeGroup: '-vg' is not an LVM volume group name"),
    "reserved zfs pool name": (
        "      engine: zfs\n      zfs: {pool: mirror0}\n", "", "pool: mirror0",
        "spec.components.openebs.zfs.pool: 'mirror0' is reserved by ZFS"),
    "bad storage class name": (
        "      storageClass: {name: Fast_SSD}\n", "", "name: Fast_SSD",
        "spec.components.openebs.storageClass.name: 'Fast_SSD' is not a Kubernetes object name"),
    "zfs filesystem not offered": (
        "      engine: zfs\n      zfs: {filesystem: ntfs}\n", "", "filesystem: ntfs",
        "spec.components.openebs.zfs.filesystem: 'ntfs' is not allowed"),
    "no replicas": (
        "      engine: mayastor\n      mayastor: {replicas: 0}\n", "", "replicas: 0",
        "spec.components.openebs.mayastor.replicas: Input should be greater than or equal to 1"),
}


@pytest.mark.parametrize("component, family, needle, message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_located_error(run_cli, tmp_path, component, family, needle, message):
    text = cluster_text(component, family=family or "lab")
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2, result.out
    expected = f"{cluster}:{line_of(text, needle)}: {message}"
    lines = result.err.splitlines()
    assert any(line.startswith(expected) for line in lines), f"wanted {expected!r} in:\n{result.err}"
    assert "Traceback" not in result.err


def test_no_workers_and_no_nodes_is_an_error(run_cli, tmp_path):
    text = cluster_text("      engine: hostpath\n").replace(_W1, "")
    text = text.replace("      nodes:\n", "      nodes: []\n", 1)  # the pool keeps no nodes
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2
    line = line_of(text, "    openebs:")
    assert f"{cluster}:{line}: spec.components.openebs.nodes: the cluster has no workers to carry storage" in result.err
    # Naming the controllers fixes it.
    fixed = text.replace("      engine: hostpath\n", "      engine: hostpath\n      nodes: [c1, c2]\n")
    assert run_cli("validate", write_cluster(tmp_path, fixed)).code == 0


# --------------------------------------------------------------------------- patches, upstream, lock file


def test_patches_change_the_rendered_objects(run_cli, tmp_path):
    text = cluster_text(
        "      engine: lvm\n"
        "      patches:\n"
        "        - target: {kind: StorageClass, name: openebs-lvm}\n"
        "          jsonPatch:\n"
        "            - {op: add, path: /parameters/vgpattern, value: 'openebs-vg.*'}\n"
        "        - target: {kind: StorageClass, name: openebs-lvm}\n"
        "          merge: {mountOptions: [noatime], allowVolumeExpansion: false}\n")
    [storage_class] = schema_checked(render(run_cli, tmp_path, text))
    assert storage_class["parameters"]["vgpattern"] == "openebs-vg.*"
    assert storage_class["mountOptions"] == ["noatime"] and storage_class["allowVolumeExpansion"] is False

    missing = text.replace("name: openebs-lvm}\n          merge", "name: openebs-zfs}\n          merge")
    cluster = write_cluster(tmp_path, missing, "missing.yaml")
    result = run_cli("render", cluster, "-o", tmp_path / "assets-missing")
    assert result.code == 2
    assert "patches[1]" in result.err and "StorageClass 'openebs-zfs'" in result.err
    assert "Traceback" not in result.err


def test_upstream_manifests_per_engine(run_cli, tmp_path):
    from stellwerk.components import BY_KEY
    from stellwerk.release import UPSTREAM

    component = BY_KEY["openebs"]
    expected = {"hostpath": (), "lvm": ("openebs-lvm",), "zfs": ("openebs-zfs",), "mayastor": ()}
    for engine, names in expected.items():
        assert component.upstream(component.options.model_validate({"engine": engine})) == names
        assert all(name in UPSTREAM for name in names)
    # render says which pinned manifest is missing from the cache, naming this component's choice.
    cluster = write_cluster(tmp_path, cluster_text("      engine: zfs\n"))
    result = run_cli("render", cluster, "-o", tmp_path / "assets")
    assert result.code == 0, result.err
    assert "openebs-zfs" in result.out + result.err


def test_lock_file_records_resolved_options(run_cli, tmp_path):
    assets = render(run_cli, tmp_path, cluster_text(
        "      engine: mayastor\n      mayastor: {hugepages2Mi: 3Gi, replicas: 1, pools: [{node: w1, device: /dev/sdb}]}\n"))
    lock = yaml.safe_load((assets / "cluster.lock.yaml").read_text())
    openebs = lock["spec"]["components"]["openebs"]
    assert openebs["engine"] == "mayastor" and openebs["mayastor"]["hugepages2Mi"] == 1536
    assert openebs["storageClass"] == {"name": None, "default": False, "reclaimPolicy": "Delete",
                                       "volumeBindingMode": "WaitForFirstConsumer"}
    # The lock file is itself a valid cluster file.
    relocked = write_cluster(tmp_path, (assets / "cluster.lock.yaml").read_text().split("\nresolved:")[0] + "\n",
                             "relock.yaml")
    assert run_cli("validate", relocked).code == 0, run_cli("validate", relocked).err


def test_schema_documents_the_options(run_cli):
    result = run_cli("schema")
    assert result.code == 0
    schema = json.loads(result.out)
    text = json.dumps(schema)
    for key in ("hugepages2Mi", "nodeMemoryGiB", "perNodeMemoryGiB", "volumeGroup", "thinProvision", "basePath",
                "wipeFilesystem", "volumeBindingMode", "kernelArgument"):
        assert f'"{key}"' in text, key
    assert os.environ.get("STELLWERK_CACHE_DIR")  # the autouse fixture is active


def test_the_documented_example_is_valid(run_cli, tmp_path):
    doc = (Path(__file__).resolve().parent.parent / "docs/components/openebs.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    [example] = [block for block in blocks if "kind: Cluster" in block]
    result = run_cli("validate", write_cluster(tmp_path, example))
    assert result.code == 0, result.err
    # The LVM variant that follows it replaces the components block.
    [lvm] = [block for block in blocks if "engine: lvm" in block and "kind: Cluster" not in block]
    variant = example[:example.index("  components:\n")] + lvm
    result = run_cli("validate", write_cluster(tmp_path, variant, "lvm.yaml"))
    assert result.code == 0, result.err


def test_docs_list_every_option_with_its_default():
    from stellwerk.components import openebs

    doc = (Path(__file__).resolve().parent.parent / "docs/components/openebs.md").read_text()
    rows: dict[str, list[str]] = {}  # option -> default column of every table row naming it
    for match in re.finditer(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", doc, flags=re.M):
        rows.setdefault(match.group(1), []).append(match.group(2))
    for model in (openebs.Options, openebs.StorageClassOptions, openebs.HostpathOptions, openebs.LVMOptions,
                  openebs.ZFSOptions, openebs.MayastorOptions):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert key in rows, f"{model.__name__}.{key} is not documented"
            default = field.get_default(call_default_factory=True)
            if isinstance(default, bool):
                shown = f"`{str(default).lower()}`"
            elif isinstance(default, (str, int)) and default:
                shown = f"`{default}`"
            else:
                continue
            assert any(shown in column for column in rows[key]), f"{key}: default {shown} not in {rows[key]!r}"


def test_lvm_on_debian_nodes_through_cloud_init(run_cli, tmp_path):
    cloud_init = require_tool("cloud-init")
    assets = render(run_cli, tmp_path, cluster_text("      engine: lvm\n      lvm: {devices: [/dev/sdb]}\n",
                                                    family="debian"))
    path = assets / "nodes/w1/cloud-config.yaml"
    check = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True,
                           timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    document = yaml.safe_load(path.read_text())
    files = {entry["path"]: entry for entry in document["write_files"]}
    assert files["/opt/stellwerk/bin/openebs-lvm-setup"]["permissions"] == "0755"
    assert "vgcreate" in files["/opt/stellwerk/bin/openebs-lvm-setup"]["content"]
    assert "/etc/systemd/system/stellwerk-openebs-lvm.service" in files
    assert "dm-snapshot" in files["/etc/modules-load.d/stellwerk-openebs.conf"]["content"]
