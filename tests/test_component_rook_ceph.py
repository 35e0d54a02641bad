"""The rookCeph component end to end: the real CLI, the upstream Rook CRD schemas, Kubernetes' own
schemas for the StorageClasses, and the real Ignition for the node fragments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from support.clusters import component_filesystems, line_of, write_cluster
from support.paths import BASE_EXAMPLE_TEXT, REPO
from support.ignition_engine import apply, require_engine, validate
from support.k8s_schemas import validate_object

WORKERS = "".join(
    f'        - {{name: w{i}, mac: "52:54:00:00:00:2{i}", address: 10.213.0.2{i}, installDisk: /dev/nvme0n1}}\n'
    for i in (1, 2, 3)
)


def cluster_text(components: str, *, os_family: str = "lab") -> str:
    """The lab example with three workers and `components` (YAML indented for spec.components)."""
    text = BASE_EXAMPLE_TEXT
    single = '        - {name: w1, mac: "52:54:00:00:00:21", address: 10.213.0.21, installDisk: /dev/nvme0n1}\n'
    assert single in text
    text = text.replace(single, WORKERS)
    text = text.replace("    family: lab\n", f"    family: {os_family}\n")
    return text.replace("  snippets:\n", "  components:\n" + components + "  snippets:\n")



def objects(assets: Path) -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted((assets / "manifests/rookCeph").glob("*.yaml"))}


def by_kind(docs: dict[str, dict], kind: str, name: str | None = None) -> dict:
    found = [doc for doc in docs.values() if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, list(docs))
    return found[0]


def ignition(assets: Path, node: str) -> dict:
    return json.loads((assets / f"nodes/{node}/ignition.json").read_text())


def file_paths(config: dict) -> set[str]:
    return {f["path"] for f in config.get("storage", {}).get("files", [])}


FILTER_MODE = """\
    rookCeph:
      deviceFilter: "^nvme[1-9]n1$"
      storageClasses:
        block: {default: true}
        filesystem: true
        object: {name: buckets}
"""

EXPLICIT_MODE = """\
    rookCeph:
      monCount: 3
      replicas: 2
      encryptDevices: true
      osdsPerDevice: 2
      deviceClasses: {ssd: "^nvme", hdd: "^sd"}
      nodes:
        - name: w1
          devices: [/dev/disk/by-id/nvme-Fast_Disk_S1, sdb]
        - name: c1
          devices: [/dev/sdc]
      storageClasses:
        block: {name: fast, deviceClass: ssd}
        filesystem: {deviceClass: hdd}
