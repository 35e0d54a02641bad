"""`stellwerk render` end to end, checked with the real engines: Ignition, openssl, wg, cloud-init."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.clusters import write_cluster
from support.paths import BASE_EXAMPLE_TEXT, EXAMPLE, REPO
from support.sysext import build_images, render_flatcar, served_sysext
from support.tools import require_tool
from support.ignition_engine import apply, validate

CA_KEY_MARKERS = ("ca.key", "front-proxy-ca.key", "etcd/ca.key")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Iterator[Path]:
    """The lab example rendered, with its etcd sysext image served on loopback for the configs applied below."""
    from stellwerk.render import render

    scratch = tmp_path_factory.mktemp("assets")
    assets = scratch / "lab"
    with served_sysext(EXAMPLE.read_text(), assets, scratch) as cluster:
        render(cluster, assets)
        yield assets


def tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            info = path.stat()
            out[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    return out


def test_assets_layout_and_modes(rendered):
    files = tree(rendered)
    for name in ("c1", "c2", "c3", "w1"):
        assert f"nodes/{name}/ignition.json" in files
        assert files[f"wireguard/{name}.key"][1] == 0o600
        assert files[f"wireguard/{name}.pub"][1] == 0o644
    for expected in ("cluster.lock.yaml", "auth/admin.conf", "auth/bootstrap-token", "pki/ca.crt", "pki/ca.key",
                     "pki/sa.key", "pki/sa.pub", "pki/etcd/server-c2.crt", "pki/etcd/peer-c3.key",
                     "pki/etcd/healthcheck-client.crt", "pki/apiserver-etcd-client.key",
                     "pki/front-proxy-client.crt"):
        assert expected in files, expected
    for path, (_, mode, _) in files.items():
        if path.endswith(".key") or path in ("auth/admin.conf", "auth/bootstrap-token") or path.startswith("nodes/"):
            assert mode == 0o600, path
        elif not path.startswith("manifests/bootstrap/00-secret") and path != "cluster.lock.yaml":
            assert mode == 0o644, path
    token = files["auth/bootstrap-token"][0].decode().strip()
    assert len(token) == 23 and token[6] == "." and token.replace(".", "").isalnum() and token.islower()


def test_every_config_passes_ignition_validate(rendered):
    for config in sorted(rendered.glob("nodes/*/ignition.json")):
        validate(config.read_bytes())


def test_worker_config_holds_no_ca_key(rendered):
    from stellwerk.ignition.model import file_contents, loads

    worker = loads((rendered / "nodes/w1/ignition.json").read_bytes())
    paths = {f.path for f in worker.files}
    assert "/etc/kubernetes/pki/ca.crt" in paths
    assert not [p for p in paths if p.endswith(".key") and "/pki/" in p]
    ca_keys = [(rendered / "pki" / name).read_bytes() for name in CA_KEY_MARKERS]
    for f in worker.files:
        body = file_contents(f)
        for key in ca_keys:
            assert key not in body, f.path
    # Controllers get ca.key (the controller-manager signs with it) but never the etcd or front-proxy CA keys.
    controller = (rendered / "nodes/c1/ignition.json").read_bytes()
    controller_config = loads(controller)
    # (the one remote file is the etcd sysext image, fetched by its sha512: binaries only)
    remote = [f for f in controller_config.files if f.source and not f.source.startswith("data:")]
    assert [f.path.startswith("/opt/extensions/etcd/") for f in remote] == [True]
    bodies = b"".join(file_contents(f) for f in controller_config.files if f not in remote)
    assert (rendered / "pki/ca.key").read_bytes() in bodies
    assert (rendered / "pki/etcd/ca.key").read_bytes() not in bodies
    assert (rendered / "pki/front-proxy-ca.key").read_bytes() not in bodies


def test_real_ignition_applies_the_controller_config(rendered, tmp_path):
    root = tmp_path / "c1"
    apply((rendered / "nodes/c1/ignition.json").read_bytes(), root)
    pki = root / "etc/kubernetes/pki"
    assert (pki / "ca.crt").read_bytes() == (rendered / "pki/ca.crt").read_bytes()
    assert (pki / "etcd/server.crt").read_bytes() == (rendered / "pki/etcd/server-c1.crt").read_bytes()
    assert (pki / "etcd/peer.key").read_bytes() == (rendered / "pki/etcd/peer-c1.key").read_bytes()
    for key in ("apiserver.key", "sa.key", "etcd/server.key", "ca.key"):
        assert stat.S_IMODE((pki / key).stat().st_mode) == 0o600, key
    assert not (pki / "etcd/ca.key").exists()
    for pod in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        manifest = yaml.safe_load((root / f"etc/kubernetes/manifests/{pod}.yaml").read_text())
        assert manifest["metadata"]["name"] == pod
        assert manifest["spec"]["containers"][0]["image"] == f"registry.k8s.io/{pod}:v1.31.4"
        container = manifest["spec"]["containers"][0]
        assert container["startupProbe"]["failureThreshold"] == 24
        assert container["startupProbe"]["httpGet"]["path"] == container["livenessProbe"]["httpGet"]["path"]
    apiserver = yaml.safe_load((root / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text())
    command = apiserver["spec"]["containers"][0]["command"]
    assert "--etcd-servers=https://10.213.0.11:2379,https://10.213.0.12:2379,https://10.213.0.13:2379" in command
    assert "--advertise-address=10.213.0.11" in command
    for flag in command[1:]:  # every file the apiserver is told to read was written by Ignition
        value = flag.split("=", 1)[1] if "=" in flag else ""
        if value.startswith("/etc/kubernetes/"):
            assert (root / value.lstrip("/")).is_file(), flag
    etcd_unit = (root / "etc/systemd/system/etcd.service").read_text()
    assert "ExecStart=/usr/bin/etcd" in etcd_unit
    assert "--client-cert-auth=true" in etcd_unit and "--peer-client-cert-auth=true" in etcd_unit
    assert "--initial-cluster=c1=https://10.213.0.11:2380,c2=https://10.213.0.12:2380,c3=https://10.213.0.13:2380" in etcd_unit
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().split("\n")
    for unit in ("etcd.service", "kubelet.service", "systemd-networkd.service"):
        assert f"enable {unit}" in preset
    kubelet_unit = (root / "etc/systemd/system/kubelet.service").read_text()
    assert "ConditionPathExists=/usr/bin/kubelet" in kubelet_unit
    assert "\nWants=network-online.target containerd.service\n" in kubelet_unit
    # etcd comes as the sysext image render built, fetched by Ignition and linked where systemd-sysext looks.
    [image] = (rendered / "boot/sysext").glob("etcd-*.raw")
    link = root / "etc/extensions/etcd.raw"
    assert link.is_symlink() and (root / str(link.readlink()).lstrip("/")).read_bytes() == image.read_bytes()
    assert (root / "etc/hostname").read_text() == "c1\n"
    assert "ops@example" in (root / "home/core/.ssh/authorized_keys.d/ignition").read_text()
    assert (root / "etc/motd.d/stellwerk.conf").exists()  # the example's snippet was merged


def test_real_ignition_applies_the_worker_config(rendered, tmp_path):
    root = tmp_path / "w1"
    apply((rendered / "nodes/w1/ignition.json").read_bytes(), root)
    pki = root / "etc/kubernetes/pki"
    assert sorted(p.name for p in pki.iterdir()) == ["ca.crt"]
    assert not (root / "etc/kubernetes/manifests").exists()
    assert not (root / "etc/systemd/system/etcd.service").exists()
    kubelet = (root / "etc/systemd/system/kubelet.service.d/20-stellwerk.conf").read_text()
    assert "ExecStart=\nExecStart=/usr/bin/kubelet" in kubelet
    assert "--node-labels=node.example.com/tier=general,node.stellwerk.dev/pool=general,node.stellwerk.dev/role=worker" in kubelet
    bootstrap = yaml.safe_load((root / "etc/kubernetes/bootstrap-kubelet.conf").read_text())
    assert bootstrap["users"][0]["user"]["token"] == (Path(rendered) / "auth/bootstrap-token").read_text().strip()
    assert bootstrap["clusters"][0]["cluster"]["server"] == "https://api.lab.example:6443"
    assert stat.S_IMODE((root / "etc/kubernetes/bootstrap-kubelet.conf").stat().st_mode) == 0o600
    modules = (root / "etc/modules-load.d/stellwerk-kubernetes.conf").read_text().split()
    assert {"br_netfilter", "overlay"} <= set(modules)
    assert "net.ipv4.ip_forward = 1" in (root / "etc/sysctl.d/60-stellwerk-kubernetes.conf").read_text()
    network = (root / "etc/systemd/network/00-stellwerk-node.network").read_text()
    assert "MACAddress=52:54:00:00:00:21" in network and "Address=10.213.0.21/24" in network


def test_wireguard_mesh_files_and_keys(rendered, tmp_path):
    wg = require_tool("wg")
    for name in ("c1", "c2", "c3", "w1"):
        private = (rendered / f"wireguard/{name}.key").read_text()
        derived = subprocess.run([wg, "pubkey"], input=private, capture_output=True, text=True, check=True).stdout
        assert derived == (rendered / f"wireguard/{name}.pub").read_text()
    root = tmp_path / "c2"
    apply((rendered / "nodes/c2/ignition.json").read_bytes(), root)
    key_file = root / "etc/systemd/network/wg0.key"
    info = key_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == _scratch_uid(root, "systemd-network")
    assert key_file.read_text() == (rendered / "wireguard/c2.key").read_text()
    netdev = (root / "etc/systemd/network/50-wg0.netdev").read_text()
    assert "PrivateKeyFile=/etc/systemd/network/wg0.key" in netdev
    assert (rendered / "wireguard/c2.key").read_text().strip() not in netdev
    peers = netdev.split("[WireGuardPeer]")[1:]
    assert len(peers) == 3
    for name, octet in (("c1", 11), ("c3", 13), ("w1", 21)):
        peer = next(p for p in peers if f"# {name}\n" in p)
        assert f"PublicKey={(rendered / f'wireguard/{name}.pub').read_text().strip()}" in peer
        assert f"Endpoint=10.213.0.{octet}:51871" in peer
        assert f"AllowedIPs=10.250.0.{octet}/32" in peer
    assert "Address=10.250.0.12/24" in (root / "etc/systemd/network/50-wg0.network").read_text()


def _scratch_uid(root: Path, user: str) -> int:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise AssertionError(f"{user} not in scratch passwd")


def test_local_control_plane_clients_can_verify_the_apiserver_over_loopback(rendered):
    openssl = require_tool("openssl")
    pki = rendered / "pki"
    for check in (["-verify_ip", "127.0.0.1"], ["-verify_hostname", "localhost"], ["-verify_ip", "10.213.0.12"],
                  ["-verify_hostname", "api.lab.example"], ["-verify_ip", "10.3.0.1"]):
        result = subprocess.run([openssl, "verify", "-CAfile", str(pki / "ca.crt"), *check, str(pki / "apiserver.crt")],
                                capture_output=True, text=True)
        assert result.returncode == 0, (check, result.stdout, result.stderr)
    wrong = subprocess.run([openssl, "verify", "-CAfile", str(pki / "ca.crt"), "-verify_ip", "10.213.0.21",
                            str(pki / "apiserver.crt")], capture_output=True, text=True)
    assert wrong.returncode != 0


def test_openssl_verifies_every_chain_in_the_assets(rendered):
    openssl = require_tool("openssl")
    pki = rendered / "pki"
    issuers = {"etcd": pki / "etcd/ca.crt", "front-proxy-client": pki / "front-proxy-ca.crt", "apiserver-etcd-client": pki / "etcd/ca.crt"}
    for cert in sorted(pki.rglob("*.crt")):
        relative = cert.relative_to(pki)
        if relative.name.endswith("ca.crt"):
            ca = cert
        elif relative.parts[0] == "etcd":
            ca = issuers["etcd"]
        else:
            ca = issuers.get(relative.stem, pki / "ca.crt")
        result = subprocess.run([openssl, "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True)
        assert result.returncode == 0 and ": OK" in result.stdout, (relative, result.stdout, result.stderr)


def test_admin_kubeconfig_is_complete(rendered):
    config = yaml.safe_load((rendered / "auth/admin.conf").read_text())
    assert config["current-context"] == "kubernetes-admin@lab"
    assert config["clusters"][0]["cluster"]["server"] == "https://api.lab.example:6443"
    import base64

    assert base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]) == (rendered / "pki/ca.crt").read_bytes()
    assert base64.b64decode(config["users"][0]["user"]["client-certificate-data"]) == (rendered / "pki/admin.crt").read_bytes()


def test_bootstrap_manifests(rendered):
    token = (rendered / "auth/bootstrap-token").read_text().strip()
    token_id, secret = token.split(".")
    documents = {p.name: yaml.safe_load(p.read_text()) for p in sorted((rendered / "manifests/bootstrap").glob("*.yaml"))}
    secret_doc = next(d for d in documents.values() if d["kind"] == "Secret")
    assert secret_doc["metadata"] == {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"}
    assert secret_doc["type"] == "bootstrap.kubernetes.io/token"
    assert secret_doc["stringData"]["token-secret"] == secret
    roles = {d["roleRef"]["name"] for d in documents.values() if d["kind"] == "ClusterRoleBinding"}
    assert {"system:node-bootstrapper", "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"} <= roles


def test_rerender_is_byte_identical_and_writes_nothing(rendered, run_cli):
    before = tree(rendered)
    result = run_cli("render", rendered.parent / "cluster.yaml", "-o", rendered)
    assert result.code == 0, result.err
    assert "secrets: all loaded, none created" in result.out
    assert "0 created, 0 updated, 0 removed" in result.out
    assert tree(rendered) == before  # bytes, modes and mtimes


def test_lock_file_pins_defaults(rendered):
    lock = yaml.safe_load((rendered / "cluster.lock.yaml").read_text())
    assert lock["spec"]["kubernetes"]["version"] == "1.31.4"
    assert lock["spec"]["pki"]["caValidity"] == "87600h"
    assert lock["resolved"]["images"]["kube-apiserver"] == "registry.k8s.io/kube-apiserver:v1.31.4"
    assert {n["name"]: n["meshAddress"] for n in lock["resolved"]["nodes"]}["w1"] == "10.250.0.21"


def test_added_controller_gets_new_leaves_and_the_summary_says_so(tmp_path, run_cli, example_text):
    assets = tmp_path / "assets"
    first = run_cli("render", EXAMPLE, "-o", assets)
    assert first.code == 0, first.err
    ca_before = (assets / "pki/ca.crt").read_bytes(), (assets / "pki/ca.key").read_bytes()
    text = example_text.replace(
        '    - {name: c3, mac: "52:54:00:00:00:13", address: 10.213.0.13, installDisk: /dev/nvme0n1}\n',
        '    - {name: c3, mac: "52:54:00:00:00:13", address: 10.213.0.13, installDisk: /dev/nvme0n1}\n'
        '    - {name: c4, mac: "52:54:00:00:00:14", address: 10.213.0.14, installDisk: /dev/nvme0n1}\n'
        '    - {name: c5, mac: "52:54:00:00:00:15", address: 10.213.0.15, installDisk: /dev/nvme0n1}\n',
    )
    cluster = write_cluster(tmp_path, text)
    second = run_cli("render", cluster, "-o", assets)
    assert second.code == 0, second.err
    assert "+ pki/etcd/server-c4.crt" in second.out and "+ pki/etcd/peer-c5.key" in second.out
    assert "reissued pki/apiserver.crt" in second.out
    assert "+ pki/ca.key" not in second.out
    assert ((assets / "pki/ca.crt").read_bytes(), (assets / "pki/ca.key").read_bytes()) == ca_before
    assert list((assets / "pki/retired").glob("apiserver-*.crt"))
    assert "nodes/c1/ignition.json" in second.out  # updated: it now lists the new etcd members


def test_broken_secret_is_an_error_and_nothing_is_written(tmp_path, run_cli):
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    (assets / "pki/apiserver.key").write_bytes((assets / "pki/front-proxy-client.key").read_bytes())
    os.remove(assets / "nodes/w1/ignition.json")
    before = tree(assets)
    result = run_cli("render", EXAMPLE, "-o", assets)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "apiserver.key" in result.err
    assert tree(assets) == before
    (assets / "pki/apiserver.key").write_text("-----BEGIN " + "PRIVATE KEY-----\nnot base64\n-----END " + "PRIVATE KEY-----\n")
    result = run_cli("render", EXAMPLE, "-o", assets)
    assert result.code == 2 and "apiserver.key" in result.err
    assert "not base64" not in result.err


def test_removed_node_configs_are_removed_and_reported(tmp_path, run_cli, example_text):
    assets = tmp_path / "assets"
    # Without the example's components: its data array needs a worker.
    assert run_cli("render", write_cluster(tmp_path, BASE_EXAMPLE_TEXT, "base.yaml"), "-o", assets).code == 0
    text = BASE_EXAMPLE_TEXT.replace('        - {name: w1, mac: "52:54:00:00:00:21", address: 10.213.0.21, installDisk: /dev/nvme0n1}\n', "")
    text = text.replace("      nodes:\n", "      nodes: []\n")
    result = run_cli("render", write_cluster(tmp_path, text), "-o", assets)
    assert result.code == 0, result.err
    assert "- nodes/w1/ignition.json" in result.out
    assert not (assets / "nodes/w1").exists()
    assert (assets / "wireguard/w1.key").exists()  # keys are never deleted


def test_debian_nodes_get_cloud_configs_that_cloud_init_accepts(tmp_path, run_cli, example_text):
    cloud_init = require_tool("cloud-init")
    text = BASE_EXAMPLE_TEXT.replace("    family: lab\n", "    family: debian\n")
    assets = tmp_path / "assets"
    result = run_cli("render", write_cluster(tmp_path, text), "-o", assets)
    assert result.code == 0, result.err
    for name in ("c1", "w1"):
        path = assets / f"nodes/{name}/cloud-config.yaml"
        check = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        document = yaml.safe_load(path.read_text())
        written = {entry["path"] for entry in document["write_files"]}
        assert "/etc/kubernetes/pki/ca.crt" in written
        assert ("/etc/kubernetes/pki/ca.key" in written) == (name == "c1")
        assert "/etc/systemd/system/kubelet.service" in written


def test_render_without_permission_to_write_is_a_clean_error(tmp_path, run_cli):
    if os.geteuid() == 0:
        # root ignores permission bits; a path through a regular file fails for everyone.
        blocker = tmp_path / "file"
        blocker.write_text("x")
        result = run_cli("render", EXAMPLE, "-o", blocker / "assets")
    else:
        result = run_cli("render", EXAMPLE, "-o", "/proc/assets")
    assert result.code == 2
    assert "cannot create the assets directory" in result.err
    assert "Traceback" not in result.err


def test_flatcar_nodes_fetch_the_built_sysext_images_by_their_sha512(tmp_path, run_cli, example_text):
    from stellwerk.ignition.model import loads

    text = example_text.replace("    family: lab\n", "    family: flatcar\n").replace(
        "    sysextBaseURL: http://10.213.0.1:8080/assets/sysext\n", "    sysextBaseURL: http://10.0.0.2:8080/assets/sysext/\n")
    cluster = write_cluster(tmp_path, text)
    assets = tmp_path / "assets"
    # Without the images, render names what is missing and the command that builds it, and writes no config.
    missing = run_cli("render", cluster, "-o", assets)
    assert missing.code == 2 and "Traceback" not in missing.err
    assert "the nodes need the etcd sysext image (etcd 3.5.16)" in missing.err
    assert f"run `stellwerk images sysext {cluster} -o {assets}`" in missing.err
    assert not (assets / "nodes").exists()

    built = {line.split()[1].rsplit("/", 1)[1]: line for line in build_images(cluster, assets)[:-1]}
    result = run_cli("render", cluster, "-o", assets)
    assert result.code == 0, result.err
    controller = loads((assets / "nodes/c1/ignition.json").read_bytes())
    worker = loads((assets / "nodes/w1/ignition.json").read_bytes())
    fetched = {f.path: f for f in controller.files if f.source}
    assert len(fetched) == 2 and set(built) == {Path(path).name for path in fetched}
    for path, file in fetched.items():
        image = assets / "boot/sysext" / Path(path).name
        assert file.source == f"http://10.0.0.2:8080/assets/sysext/{image.name}"
        assert file.verification == "sha512-" + hashlib.sha512(image.read_bytes()).hexdigest()
    links = {link.path: link.target for link in controller.links}
    assert {links["/etc/extensions/etcd.raw"], links["/etc/extensions/kubernetes.raw"]} == set(fetched)
    # Flatcar's own reboot manager stays off: uncoordinated reboots can cost etcd its quorum.
    assert [(u.name, u.mask) for u in controller.units if u.name == "locksmithd.service"] == [("locksmithd.service", True)]
    # Workers run no etcd, so they do not download it.
    assert [Path(f.path).name for f in worker.files if f.source] == [n for n in built if n.startswith("kubernetes-")]
    for name in ("c1", "w1"):
        validate((assets / f"nodes/{name}/ignition.json").read_bytes())

    # An image changed after it was built is never handed to a node.
    kubernetes = next(assets.glob("boot/sysext/kubernetes-*.raw"))
    kubernetes.write_bytes(kubernetes.read_bytes() + b"\0")
    changed = run_cli("render", cluster, "-o", assets)
    assert changed.code == 2 and f"{kubernetes}: its sha512 is not the one recorded" in changed.err


def test_flatcar_clusters_must_say_where_their_sysext_images_are_served(tmp_path, run_cli, example_text):
    text = example_text.replace("    family: lab\n", "    family: flatcar\n")
    cluster = write_cluster(tmp_path, text.replace("    sysextBaseURL: http://10.213.0.1:8080/assets/sysext\n", ""))
    result = run_cli("validate", cluster)
    assert result.code == 2 and "spec.os.sysextBaseURL" in result.err and "/assets/sysext" in result.err


def test_snippet_that_conflicts_with_stellwerks_files_is_a_located_error(tmp_path, run_cli, example_text):
    text = example_text.replace("    nodes: {}\n", "    nodes:\n      w1:\n        - storage: {directories: [{path: /etc/hostname}]}\n")
    cluster = write_cluster(tmp_path, text)
    assert run_cli("validate", cluster).code == 0
    result = run_cli("render", cluster, "-o", tmp_path / "assets")
    assert result.code == 2
    assert result.err.startswith(f"{cluster}: spec.snippets: node w1: ")
    assert "/etc/hostname" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "assets/nodes").exists()


def test_assets_directory_safety(tmp_path, run_cli, example_text):
    # A directory of unrelated files is never rendered into.
    foreign = tmp_path / "foreign"
    (foreign / "manifests/app").mkdir(parents=True)
    (foreign / "manifests/app/deploy.yaml").write_text("mine\n")
    result = run_cli("render", EXAMPLE, "-o", foreign)
    assert result.code == 2 and "holds no Stellwerk assets" in result.err
    assert sorted(p.name for p in foreign.rglob("*")) == ["app", "deploy.yaml", "manifests"]
    # Another cluster's assets are never reused or replaced.
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    other = write_cluster(tmp_path, example_text.replace("  name: lab\n", "  name: other\n"))
    result = run_cli("render", other, "-o", assets)
    assert result.code == 2 and "holds the assets of cluster 'lab'" in result.err
    # Files the operator put beside Stellwerk's are never removed.
    (assets / "manifests/extra").mkdir()
    (assets / "manifests/extra/keep.yaml").write_text("keep\n")
    (assets / "nodes/notes.txt").write_text("keep\n")
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    assert (assets / "manifests/extra/keep.yaml").exists() and (assets / "nodes/notes.txt").exists()


def test_derived_directories_do_not_follow_the_umask(tmp_path, run_cli):
    old = os.umask(0)
    try:
        assert run_cli("render", EXAMPLE, "-o", tmp_path / "assets").code == 0
    finally:
        os.umask(old)
    for directory in [tmp_path / "assets", *(p for p in (tmp_path / "assets").rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory


def test_a_symlinked_derived_tree_is_refused(tmp_path, run_cli):
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "vmlinuz").write_text("kernel\n")
    import shutil

    shutil.rmtree(assets / "manifests")
    (assets / "manifests").symlink_to(elsewhere)
    result = run_cli("render", EXAMPLE, "-o", assets)
    assert result.code == 2 and "is a symbolic link" in result.err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["vmlinuz"]


def test_render_writes_the_netboot_machine_store(rendered):
    profiles = sorted((rendered / "netboot/profiles").glob("*.json"))
    assert [p.name for p in profiles] == ["lab.json"]
    profile = json.loads(profiles[0].read_text())
    assert profile["config"] == "ignition" and profile["kernel"].startswith("/assets/")
    for name, mac in (("c1", "52:54:00:00:00:11"), ("w1", "52:54:00:00:00:21")):
        group = json.loads((rendered / f"netboot/groups/{name}.json").read_text())
        assert group["selector"] == {"mac": mac}
        assert group["profile"] == "lab"
        assert group["metadata"]["node"] == name
        assert (rendered / f"nodes/{group['metadata']['node']}/ignition.json").exists()


@pytest.mark.parametrize("links_before_crash", [1, 7, 30, 40])
def test_a_first_render_interrupted_while_writing_secrets_recovers_on_the_next(tmp_path, run_cli, monkeypatch,
                                                                                 links_before_crash):
    """Kill the first write of secrets after some hard links (as a power cut would); the next render must
    not demand a 'restore from backup' for files that never were complete."""
    real_link = os.link
    calls = {"n": 0}

    def link_then_crash(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > links_before_crash:
            raise KeyboardInterrupt("simulated crash")
        return real_link(src, dst, *args, **kwargs)

    assets = tmp_path / "assets"
    from stellwerk.render import render

    monkeypatch.setattr(os, "link", link_then_crash)
    with pytest.raises(KeyboardInterrupt):
        render(EXAMPLE, assets)
    monkeypatch.setattr(os, "link", real_link)
    assert any(assets.rglob(".stellwerk-pending.json"))
    result = run_cli("render", EXAMPLE, "-o", assets)
    assert result.code == 0, result.err
    assert not any(assets.rglob(".stellwerk-pending.json"))
    openssl = require_tool("openssl")
    check = subprocess.run([openssl, "verify", "-CAfile", str(assets / "pki/ca.crt"), str(assets / "pki/apiserver.crt")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_lost_wireguard_public_key_is_derived_again_from_its_private_key(tmp_path, run_cli):
    wg = require_tool("wg")
    assets = tmp_path / "assets"
    assert run_cli("render", EXAMPLE, "-o", assets).code == 0
    private = (assets / "wireguard/w1.key").read_text()
    (assets / "wireguard/w1.pub").unlink()
    result = run_cli("render", EXAMPLE, "-o", assets)
    assert result.code == 0, result.err
    assert "+ wireguard/w1.pub" in result.out
    assert (assets / "wireguard/w1.key").read_text() == private
    derived = subprocess.run([wg, "pubkey"], input=private, capture_output=True, text=True, check=True).stdout
    assert (assets / "wireguard/w1.pub").read_text() == derived
    assert stat.S_IMODE((assets / "wireguard/w1.pub").stat().st_mode) == 0o644
    (assets / "wireguard/w1.key").unlink()  # the private key cannot be derived: that stays an error
    result = run_cli("render", EXAMPLE, "-o", assets)
    assert result.code == 2 and "wireguard/w1.key: missing while w1.pub exists" in result.err


def test_lab_nodes_get_the_state_filesystem_on_their_install_disk_and_flatcar_nodes_do_not(rendered, tmp_path):

    for node in ("c1", "w1"):
        config = json.loads((rendered / f"nodes/{node}/ignition.json").read_bytes())
        assert {"device": "/dev/nvme0n1", "format": "ext4", "wipeFilesystem": True, "label": "stellwerk-state"} \
            in config["storage"]["filesystems"]
    render_flatcar(REPO / "examples/rack-cluster.yaml", tmp_path / "rack")
    for config in (tmp_path / "rack/nodes").glob("*/ignition.json"):
        labels = [fs.get("label") for fs in json.loads(config.read_bytes())["storage"].get("filesystems", [])]
        assert "stellwerk-state" not in labels


def test_the_lock_file_reads_back_as_a_typed_document(tmp_path):
    from stellwerk.base.errors import UserError
    from stellwerk.lockfile import read_lock
    from stellwerk.render import render

    render(EXAMPLE, tmp_path / "assets")
    lock = read_lock(tmp_path / "assets")
    assert str(lock.spec.network.node_cidr) == "10.213.0.0/24" and str(lock.resolved.dns_service_ip) == "10.3.0.10"
    assert [node.name for node in lock.resolved.nodes] == ["c1", "c2", "c3", "w1"]
    path = tmp_path / "assets" / "cluster.lock.yaml"
    path.write_text(path.read_text().replace("nodeCIDR: 10.213.0.0/24", "nodeCIDR: not-a-network"))
    with pytest.raises(UserError) as broken:
        read_lock(tmp_path / "assets")
    assert str(broken.value.problems[0]).startswith(f"{path}: spec.network.nodeCIDR: ")
    assert "run 'stellwerk render' again" in str(broken.value.problems[0])
