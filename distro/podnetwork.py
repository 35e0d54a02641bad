"""The pod network, chosen by `kubernetes.network`: Calico from its pinned upstream manifest, or none.

With `calico`, manifests/cluster-addons/ starts with the `kubernetes-services-endpoint` ConfigMap and then Calico's
manifest, with the cluster's pod network and node-address method set in calico-node. The ConfigMap makes calico-node
reach the apiserver by the cluster's API endpoint instead of the `kubernetes` Service address, so the pod network
does not wait for kube-proxy to program Services.
With `none`, the operator installs a network of their own; nodes stay NotReady until they do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import Plan

CALICO = "calico"
SERVICES_ENDPOINT = "kubernetes-services-endpoint"


def upstream_names(network: str) -> tuple[str, ...]:
    """The pinned upstream manifests the pod network is installed from (keys of release.UPSTREAM)."""
    return (CALICO,) if network == CALICO else ()


def objects(plan: Plan) -> list[dict[str, Any]]:
    """Stellwerk's own objects for the pod network, applied before its upstream manifest."""
    if plan.spec.kubernetes.network != CALICO:
        return []
    endpoint = plan.spec.kubernetes.api_endpoint
    return [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": SERVICES_ENDPOINT, "namespace": "kube-system"},
        # calico-node's upgrade-ipam, install-cni and calico-node containers read it through envFrom.
        "data": {"KUBERNETES_SERVICE_HOST": endpoint, "KUBERNETES_SERVICE_PORT": "6443"},
    }]


# Without these Calico allocates pods from 192.168.0.0/16 (not the cluster's podCIDR, which kube-proxy and the
# host policy's pod rule use) and may pick the wg0 address as the node's own.
def calico_node_environment(plan: Plan) -> dict[str, str]:
    return {
        "CALICO_IPV4POOL_CIDR": str(plan.spec.kubernetes.pod_cidr),
        "IP_AUTODETECTION_METHOD": "kubernetes-internal-ip",
    }


def adjust_upstream(name: str, documents: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The pinned manifest with the cluster's values set in the calico-node DaemonSet; the rest as upstream has it."""
    if name != CALICO:
        return documents
    for document in documents:
        if document.get("kind") == "DaemonSet" and document.get("metadata", {}).get("name") == "calico-node":
            for container in document["spec"]["template"]["spec"]["containers"]:
                if container.get("name") == "calico-node":
                    _set_environment(container, calico_node_environment(plan))
                    return documents
    raise ValueError("the pinned calico manifest has no calico-node DaemonSet with a calico-node container")


def _set_environment(container: dict[str, Any], values: dict[str, str]) -> None:
    env = container.setdefault("env", [])
    for key, value in values.items():
        entry = next((item for item in env if item.get("name") == key), None)
        if entry is None:
            env.append({"name": key, "value": value})
        else:
            entry.clear()
            entry.update({"name": key, "value": value})
