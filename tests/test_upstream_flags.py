"""Every flag Stellwerk gives a Kubernetes binary or etcd, and every KubeletConfiguration field it writes, exists in
the upstream release it runs: no server binary reaches this machine, so the proof is against the flag lists of the
pinned releases, kept as data in tests/data/upstream/ with where each was taken from (see its README.md)."""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from stellwerk.ignition.model import decode_data_url
from support.clusters import write_cluster
from support.paths import EXAMPLE

DATA = Path(__file__).resolve().parent / "data" / "upstream"
VERSIONS = ("1.29.0", "1.30.0", "1.31.4", "1.32.0")  # each supported minor; 1.31.4 is the release's default
ETCD_VERSION = "3.5.16"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Deprecated flags Stellwerk still gives, each with why; any other deprecated flag fails.
DEPRECATED_ON_PURPOSE = {
    ("kubelet", "register-with-taints"): "taints differ per pool, and the KubeletConfiguration is shared per role",
}


@cache
def upstream(binary: str, version: str) -> dict:
    return json.loads((DATA / f"{binary}-v{version}.json").read_text())


def unknown_flags(binary: str, version: str, arguments: list[str]) -> list[str]:
    """The flags among `arguments` that `binary` at `version` does not accept (names as written, dashes dropped)."""
    known = set(upstream(binary, version)["flags"])
    names = [argument[2:].split("=", 1)[0] for argument in arguments if argument.startswith("--")]
    return [name for name in names if name.replace("_", "-") not in known]


def deprecated_flags(binary: str, version: str, arguments: list[str]) -> list[str]:
    deprecated = set(upstream(binary, version)["deprecated"])
    names = [argument[2:].split("=", 1)[0] for argument in arguments if argument.startswith("--")]
    return [name for name in names if name in deprecated and (binary, name) not in DEPRECATED_ON_PURPOSE]


def command_of(unit_text: str, binary: str) -> list[str]:
    """The arguments of the unit's last ExecStart= that runs `binary` (continuation lines joined)."""
    joined = unit_text.replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if line.startswith("ExecStart=") and binary in line]
    return shlex.split(lines[-1][len("ExecStart="):])[1:]


@pytest.fixture(scope="module", params=VERSIONS)
def controller(request, tmp_path_factory) -> tuple[str, dict]:
    """(version, c1's rendered Ignition config) for the lab example at that Kubernetes version."""
    from stellwerk.render import render

    work = tmp_path_factory.mktemp(f"k8s-{request.param}")
    text = EXAMPLE.read_text().replace('version: "1.31.4"', f'version: "{request.param}"')
    assert f'version: "{request.param}"' in text
    render(write_cluster(work, text), work / "assets")
    return request.param, json.loads((work / "assets/nodes/c1/ignition.json").read_text()), work / "assets"


def files_of(config: dict) -> dict[str, bytes]:
    return {entry["path"]: decode_data_url(entry["contents"]["source"]) for entry in config["storage"]["files"]
            if entry.get("contents", {}).get("source", "").startswith("data:")}


def units_of(config: dict) -> dict[str, str]:
    found = {}
    for unit in config["systemd"]["units"]:
        found[unit["name"]] = unit.get("contents", "")
        for dropin in unit.get("dropins", []):
            found[f"{unit['name']}/{dropin['name']}"] = dropin["contents"]
    return found


def test_control_plane_flags_exist_in_the_release(controller):
    version, config, _ = controller
    files = files_of(config)
    for binary in CONTROL_PLANE:
        pod = yaml.safe_load(files[f"/etc/kubernetes/manifests/{binary}.yaml"])
        command = pod["spec"]["containers"][0]["command"]
        assert command[0] == binary
        assert unknown_flags(binary, version, command[1:]) == [], f"{binary} v{version}"
        assert deprecated_flags(binary, version, command[1:]) == [], f"{binary} v{version}"


def test_kubelet_flags_exist_in_the_release(controller):
    version, config, _ = controller
    arguments = command_of(units_of(config)["kubelet.service/20-stellwerk.conf"], "/usr/bin/kubelet")
    assert len(arguments) > 3
    assert unknown_flags("kubelet", version, arguments) == []
    assert deprecated_flags("kubelet", version, arguments) == []


