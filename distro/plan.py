"""From a validated cluster file to the facts every later stage works from.

The plan resolves what the file leaves implicit: each node's role and pool,
its mesh address, its labels and taints, the well-known service addresses,
and which snippets apply to it, in merge order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .spec import Cluster, Node, Taint
from .base.types import Location, Role

ROLE_LABEL = "node.stellwerk.dev/role"
POOL_LABEL = "node.stellwerk.dev/pool"



@dataclass(frozen=True)
class NodePlan:
    name: str
    role: Role
    pool: str | None
    mac: str
    address: ipaddress.IPv4Address
    prefix_length: int
    mesh_address: ipaddress.IPv4Address | None
    install_disk: str
    labels: tuple[tuple[str, str], ...]
    taints: tuple[Taint, ...]
    snippets: tuple[tuple[Location, object], ...]

    @property
    def is_controller(self) -> bool:
        return self.role == "controller"


@dataclass(frozen=True)
class Plan:
    cluster: Cluster
    base_dir: Path
    nodes: tuple[NodePlan, ...]

    @property
    def name(self) -> str:
        return self.cluster.metadata.name

    @property
    def spec(self):
        return self.cluster.spec

    @property
    def controllers(self) -> tuple[NodePlan, ...]:
        return tuple(node for node in self.nodes if node.is_controller)

    @property
    def workers(self) -> tuple[NodePlan, ...]:
        return tuple(node for node in self.nodes if not node.is_controller)

    @property
    def api_service_ip(self) -> ipaddress.IPv4Address:
        return self.spec.kubernetes.service_cidr.network_address + 1

    @property
    def dns_service_ip(self) -> ipaddress.IPv4Address:
        return self.spec.kubernetes.service_cidr.network_address + 10

    @property
    def api_server_url(self) -> str:
        endpoint = self.spec.kubernetes.api_endpoint
        host = f"[{endpoint}]" if ":" in endpoint else endpoint
        return f"https://{host}:6443"

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def make_plan(cluster: Cluster, base_dir: Path) -> Plan:
    nodes = [_node_plan(cluster, found.node, found.role, found.pool.name if found.pool else None,
                        found.pool.labels if found.pool else {}, found.taints) for found in cluster.spec.nodes()]
    return Plan(cluster=cluster, base_dir=base_dir, nodes=tuple(nodes))


def mesh_address(cluster: Cluster, address: ipaddress.IPv4Address) -> ipaddress.IPv4Address | None:
    """The node's wg0 address: the WireGuard network plus the node address's host part.

    Deriving it (rather than numbering nodes in file order) keeps every mesh
    address stable when nodes are added, removed or reordered.
    """
    wireguard = cluster.spec.wireguard
    if not wireguard.enabled:
        return None
    node_cidr = cluster.spec.network.node_cidr
    host_part = int(address) - int(node_cidr.network_address)
    return wireguard.network.network_address + host_part


def _node_plan(
    cluster: Cluster, node: Node, role: Role, pool: str | None, pool_labels: dict[str, str], taints: tuple[Taint, ...]
) -> NodePlan:
    labels = {ROLE_LABEL: role, **({POOL_LABEL: pool} if pool else {}), **pool_labels, **node.labels}
    return NodePlan(
        name=node.name,
        role=role,
        pool=pool,
        mac=node.mac,
        address=node.address,
        prefix_length=cluster.spec.network.node_cidr.prefixlen,
        mesh_address=mesh_address(cluster, node.address),
        install_disk=node.install_disk,
        labels=tuple(sorted(labels.items())),
        taints=taints,
        snippets=_snippets_for(cluster, node.name, role, pool),
    )


def _snippets_for(cluster: Cluster, name: str, role: Role, pool: str | None) -> tuple[tuple[Location, object], ...]:
    snippets = cluster.spec.snippets
    base: Location = ("spec", "snippets")
    role_group = "controllers" if role == "controller" else "workers"
    ordered: list[tuple[Location, object]] = []
    ordered += [((*base, "all", i), item) for i, item in enumerate(snippets.all)]
    ordered += [((*base, role_group, i), item) for i, item in enumerate(getattr(snippets, role_group))]
    if pool is not None:
        ordered += [((*base, "pools", pool, i), item) for i, item in enumerate(snippets.pools.get(pool, []))]
    ordered += [((*base, "nodes", name, i), item) for i, item in enumerate(snippets.nodes.get(name, []))]
    return tuple(ordered)
