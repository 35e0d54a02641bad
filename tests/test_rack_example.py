"""The bundled example with every component: its whole output checked against the real engines and schemas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from support.paths import REPO
from support.webserver import static_http
from support.ignition_engine import apply, validate
from support.k8s_schemas import validate_object
from support.sysext import render_flatcar

RACK = REPO / "examples" / "rack-cluster.yaml"


@pytest.fixture(scope="module")
def rack(tmp_path_factory) -> Path:
    scratch = tmp_path_factory.mktemp("rack")
    result = render_flatcar(RACK, scratch / "assets", cache_dir=scratch / "empty-cache")
    assert any("stellwerk components fetch" in note for note in result.notes)
    return scratch / "assets"


def test_every_component_rendered_objects_that_pass_the_upstream_schemas(rack):
    directories = sorted(p.name for p in (rack / "manifests").iterdir())
    # nvme is host-only: it renders no cluster objects.
    assert directories == ["bootstrap", "cluster-addons", "hostProtection", "metallb", "openebs", "rookCeph"]
    count = 0
    for path in sorted((rack / "manifests").rglob("*.yaml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(documents) == 1, f"{path}: one object per file"
        validate_object(documents[0], "1.31.4")
        count += 1
    assert count > 30


def test_every_node_config_validates_and_a_worker_applies_with_every_fragment(rack, tmp_path):
    from stellwerk.render import render

    for config in sorted(rack.glob("nodes/*/ignition.json")):
        validate(config.read_bytes())
    # Flatcar configs download sysext images in the files stage; the lab OS variant has the same fragments
    # and applies offline.
    lab = tmp_path / "rack-lab.yaml"
    lab.write_text(RACK.read_text().replace("    family: flatcar\n", "    family: lab\n"))
    render(lab, tmp_path / "assets", cache_dir=tmp_path / "empty-cache")
    root = tmp_path / "w1"
    apply((tmp_path / "assets/nodes/w1/ignition.json").read_bytes(), root)
    etc = root / "etc"
    assert (etc / "udev/rules.d/70-stellwerk-nvme.rules").exists()                  # nvme tuning
    assert (etc / "systemd/system/var-mnt-data.mount").exists()                     # nvme RAID mount
    assert (etc / "nftables.d/stellwerk-host-protection.nft").exists()              # host protection
    modules = "".join(p.read_text() for p in (etc / "modules-load.d").glob("*.conf")).split()
    assert {"rbd", "br_netfilter", "raid1"} <= set(modules)                          # rook, kubernetes, RAID
    assert (root / "var/mnt/openebs").is_dir()                                      # openebs hostpath


def test_cached_upstream_manifests_are_included_verbatim_before_own_objects(tmp_path, monkeypatch):
    from stellwerk import release
    from stellwerk.upstream import fetch

    body = b"# fixture standing in for metallb-native.yaml\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n"
    www = tmp_path / "www"
    www.mkdir()
    (www / "metallb-native.yaml").write_bytes(body)
    with static_http(www) as base:
        pin = release.UpstreamManifest("metallb-native", "metallb", "v0.16.1", f"{base}/metallb-native.yaml",
                                       hashlib.sha256(body).hexdigest(), len(body))
        monkeypatch.setitem(release.UPSTREAM, "metallb-native", pin)
        cache = tmp_path / "cache"
        fetch([pin], cache)
    result = render_flatcar(RACK, tmp_path / "assets", cache_dir=cache)
    metallb = sorted(p.name for p in (tmp_path / "assets/manifests/metallb").iterdir())
    assert metallb[0] == "00-0-upstream-metallb-native.yaml"
    assert (tmp_path / "assets/manifests/metallb/00-0-upstream-metallb-native.yaml").read_bytes() == body
    assert not any("metallb-native" in note for note in result.notes)
    assert any("rook-crds" in note for note in result.notes)


def test_calico_node_gets_the_cluster_pod_network_and_node_address_method(tmp_path, monkeypatch):
    """Calico's manifest install defaults to 192.168.0.0/16; the pinned manifest is given the cluster's podCIDR."""
    from stellwerk import release
    from stellwerk.upstream import cache_path

    body = (b"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: calico-node, namespace: kube-system}\n---\n"
            b"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: calico-node, namespace: kube-system}\n"
            b"spec:\n  template:\n    spec:\n      containers:\n        - name: calico-node\n          image: calico/node\n"
            b"          env:\n            - {name: IP, value: autodetect}\n            - {name: IP_AUTODETECTION_METHOD, value: first-found}\n")
    pin = release.UpstreamManifest("calico", "calico", "v3.32.1", "https://example.invalid/calico.yaml",
                                   hashlib.sha256(body).hexdigest(), len(body))
    monkeypatch.setitem(release.UPSTREAM, "calico", pin)
    cache = tmp_path / "cache"
    cache_path(cache, pin).parent.mkdir(parents=True)
    cache_path(cache, pin).write_bytes(body)
    render_flatcar(RACK, tmp_path / "assets", cache_dir=cache)
    addons = sorted(p.name for p in (tmp_path / "assets/manifests/cluster-addons").iterdir())
    assert addons[:2] == ["00-configmap-kubernetes-services-endpoint.yaml", "01-upstream-calico.yaml"]
    assert not list((tmp_path / "assets/manifests/hostProtection").glob("*upstream*"))
    documents = list(yaml.safe_load_all((tmp_path / "assets/manifests/cluster-addons/01-upstream-calico.yaml").read_text()))
    assert documents[0]["kind"] == "ServiceAccount"
    env = {e["name"]: e["value"] for e in documents[1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"IP": "autodetect", "IP_AUTODETECTION_METHOD": "kubernetes-internal-ip", "CALICO_IPV4POOL_CIDR": "10.2.0.0/16"}


def test_upstream_manifests_are_written_in_the_order_the_component_lists_them(tmp_path, monkeypatch):
    from stellwerk import release
    from stellwerk.components import rook_ceph
    from stellwerk.upstream import cache_path

    cache = tmp_path / "cache"
    for name in rook_ceph.upstream(None):
        body = f"# fixture for {name}\n".encode()
        pin = release.UpstreamManifest(name, "rook", "v1.20.6", f"https://example.invalid/{name}.yaml",
                                       hashlib.sha256(body).hexdigest(), len(body))
        monkeypatch.setitem(release.UPSTREAM, name, pin)
        cache_path(cache, pin).parent.mkdir(parents=True, exist_ok=True)
        cache_path(cache, pin).write_bytes(body)
    render_flatcar(RACK, tmp_path / "assets", cache_dir=cache)
    on_disk = sorted(p.name for p in (tmp_path / "assets/manifests/rookCeph").iterdir())
    upstream = [name for name in on_disk if "-upstream-" in name]
    assert [name.split("-upstream-", 1)[1][:-5] for name in upstream] == list(rook_ceph.upstream(None))
    assert on_disk[:len(upstream)] == upstream  # before Stellwerk's own objects


@pytest.mark.parametrize(("old", "new", "message"), [
    ("      hostpath: {basePath: /var/mnt/openebs}\n", "      hostpath: {basePath: /var/mnt/data}\n",
     "/var/mnt/data on node w1 is also mounted by openebs.hostpath.basePath"),
    ("      hostpath: {basePath: /var/mnt/openebs}\n", "      hostpath: {basePath: /var/mnt/openebs, device: /dev/nvme2n1}\n",
     "/dev/nvme2n1 on node w1 is also claimed by openebs.hostpath.device"),
    ("      engine: hostpath\n      hostpath: {basePath: /var/mnt/openebs}\n",
     "      engine: lvm\n      lvm: {devices: [/dev/nvme3n1]}\n",
     "/dev/nvme3n1 on node w1 is also claimed by rookCeph.deviceFilter '^nvme[34]n1$' (it matches 'nvme3n1')"),
])
def test_two_components_cannot_take_the_same_disk_or_mount_path(run_cli, tmp_path, old, new, message):
    from support.clusters import write_cluster

    text = RACK.read_text()
    assert old in text
    result = run_cli("validate", write_cluster(tmp_path, text.replace(old, new)))
    assert result.code == 2 and message in result.err, result.err
