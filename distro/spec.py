"""The cluster file: typed model, defaults and field-level validation.

Defaults live next to the field they belong to, so `stellwerk schema`, the docs
and the lock file all tell the same story. Checks that involve several fields
(duplicates, overlapping networks, quorum) live in `validation`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, create_model

from . import release
from .base.types import Location, Role
from .spectypes import (
    CIDR,
    IPv4,
    MAC,
    DNSLabel,
    Duration,
    Endpoint,
    KubernetesVersion,
    LabelKey,
    LabelValue,
    OSVersion,
    SSHKey,
    StrictModel,
    BaseURL,
    DNSSubdomain,
)

API_VERSION = "stellwerk.dev/v1alpha1"

class Metadata(StrictModel):
    name: DNSLabel = Field(description="Cluster name; names the assets directory and the etcd cluster token.")


class Kubernetes(StrictModel):
    version: KubernetesVersion = Field(release.KUBERNETES_VERSION, description="Kubernetes release, MAJOR.MINOR.PATCH.")
    api_endpoint: Endpoint = Field(description="DNS name or IP that clients and kubelets use to reach the apiserver.")
    pod_cidr: CIDR = Field(ipaddress.IPv4Network("10.2.0.0/16"), alias="podCIDR", description="Pod network.")
    service_cidr: CIDR = Field(
        ipaddress.IPv4Network("10.3.0.0/16"), alias="serviceCIDR",
        description="Service network; its first address is the kubernetes service, its tenth the cluster DNS.",
    )
    cluster_domain: DNSSubdomain = Field("cluster.local", description="Cluster DNS domain.")
    network: Literal["calico", "none"] = Field(
        "calico",
        description="The pod network: calico installs Calico from its pinned upstream manifest (fetch it with "
        "`stellwerk components fetch`) with this cluster's podCIDR; none installs no network, for operators who "
        "bring their own (nodes stay NotReady until it runs). Host protection needs calico.",
    )


class OS(StrictModel):
    family: Literal["flatcar", "lab", "debian"] = Field(
        "flatcar",
        description="flatcar and lab hosts get Ignition configs; debian hosts get cloud-init configs.",
    )
    channel: Literal["stable", "beta", "alpha", "lts"] = Field(release.FLATCAR_CHANNEL, description="Flatcar release channel.")
    version: OSVersion = Field(release.FLATCAR_VERSION, description="OS release, or 'current'.")
    sysext_base_url: BaseURL | None = Field(
        None, alias="sysextBaseURL",
        description="Flatcar only, and required there: the folder the nodes fetch their kubernetes and etcd "
        "systemd-sysext images from, as built by `stellwerk images sysext`: netboot's "
        f"http://NETBOOT-ADDRESS:PORT{release.SYSEXT_SERVED_PATH}, or a copy of that folder. Every image is "
        "checked by its sha512.",
    )


class SSH(StrictModel):
    authorized_keys: list[SSHKey] = Field(default_factory=list, description="Public keys for user core.")


class PKIOptions(StrictModel):
    key_algorithm: Literal["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"] = Field(
        "ecdsa-p256", description="Algorithm for every private key of the cluster PKI."
    )
    ca_validity: Duration = Field("87600h", validate_default=True, description="Lifetime of the CAs (default 10 years).")
    cert_validity: Duration = Field("8760h", validate_default=True, description="Lifetime of leaf certificates (default 1 year).")


class WireGuard(StrictModel):
    enabled: bool = Field(True, description="Build the wg0 mesh between all nodes.")
    port: int = Field(51871, ge=1, le=65535, description="UDP port of wg0 on every node.")
    network: CIDR = Field(
        ipaddress.IPv4Network("10.250.0.0/24"),
        description="Mesh network; each node's mesh address has the same host part as its node address.",
    )
    persistent_keepalive: int = Field(25, ge=0, le=65535, description="Seconds between keepalives; 0 disables them.")


class Network(StrictModel):
    node_cidr: CIDR = Field(alias="nodeCIDR", description="The network the nodes' addresses are in.")
    gateway: IPv4 | None = Field(None, description="Default gateway; none means no default route is configured.")
    dns: list[IPv4] = Field(default_factory=list, description="DNS resolvers for the nodes.")
    mtu: int = Field(1500, ge=1280, le=9216, description="MTU of the node network.")
    management_cidrs: list[CIDR] = Field(
        default_factory=list, alias="managementCIDRs",
        description="Networks allowed to reach ssh and the apiserver (used by host protection).",
    )
    ntp: list[Endpoint] = Field(default_factory=list, description="NTP servers; empty keeps the OS default.")


class Taint(StrictModel):
    key: LabelKey
    value: LabelValue = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Node(StrictModel):
    name: DNSLabel
    mac: MAC = Field(description="MAC address of the boot interface; it also selects the node's network config.")
    address: IPv4 = Field(description="Static address of the node in nodeCIDR.")
    install_disk: str = Field("/dev/sda", pattern=r"^/dev/\S+$", description="Disk the OS is installed on.")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, description="Extra labels for this node.")


class WorkerPool(StrictModel):
    name: DNSLabel
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, description="Labels for every node of the pool.")
    taints: list[Taint] = Field(default_factory=list, description="Taints for every node of the pool.")
    nodes: list[Node] = Field(default_factory=list)


# Every controller carries it, so that workloads stay off the control plane unless they tolerate it.
CONTROL_PLANE_TAINT = Taint(key="node-role.kubernetes.io/control-plane", value="", effect="NoSchedule")


@dataclass(frozen=True)
class SpecNode:
    """A node as the cluster file declares it: where it is, its role and pool, and the taints that come with them.
    The one walk over every node that checks use (and the plan derives its NodePlans from)."""

    location: Location
    node: Node
    role: Role
    pool: WorkerPool | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def taints(self) -> tuple[Taint, ...]:
        return (CONTROL_PLANE_TAINT,) if self.role == "controller" else tuple(self.pool.taints if self.pool else ())


def _snippet(value: Any) -> Any:
    if isinstance(value, dict) or (isinstance(value, str) and value.strip()):
        return value
    raise ValueError("a snippet is inline Butane YAML (a mapping) or the path of a Butane file (a string)")


Snippet = Annotated[Any, AfterValidator(_snippet), WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "string"}]})]


class Snippets(StrictModel):
    """Butane (flatcar 1.0.0) snippets merged into node configs, in the order all, role, pool, node.

    Each item is either inline Butane YAML or a path to a Butane file, relative to the cluster file.
    """

    all: list[Snippet] = Field(default_factory=list)
    controllers: list[Snippet] = Field(default_factory=list)
    workers: list[Snippet] = Field(default_factory=list)
    pools: dict[str, list[Snippet]] = Field(default_factory=dict)
    nodes: dict[str, list[Snippet]] = Field(default_factory=dict)


def _components_model() -> type[StrictModel]:
    """spec.components: one optional field per component module, built from the registry."""
    from .components import COMPONENTS

    fields: dict[str, Any] = {component.field: (component.options | None,
                                                Field(None, alias=component.key, description=component.summary))
                              for component in COMPONENTS}
    return create_model("Components", __base__=StrictModel, __doc__="Optional cluster components.", **fields)


Components = _components_model()


class ClusterSpecBody(StrictModel):
    kubernetes: Kubernetes
    os: OS = Field(default_factory=OS)
    ssh: SSH = Field(default_factory=SSH)
    pki: PKIOptions = Field(default_factory=PKIOptions)
    wireguard: WireGuard = Field(default_factory=WireGuard)
    network: Network
    controllers: list[Node] = Field(min_length=1, description="Control-plane nodes; an odd number, for etcd quorum.")
    worker_pools: list[WorkerPool] = Field(default_factory=list)
    snippets: Snippets = Field(default_factory=Snippets)
    components: Components = Field(default_factory=Components)

    def nodes(self) -> tuple[SpecNode, ...]:
        """Every node, controllers first, then each pool's in file order."""
        found = [SpecNode(("spec", "controllers", index), node, "controller")
                 for index, node in enumerate(self.controllers)]
        for pool_index, pool in enumerate(self.worker_pools):
            found += [SpecNode(("spec", "workerPools", pool_index, "nodes", index), node, "worker", pool)
                      for index, node in enumerate(pool.nodes)]
        return tuple(found)


class Cluster(StrictModel):
    api_version: Literal["stellwerk.dev/v1alpha1"] = Field(description=f"Always {API_VERSION}.")
    kind: Literal["Cluster"]
    metadata: Metadata
    spec: ClusterSpecBody


def json_schema() -> dict[str, Any]:
    schema = Cluster.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Stellwerk cluster file"
    return schema