"""


@pytest.fixture(scope="module")
def filter_assets(tmp_path_factory) -> Path:
    from stellwerk.render import render

    directory = tmp_path_factory.mktemp("filter")
    cluster = write_cluster(directory, cluster_text(FILTER_MODE))
    render(cluster, directory / "assets")
    return directory / "assets"


@pytest.fixture(scope="module")
def explicit_assets(tmp_path_factory) -> Path:
    from stellwerk.render import render

    directory = tmp_path_factory.mktemp("explicit")
    cluster = write_cluster(directory, cluster_text(EXPLICIT_MODE))
    render(cluster, directory / "assets")
    return directory / "assets"


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("mode", ["filter_assets", "explicit_assets"])
def test_every_object_validates_against_the_upstream_schemas(mode, request):
    docs = objects(request.getfixturevalue(mode))
    assert docs
    for doc in docs.values():
        validate_object(doc, "1.31.4")


def test_filter_mode_renders_the_cluster_pools_and_storage_classes(filter_assets):
    docs = objects(filter_assets)
    assert list(docs) == [
        "01-cephcluster-rook-ceph.yaml", "02-cephblockpool-replicapool.yaml", "03-storageclass-rook-ceph-block.yaml",
        "04-cephfilesystem-cephfs.yaml", "05-storageclass-rook-cephfs.yaml", "06-cephobjectstore-objectstore.yaml",
        "07-storageclass-buckets.yaml",
    ]
    cluster = by_kind(docs, "CephCluster")
    assert cluster["metadata"] == {"name": "rook-ceph", "namespace": "rook-ceph"}
    spec = cluster["spec"]
    assert spec["cephVersion"]["image"] == "quay.io/ceph/ceph:v20.2.4"
    assert spec["dataDirHostPath"] == "/var/lib/rook"
    assert spec["mon"] == {"count": 3, "allowMultiplePerNode": False}
    assert spec["mgr"]["count"] == 2
    assert spec["storage"] == {
        "useAllNodes": False, "useAllDevices": False, "deviceFilter": "^nvme[1-9]n1$",
        "nodes": [{"name": "w1"}, {"name": "w2"}, {"name": "w3"}],
    }
    assert "placement" not in spec  # untainted workers need no tolerations
    assert spec["cephConfig"]["global"]["osd_pool_default_size"] == "3"

    pool = by_kind(docs, "CephBlockPool")["spec"]
    assert pool == {"failureDomain": "host", "replicated": {"size": 3, "requireSafeReplicaSize": True}}
    block = by_kind(docs, "StorageClass", "rook-ceph-block")
    assert block["provisioner"] == "rook-ceph.rbd.csi.ceph.com"
    assert block["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    params = block["parameters"]
    assert params["clusterID"] == "rook-ceph" and params["pool"] == "replicapool"
    assert params["csi.storage.k8s.io/provisioner-secret-name"] == "rook-csi-rbd-provisioner"
    assert params["csi.storage.k8s.io/controller-expand-secret-name"] == "rook-csi-rbd-provisioner"
    assert params["csi.storage.k8s.io/node-stage-secret-name"] == "rook-csi-rbd-node"
    assert all(params[k] == "rook-ceph" for k in params if k.endswith("-secret-namespace"))

    filesystem = by_kind(docs, "CephFilesystem", "cephfs")["spec"]
    assert filesystem["dataPools"][0]["name"] == "replicated"
    cephfs = by_kind(docs, "StorageClass", "rook-cephfs")
    assert cephfs["provisioner"] == "rook-ceph.cephfs.csi.ceph.com"
    assert cephfs["parameters"]["fsName"] == "cephfs" and cephfs["parameters"]["pool"] == "cephfs-replicated"
    assert cephfs["parameters"]["csi.storage.k8s.io/node-stage-secret-name"] == "rook-csi-cephfs-node"
    assert "annotations" not in cephfs["metadata"]

    store = by_kind(docs, "CephObjectStore", "objectstore")["spec"]
    assert store["dataPool"]["replicated"]["size"] == 3
    bucket = by_kind(docs, "StorageClass", "buckets")
    assert bucket["provisioner"] == "rook-ceph.ceph.rook.io/bucket"
    assert bucket["parameters"] == {"objectStoreName": "objectstore", "objectStoreNamespace": "rook-ceph"}


def test_explicit_nodes_get_their_devices_classes_and_tolerations(explicit_assets):
    docs = objects(explicit_assets)
    assert [doc["kind"] for doc in docs.values()] == [
        "CephCluster", "CephBlockPool", "StorageClass", "CephFilesystem", "StorageClass"]
    spec = by_kind(docs, "CephCluster")["spec"]
    assert spec["storage"] == {
        "useAllNodes": False, "useAllDevices": False,
        "config": {"encryptedDevice": "true", "osdsPerDevice": "2"},
        "nodes": [
            {"name": "w1", "devices": [
                {"name": "/dev/disk/by-id/nvme-Fast_Disk_S1", "config": {"deviceClass": "ssd"}},
                {"name": "sdb", "config": {"deviceClass": "hdd"}},
            ]},
            {"name": "c1", "devices": [{"name": "/dev/sdc", "config": {"deviceClass": "hdd"}}]},
        ],
    }
    # c1 is a controller: the Ceph daemons tolerate its taint, or its OSD could not run.
    assert spec["placement"]["all"]["tolerations"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]
    pool = by_kind(docs, "CephBlockPool")["spec"]
    assert pool["deviceClass"] == "ssd" and pool["replicated"] == {"size": 2, "requireSafeReplicaSize": True}
    assert by_kind(docs, "StorageClass", "fast")["parameters"]["pool"] == "replicapool"
    filesystem = by_kind(docs, "CephFilesystem")["spec"]
    assert filesystem["metadataPool"]["deviceClass"] == "hdd" and filesystem["dataPools"][0]["deviceClass"] == "hdd"
    assert spec["cephConfig"]["global"]["osd_pool_default_size"] == "2"


def test_one_replica_turns_off_the_safe_size_guard(tmp_path, run_cli):
    text = cluster_text("    rookCeph:\n      deviceFilter: '^vdb$'\n      replicas: 1\n      monCount: 1\n")
    cluster = write_cluster(tmp_path, text)
    assert run_cli("render", cluster, "-o", tmp_path / "assets").code == 0
    docs = objects(tmp_path / "assets")
    assert by_kind(docs, "CephBlockPool")["spec"]["replicated"] == {"size": 1, "requireSafeReplicaSize": False}
    config = by_kind(docs, "CephCluster")["spec"]["cephConfig"]["global"]
    assert config == {"osd_pool_default_size": "1", "mon_warn_on_pool_no_redundancy": "false"}
    for doc in docs.values():
        validate_object(doc, "1.31.4")


# --------------------------------------------------------------------------- node fragments


def test_fragments_in_filter_mode(filter_assets, tmp_path):
    require_engine()
    for node in ("c1", "w1"):
        validate((filter_assets / f"nodes/{node}/ignition.json").read_bytes())
    # deviceFilter matches are unknown at render time: nothing to wipe, only the kernel modules.
    worker = ignition(filter_assets, "w1")
    assert "disks" not in worker["storage"]
    assert "/etc/modules-load.d/stellwerk-rook-ceph.conf" in file_paths(worker)
    assert "/etc/modules-load.d/stellwerk-rook-ceph.conf" not in file_paths(ignition(filter_assets, "c1"))
    root = tmp_path / "w1"
    apply((filter_assets / "nodes/w1/ignition.json").read_bytes(), root)
    assert (root / "etc/modules-load.d/stellwerk-rook-ceph.conf").read_text() == "rbd\nceph\n"
    assert not (root / "etc/systemd/system/stellwerk-rook-ceph-lvm2.service").exists()


def test_fragments_with_explicit_devices(explicit_assets, tmp_path):
    require_engine()
    for node in ("c1", "c2", "w1", "w2"):
        validate((explicit_assets / f"nodes/{node}/ignition.json").read_bytes())
    w1 = ignition(explicit_assets, "w1")
    # Only /dev paths are wiped; a bare kernel name (sdb) is left to Rook. Never partitioned or formatted.
    assert w1["storage"]["disks"] == [{"device": "/dev/disk/by-id/nvme-Fast_Disk_S1", "wipeTable": True}]
    assert component_filesystems(w1["storage"]) == [] and "raid" not in w1["storage"]
    assert ignition(explicit_assets, "c1")["storage"]["disks"] == [{"device": "/dev/sdc", "wipeTable": True}]
    # w2 holds no OSDs but may mount volumes: kernel modules, no disks, no lvm2 check.
    w2 = ignition(explicit_assets, "w2")
    assert "disks" not in w2["storage"]
    assert "stellwerk-rook-ceph-lvm2.service" not in {u["name"] for u in w2["systemd"]["units"]}
    # c2 is a controller without OSDs: nothing from this component.
    assert "/etc/modules-load.d/stellwerk-rook-ceph.conf" not in file_paths(ignition(explicit_assets, "c2"))

    root = tmp_path / "w1"
    apply((explicit_assets / "nodes/w1/ignition.json").read_bytes(), root)
    # encryptDevices and osdsPerDevice put OSDs on LVM (and dm-crypt): the host needs lvm2.
    assert (root / "etc/modules-load.d/stellwerk-rook-ceph.conf").read_text() == "rbd\nceph\ndm_mod\ndm_crypt\n"
    unit = (root / "etc/systemd/system/stellwerk-rook-ceph-lvm2.service").read_text()
    assert "AssertFileIsExecutable=/usr/sbin/lvm" in unit
    assert "encryptDevices, osdsPerDevice 2" in unit
    assert "WantedBy=multi-user.target" in unit
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text()
    assert "enable stellwerk-rook-ceph-lvm2.service" in preset


def test_no_wipe_keeps_the_disks_out_of_ignition(tmp_path, run_cli):
    text = cluster_text("    rookCeph:\n      wipeDevices: false\n      replicas: 1\n      monCount: 1\n"
                        "      nodes: [{name: w1, devices: [/dev/nvme1n1]}]\n")
    cluster = write_cluster(tmp_path, text)
    assert run_cli("render", cluster, "-o", tmp_path / "assets").code == 0
    assert "disks" not in ignition(tmp_path / "assets", "w1")["storage"]


# --------------------------------------------------------------------------- bad input


BAD = [
    ("even mon count",
     "      deviceFilter: '^vdb$'\n      monCount: 2\n", "monCount: 2", "monCount",
     "2 mons: the mons keep quorum while a majority (2) is up"),
    ("more mons than nodes",
     "      deviceFilter: '^vdb$'\n      monCount: 5\n", "monCount: 5", "monCount",
     "5 mons need 5 nodes (each mon runs on its own node), but only 3 can run one (w1, w2, w3)"),
    ("mon count out of range",
     "      deviceFilter: '^vdb$'\n      monCount: 11\n", "monCount: 11", "monCount",
     "Input should be less than or equal to 9"),
    ("replicas above OSD nodes",
     "      replicas: 3\n      nodes: [{name: w1, devices: [nvme1n1]}, {name: w2, devices: [nvme1n1]}]\n",
     "replicas: 3", "replicas", "3 replicas need 3 nodes with OSDs"),
    ("bad regex",
     "      deviceFilter: '^nvme['\n", "deviceFilter", "deviceFilter", "'^nvme[' is not a regular expression"),
    ("regex RE2 cannot run",
     "      deviceFilter: '^(?!nvme0)nvme'\n", "deviceFilter", "deviceFilter",
     "uses lookahead, which Go's RE2 regex engine (used by Rook) does not support"),
    ("filter matches the OS disk",
     "      deviceFilter: '^nvme'\n", "deviceFilter", "deviceFilter",
     "'^nvme' matches nvme0n1 on node w1, whose installDisk is /dev/nvme0n1"),
    ("unknown node",
     "      deviceFilter: '^vdb$'\n      nodes:\n        - name: w9\n", "name: w9", "nodes[0].name",
     "no node of this cluster is named 'w9'; nodes are: c1, c2, c3, w1, w2, w3"),
    ("device is the install disk",
     "      monCount: 1\n      replicas: 1\n      nodes:\n        - name: w2\n          devices: [nvme1n1, /dev/nvme0n1]\n",
     "devices: [nvme1n1", "nodes[0].devices[1]",
     "/dev/nvme0n1 is node w2's installDisk /dev/nvme0n1, which holds the OS"),
    ("device is a partition of the install disk",
     "      monCount: 1\n      replicas: 1\n      nodes:\n        - name: w2\n          devices: [nvme0n1p9]\n",
     "devices: [nvme0n1p9", "nodes[0].devices[0]",
     "nvme0n1p9 is a partition of node w2's installDisk /dev/nvme0n1"),
    ("device listed twice",
     "      monCount: 1\n      replicas: 1\n      nodes:\n        - name: w1\n          devices: [nvme1n1, /dev/nvme1n1]\n",
     "devices: [nvme1n1", "nodes[0].devices[1]", "/dev/nvme1n1 is already listed as devices[0] of node w1"),
    ("node listed twice",
     "      deviceFilter: '^vdb$'\n      nodes:\n        - name: w1\n        - {name: w1}\n",
     "- {name: w1}", "nodes[1].name", "node w1 is already listed as nodes[0]"),
    ("device that is no device",
     "      nodes:\n        - name: w1\n          devices: [dev/sdb]\n", "devices: [dev/sdb]", "nodes[0].devices[0]",
     "'dev/sdb' is neither a kernel device name such as nvme1n1 nor a path under /dev"),
    ("no disks at all",
     "      monCount: 1\n", "rookCeph:", "", "give deviceFilter"),
    ("encrypted partition",
     "      monCount: 1\n      replicas: 1\n      encryptDevices: true\n      nodes:\n        - name: w1\n"
     "          devices: [nvme1n1p1]\n",
     "devices: [nvme1n1p1]", "nodes[0].devices[0]", "nvme1n1p1 is a partition, and Rook only encrypts OSDs on whole disks"),
    ("node without devices and no filter",
     "      monCount: 1\n      replicas: 1\n      nodes:\n        - name: w1\n", "- name: w1", "nodes[0]",
     "node w1 lists no devices and there is no deviceFilter"),
    ("device classes with a filter",
     "      deviceFilter: '^vdb$'\n      deviceClasses: {ssd: '^vd'}\n", "deviceClasses", "deviceClasses",
     "deviceClasses labels the devices listed under nodes[].devices"),
    ("device in two classes",
     "      monCount: 1\n      replicas: 1\n      deviceClasses: {fast: '^nvme', ssd: 'n1$'}\n"
     "      nodes:\n        - name: w1\n          devices: [nvme1n1]\n",
     "devices: [nvme1n1]", "nodes[0].devices[0]", "nvme1n1 matches deviceClasses fast and ssd"),
    ("class that matches nothing",
     "      monCount: 1\n      replicas: 1\n      deviceClasses:\n        ssd: '^nvme'\n        hdd: '^sd'\n"
     "      nodes:\n        - name: w1\n          devices: [nvme1n1]\n",
     "hdd: '^sd'", "deviceClasses.hdd", "class hdd matches none of the devices under nodes"),
    ("storage class on an unknown device class",
     "      deviceFilter: '^vdb$'\n      storageClasses:\n        block: {deviceClass: fast}\n",
     "block: {deviceClass", "storageClasses.block.deviceClass",
     "no OSD has device class 'fast'; use one of hdd, nvme, ssd"),
    ("two default storage classes",
     "      deviceFilter: '^vdb$'\n      storageClasses:\n        block: {default: true}\n"
     "        filesystem: {default: true}\n",
     "filesystem: {default", "storageClasses.filesystem.default", "block is already the default StorageClass"),
    ("two storage classes with one name",
     "      deviceFilter: '^vdb$'\n      storageClasses:\n        block: {name: ceph}\n        object: {name: ceph}\n",
     "object: {name", "storageClasses.object.name", "StorageClass name 'ceph' is already used by block"),
    ("unknown option",
     "      deviceFliter: '^vdb$'\n", "deviceFliter", "deviceFliter", "unknown key 'deviceFliter'; did you mean 'deviceFilter'?"),
    ("bad storage class name",
     "      deviceFilter: '^vdb$'\n      storageClasses:\n        block: {name: Fast_Disks}\n",
     "block: {name", "storageClasses.block.name", "'Fast_Disks' is not a DNS domain"),
]


@pytest.mark.parametrize("options, needle, path, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_a_located_error(tmp_path, run_cli, options, needle, path, message):
    text = cluster_text("    rookCeph:\n" + options)
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2, result.out
    line = line_of(text, needle, after="rookCeph:", occurrence=1) if needle != "rookCeph:" else line_of(text, needle, occurrence=1)
    where = "spec.components.rookCeph" + (f".{path}" if path and not path.startswith("[") else path)
    prefix = f"{cluster}:{line}: {where}: "
    lines = result.err.splitlines()
    assert any(entry.startswith(prefix) and message in entry for entry in lines), result.err
    assert "Traceback" not in result.err


def test_debian_nodes_cannot_wipe_disks(tmp_path, run_cli):
    options = "    rookCeph:\n      monCount: 1\n      replicas: 1\n      nodes:\n        - name: w1\n          devices: [/dev/sdb]\n"
    text = cluster_text(options, os_family="debian")
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2
    line = line_of(text, "devices: [/dev/sdb]", occurrence=1)
    assert result.err.startswith(f"{cluster}:{line}: spec.components.rookCeph.nodes[0].devices[0]: debian nodes are "
                                 "set up by cloud-init, which cannot wipe disks; set wipeDevices: false")
    # The fix the message names works, and cloud-init gets the kernel modules only.
    cluster = write_cluster(tmp_path, text.replace("      replicas: 1\n", "      replicas: 1\n      wipeDevices: false\n"))
    assert run_cli("render", cluster, "-o", tmp_path / "assets").code == 0
    cloud_config = (tmp_path / "assets/nodes/w1/cloud-config.yaml").read_text()
    assert "/etc/modules-load.d/stellwerk-rook-ceph.conf" in cloud_config


def test_controllers_count_for_mons_only_when_they_hold_osds(tmp_path, run_cli):
    # One worker: three mons fit only once the controllers are storage nodes (their taint tolerated).
    one_worker = BASE_EXAMPLE_TEXT.replace("  snippets:\n", "  components:\n    rookCeph:\n"
                                             "      replicas: 1\n      deviceFilter: '^vdb$'\n  snippets:\n")
    cluster = write_cluster(tmp_path, one_worker)
    result = run_cli("validate", cluster)
    assert result.code == 2 and "set monCount: 1, or add workers" in result.err
    with_controllers = one_worker.replace("      deviceFilter: '^vdb$'\n",
                                          "      deviceFilter: '^vdb$'\n      nodes: [{name: c1}, {name: c2}, {name: w1}]\n")
    cluster = write_cluster(tmp_path, with_controllers)
    assert run_cli("validate", cluster).code == 0, run_cli("validate", cluster).err


# --------------------------------------------------------------------------- patches and upstream


def test_patches_change_the_rendered_objects(tmp_path, run_cli):
    options = """\
    rookCeph:
      deviceFilter: '^vdb$'
      patches:
        - target: {kind: CephCluster, name: rook-ceph}
          jsonPatch:
            - {op: replace, path: /spec/dashboard/enabled, value: false}
        - target: {kind: StorageClass, name: rook-ceph-block}
          merge:
            reclaimPolicy: Retain