def test_etcd_flags_exist_in_the_pinned_etcd(controller):
    from stellwerk import release

    assert release.ETCD_VERSION == ETCD_VERSION  # the list below is for this release; a new pin needs its list
    _, config, _ = controller
    arguments = command_of(units_of(config)["etcd.service"], "/usr/bin/etcd")
    assert len(arguments) > 10
    assert unknown_flags("etcd", ETCD_VERSION, arguments) == []
    assert deprecated_flags("etcd", ETCD_VERSION, arguments) == []


@pytest.mark.parametrize("controller", ["1.31.4"], indirect=True)  # the field list is kept for the default only
def test_kubelet_configuration_fields_exist_in_the_pinned_types(controller):
    _, config, _ = controller
    fields = set(json.loads((DATA / "kubelet-config-v1beta1-v1.31.4.json").read_text())["fields"])
    document = yaml.safe_load(files_of(config)["/etc/kubernetes/kubelet.yaml"])
    assert document["apiVersion"] == "kubelet.config.k8s.io/v1beta1" and document["kind"] == "KubeletConfiguration"
    assert unknown_fields(document, fields) == []


def unknown_fields(document: object, fields: set[str], prefix: str = "") -> list[str]:
    """The dotted paths of `document` that are not among the upstream type's `fields`."""
    if not isinstance(document, dict):
        return [] if prefix in fields else [prefix]
    found = []
    for key, item in document.items():
        path = f"{prefix}.{key}" if prefix else key
        # a map the types hold as map[string]... (evictionHard, say) ends the path at its own name
        if path in fields and not any(f.startswith(path + ".") for f in fields):
            continue
        found += unknown_fields(item, fields, path) if isinstance(item, dict) else ([] if path in fields else [path])
    return found


def kube_proxy_daemon_set(assets: Path) -> dict:
    [path] = (assets / "manifests/cluster-addons").glob("*-daemonset-kube-proxy.yaml")
    return yaml.safe_load(path.read_text())


def test_kube_proxy_flags_exist_in_the_release(controller):
    version, _, assets = controller
    command = kube_proxy_daemon_set(assets)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0].endswith("/kube-proxy") and len(command) > 2
    assert unknown_flags("kube-proxy", version, command[1:]) == []
    assert deprecated_flags("kube-proxy", version, command[1:]) == []


def test_the_check_fails_on_a_flag_the_release_does_not_have():
    # insecure-port was removed in 1.24; a kubelet flag on the apiserver is as wrong
    assert unknown_flags("kube-apiserver", "1.31.4", ["--secure-port=6443", "--insecure-port=0"]) == ["insecure-port"]
    assert unknown_flags("kube-apiserver", "1.31.4", ["--node-labels=a=b"]) == ["node-labels"]
    assert unknown_flags("etcd", ETCD_VERSION, ["--name=c1", "--initial-cluster-stat=new"]) == ["initial-cluster-stat"]
    assert deprecated_flags("kubelet", "1.31.4", ["--pod-infra-container-image=x"]) == ["pod-infra-container-image"]
    assert command_of("ExecStart=\nExecStart=/usr/bin/kubelet \\\n  --a=1 \\\n  --b\n", "/usr/bin/kubelet") == [
        "--a=1", "--b"]


@pytest.mark.parametrize("controller", ["1.31.4"], indirect=True)  # the field list is kept for the default only
def test_kube_proxy_configuration_fields_exist_in_the_pinned_types(controller):
    _, _, assets = controller
    fields = set(json.loads((DATA / "kube-proxy-config-v1alpha1-v1.31.4.json").read_text())["fields"])
    [config_map] = [yaml.safe_load(path.read_text()) for path in
                    (assets / "manifests/cluster-addons").glob("*-configmap-kube-proxy.yaml")]
    document = yaml.safe_load(config_map["data"]["config.conf"])
    assert document["kind"] == "KubeProxyConfiguration"
    assert document["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1"
    assert unknown_fields(document, fields) == []
    # and the check names a field the types do not have, where it is
    assert unknown_fields({**document, "iptables": {"masqueradeAll": True, "snatNodeInternalIP": True}}, fields) == [
        "iptables.snatNodeInternalIP"]
