"""`kubernetes.network`: Calico from its real pinned manifest by default, with or without host protection, or none."""

from __future__ import annotations

from pathlib import Path

import yaml

from support.clusters import line_of, write_cluster
from support.k8s_schemas import validate_object
from support.paths import BASE_EXAMPLE_TEXT, SHARED

ADDONS = "manifests/cluster-addons"
NETWORK_NONE = BASE_EXAMPLE_TEXT.replace("    clusterDomain: cluster.local\n",
                                         "    clusterDomain: cluster.local\n    network: none\n")


def fetch_and_render(run_cli, tmp_path: Path, text: str) -> tuple[Path, str]:
    """The cluster fetched from the shared mirror of the pinned manifests, then rendered; assets and fetch output."""
    path = write_cluster(tmp_path, text)
    cache = tmp_path / "cache"
    fetched = run_cli("components", "fetch", path, "--mirror", SHARED / "upstream", "--cache-dir", cache)
    assert fetched.code == 0, fetched.out + fetched.err
    rendered = run_cli("render", path, "--output", tmp_path / "assets", "--cache-dir", cache)
    assert rendered.code == 0, rendered.out + rendered.err
    return tmp_path / "assets", fetched.out


def test_calico_is_the_default_network_without_host_protection(run_cli, tmp_path):
    assert "components:" not in BASE_EXAMPLE_TEXT and "network: calico" not in BASE_EXAMPLE_TEXT
    assets, fetched = fetch_and_render(run_cli, tmp_path, BASE_EXAMPLE_TEXT)
    assert "calico" in fetched
    names = sorted(p.name for p in (assets / ADDONS).iterdir())
    assert names[:2] == ["00-configmap-kubernetes-services-endpoint.yaml", "01-upstream-calico.yaml"]
    # kube-proxy and CoreDNS come after the network they run on.
    assert all(name[:2] > "01" for name in names[2:]) and any("kube-proxy" in name for name in names[2:])
    assert not (assets / "manifests/hostProtection").exists()

    endpoint = yaml.safe_load((assets / ADDONS / names[0]).read_text())
    validate_object(endpoint, "1.31.4")
    assert endpoint["data"] == {"KUBERNETES_SERVICE_HOST": "api.lab.example", "KUBERNETES_SERVICE_PORT": "6443"}

    documents = [d for d in yaml.safe_load_all((assets / ADDONS / names[1]).read_text()) if d]
    node = next(d for d in documents if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "calico-node")
    pod = node["spec"]["template"]["spec"]
    readers = {c["name"] for c in pod["initContainers"] + pod["containers"]
               for source in c.get("envFrom", []) if source.get("configMapRef", {}).get("name") == endpoint["metadata"]["name"]}
    # The pinned manifest reads the ConfigMap by that name, in the namespace it is rendered in.
    assert {"install-cni", "calico-node"} <= readers
    assert node["metadata"]["namespace"] == endpoint["metadata"]["namespace"]
    env = {e["name"]: e.get("value") for e in next(c for c in pod["containers"] if c["name"] == "calico-node")["env"]}
    assert env["CALICO_IPV4POOL_CIDR"] == "10.2.0.0/16"
    assert env["IP_AUTODETECTION_METHOD"] == "kubernetes-internal-ip"
    upstream = [d for d in yaml.safe_load_all((SHARED / "upstream/calico.yaml").read_text()) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [(d["kind"], d["metadata"]["name"]) for d in upstream]


def test_network_none_installs_and_fetches_nothing_for_a_network(run_cli, tmp_path):
    assets, fetched = fetch_and_render(run_cli, tmp_path, NETWORK_NONE)
    assert "nothing to fetch" in fetched
    names = sorted(p.name for p in (assets / ADDONS).iterdir())
    assert not [name for name in names if "calico" in name or "services-endpoint" in name]
    assert names[0].startswith("00-") and any("kube-proxy" in name for name in names)
    lock = yaml.safe_load((assets / "cluster.lock.yaml").read_text())
    assert lock["spec"]["kubernetes"]["network"] == "none"


def test_calicos_wireguard_ports_are_refused_to_the_mesh_only_when_calico_runs(run_cli, tmp_path):
    clashing = BASE_EXAMPLE_TEXT.replace("    port: 51871\n", "    port: 51820\n")
    path = write_cluster(tmp_path, clashing)
    result = run_cli("validate", path)
    assert result.code == 2 and "Traceback" not in result.err
    assert (f"{path}:{line_of(clashing, 'port: 51820')}: spec.wireguard.port: Calico WireGuard port clash: UDP 51820 "
            "is the port Calico's own WireGuard encryption uses for IPv4") in result.err
    assert "such as 51871" in result.err
    without_calico = NETWORK_NONE.replace("    port: 51871\n", "    port: 51820\n")
    assert run_cli("validate", write_cluster(tmp_path, without_calico, "none.yaml")).code == 0


def test_an_unknown_network_is_a_located_error(run_cli, tmp_path):
    text = NETWORK_NONE.replace("network: none", "network: flannel")
    path = write_cluster(tmp_path, text)
    result = run_cli("validate", path)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{path}:{line_of(text, 'network: flannel')}: spec.kubernetes.network: 'flannel' is not allowed" in result.err
