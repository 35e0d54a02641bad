"""kube-proxy and CoreDNS, the add-ons every cluster runs: valid for the pinned Kubernetes, wired to the cluster's
addresses, and every object they name is rendered or made by Kubernetes itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from support.k8s_schemas import validate_object
from support.paths import EXAMPLE, REPO
from support.sysext import render_flatcar

# Made by the apiserver itself (its bootstrap RBAC and priority classes) or by every cluster from the start.
CREATED_BY_KUBERNETES = {
    ("ClusterRole", "system:node-proxier"), ("ClusterRole", "system:node-bootstrapper"),
    ("ClusterRole", "system:certificates.k8s.io:certificatesigningrequests:nodeclient"),
    ("ClusterRole", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"),
    ("ClusterRole", "cluster-admin"),
    ("PriorityClass", "system-node-critical"), ("PriorityClass", "system-cluster-critical"),
    ("Namespace", "kube-system"),
}


def objects_in(directory: Path) -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))]


@pytest.fixture(scope="module", params=["lab", "rack"])
def assets(request, tmp_path_factory) -> Path:
    from stellwerk.render import render

    out = tmp_path_factory.mktemp(request.param) / "assets"
    if request.param == "lab":
        render(EXAMPLE, out, cache_dir=out.parent / "empty-cache")
    else:
        render_flatcar(REPO / "examples/rack-cluster.yaml", out, cache_dir=out.parent / "empty-cache")
    return out


def by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def test_every_add_on_object_is_valid_for_the_pinned_kubernetes(assets):
    found = objects_in(assets / "manifests/cluster-addons")
    assert {kind for kind, _ in by_kind(found)} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                                                    "DaemonSet", "Deployment", "Service", "PodDisruptionBudget"}
    for obj in found:
        validate_object(obj, "1.31.4")


def test_kube_proxy_reaches_the_api_by_its_endpoint_and_proxies_the_pod_network(assets):
    lock = yaml.safe_load((assets / "cluster.lock.yaml").read_text())
    objects = by_kind(objects_in(assets / "manifests/cluster-addons"))
    data = objects[("ConfigMap", "kube-proxy")]["data"]
    config, kubeconfig = yaml.safe_load(data["config.conf"]), yaml.safe_load(data["kubeconfig.conf"])
    assert config["clusterCIDR"] == lock["spec"]["kubernetes"]["podCIDR"]
    assert config["clientConnection"]["kubeconfig"] == "/var/lib/kube-proxy/kubeconfig.conf"
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    # Never the kubernetes Service: kube-proxy is what makes Service addresses work.
    assert lock["resolved"]["apiServiceIP"] not in server
    assert server == f"https://{lock['spec']['kubernetes']['apiEndpoint']}:6443"
    pod = objects[("DaemonSet", "kube-proxy")]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["containers"][0]["image"] == lock["resolved"]["images"]["kube-proxy"] == \
        "registry.k8s.io/kube-proxy:v1.31.4"


def test_coredns_answers_at_the_address_every_kubelet_is_given_and_survives_one_node(assets):
    lock = yaml.safe_load((assets / "cluster.lock.yaml").read_text())
    objects = by_kind(objects_in(assets / "manifests/cluster-addons"))
    service = objects[("Service", "kube-dns")]
    assert service["spec"]["clusterIP"] == lock["resolved"]["dnsServiceIP"] == "10.3.0.10"
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} >= {(53, "UDP"), (53, "TCP")}
    deployment = objects[("Deployment", "coredns")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == labels == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] >= 2
    [spread] = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["labelSelector"]["matchLabels"] == labels
    tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in tolerations
    budget = objects[("PodDisruptionBudget", "coredns")]
    assert budget["spec"]["selector"]["matchLabels"] == labels and budget["spec"]["minAvailable"] == 1
    corefile = objects[("ConfigMap", "coredns")]["data"]["Corefile"]
    assert f"kubernetes {lock['spec']['kubernetes']['clusterDomain']} in-addr.arpa ip6.arpa" in corefile


def references(obj: dict) -> set[tuple[str, str]]:
    """(kind, name) of every object a workload or binding names."""
    found = set()
    if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
        found.add((obj["roleRef"]["kind"], obj["roleRef"]["name"]))
        found |= {("ServiceAccount", s["name"]) for s in obj["subjects"] if s["kind"] == "ServiceAccount"}
    template = obj.get("spec", {}).get("template", {}).get("spec")
    if template is not None:
        if "serviceAccountName" in template:
            found.add(("ServiceAccount", template["serviceAccountName"]))
        if "priorityClassName" in template:
            found.add(("PriorityClass", template["priorityClassName"]))
        for volume in template.get("volumes", []):
            if "configMap" in volume:
                found.add(("ConfigMap", volume["configMap"]["name"]))
            if "secret" in volume:
                found.add(("Secret", volume["secret"]["secretName"]))
    if "namespace" in obj["metadata"]:
        found.add(("Namespace", obj["metadata"]["namespace"]))
    return found


def missing_references(objects: list[dict]) -> list[str]:
    present = set(by_kind(objects)) | CREATED_BY_KUBERNETES
    return sorted(f"{obj['kind']}/{obj['metadata']['name']} names {kind}/{name}" for obj in objects
                  for kind, name in references(obj) if (kind, name) not in present)


def test_every_object_the_add_ons_and_the_bootstrap_name_is_rendered_or_made_by_kubernetes(assets):
    objects = objects_in(assets / "manifests/cluster-addons") + objects_in(assets / "manifests/bootstrap")
    assert missing_references(objects) == []
    # and the check finds what is missing
    without = [obj for obj in objects if (obj["kind"], obj["metadata"]["name"]) != ("ServiceAccount", "coredns")]
    assert missing_references(without) == ["ClusterRoleBinding/system:coredns names ServiceAccount/coredns",
                                           "Deployment/coredns names ServiceAccount/coredns"]