"""
    cluster = write_cluster(tmp_path, cluster_text(options))
    assert run_cli("render", cluster, "-o", tmp_path / "assets").code == 0
    docs = objects(tmp_path / "assets")
    assert by_kind(docs, "CephCluster")["spec"]["dashboard"] == {"enabled": False, "ssl": True}
    assert by_kind(docs, "StorageClass")["reclaimPolicy"] == "Retain"
    for doc in docs.values():
        validate_object(doc, "1.31.4")

    missing = cluster_text(options.replace("name: rook-ceph-block", "name: rook-cephfs"))
    cluster = write_cluster(tmp_path, missing)
    result = run_cli("render", cluster, "-o", tmp_path / "assets2")
    assert result.code == 2
    assert "patches[1]" in result.err and "StorageClass 'rook-cephfs'" in result.err


def test_upstream_manifests_are_pinned_in_install_order():
    from stellwerk.components import rook_ceph
    from stellwerk.release import UPSTREAM

    options = rook_ceph.Options.model_validate({"deviceFilter": "^vdb$"})
    names = rook_ceph.upstream(options)
    # operator.yaml carries csi.ceph.io objects, so the CSI operator's CRDs must be applied before it.
    assert names == ("rook-crds", "rook-common", "rook-csi-operator", "rook-operator")
    assert all(UPSTREAM[name].project == "rook" and UPSTREAM[name].version == "v1.20.6" for name in names)


def test_docs_describe_every_option_with_its_default():
    from stellwerk.components import rook_ceph

    doc = (REPO / "docs/components/rookCeph.md").read_text()
    models = ((rook_ceph.Options, ""), (rook_ceph.OSDNode, "nodes[]."), (rook_ceph.StorageClasses, "storageClasses."),
              (rook_ceph.BlockStorage, "storageClasses.block."),
              (rook_ceph.FilesystemStorage, "storageClasses.filesystem."),
              (rook_ceph.ObjectStorage, "storageClasses.object."))
    for model, prefix in models:
        for name, field in model.model_fields.items():
            alias = prefix + (field.alias or name)
            if alias == "patches":
                continue
            row = next((line for line in doc.splitlines() if line.startswith(f"| `{alias}`")), None)
            assert row is not None, f"docs/components/rookCeph.md has no table row for `{alias}`"
            default = field.get_default(call_default_factory=True)
            if isinstance(default, bool):
                expected = "true" if default else "false"
            elif default is None or default == [] or default == {}:
                expected = {None: "none", "[]": "[]", "{}": "{}"}[None if default is None else str(default)]
            elif isinstance(default, (int, str)):
                expected = str(default)
            else:
                continue
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert re.sub(r"[`*]", "", cells[2]) == expected, (alias, cells)
