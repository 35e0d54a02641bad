"""Cross-field checks on a typed cluster file.

Field-level checks (formats, ranges) are in `spec`; here are the rules that need
the whole file: uniqueness, address plans, quorum and references by name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

from . import release
from .base.errors import Problem
from .snippets import SnippetProblem, load_snippet
from .spec import Cluster
from .base.types import Location
from .yamlsource import SourceMap

# Labels a kubelet may set on its own Node under the reserved kubernetes.io and
# k8s.io namespaces (the NodeRestriction admission plugin rejects the rest).
_KUBELET_ALLOWED_LABELS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
}
_KUBELET_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
# kube-controller-manager's default --node-cidr-mask-size: each node gets a /24 of the pod network.
NODE_POD_PREFIX = 24


def check_cluster(cluster: Cluster, source: SourceMap, base_dir: Path) -> list[Problem]:
    problems = [source.problem(loc, message) for loc, message in _cluster_rules(cluster)]
    problems += _snippet_problems(cluster, source, base_dir)
    problems.sort(key=lambda p: (p.line or 0, p.path))
    return problems


def _cluster_rules(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    yield from _quorum(cluster)
    yield from _uniqueness(cluster)
    yield from _addresses(cluster)
    yield from _networks(cluster)
    yield from _labels(cluster)
    yield from _pod_network(cluster)
    yield from _components(cluster)
    yield from _extensions(cluster)


def _components(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    from .components import COMPONENTS

    from .components.claims import conflicts

    claims = []
    for component in COMPONENTS:
        options = component.options_in(cluster)
        if options is not None:
            yield from component.check(cluster, options)
            if component.claims is not None:
                claims += component.claims(cluster, options)
    yield from conflicts(claims)


def _pod_network(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    spec = cluster.spec
    wireguard = spec.wireguard
    if spec.kubernetes.network == "calico" and wireguard.enabled and wireguard.port in release.CALICO_WIREGUARD_PORTS:
        family = release.CALICO_WIREGUARD_PORTS[wireguard.port]
        yield ("spec", "wireguard", "port"), (
            f"Calico WireGuard port clash: UDP {wireguard.port} is the port Calico's own WireGuard encryption "
            f"uses for {family} (Felix wireguardListeningPort is 51820, wireguardListeningPortV6 51821); the "
            f"day it is switched on, wg0 and Calico fight over the port. Give the mesh another port, such as "
            f"{type(wireguard).model_fields['port'].default}")


def _extensions(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    os = cluster.spec.os
    if os.family in release.SYSEXT_FAMILIES and os.sysext_base_url is None:
        yield ("spec", "os", "sysextBaseURL"), (
            f"{os.family} nodes fetch their binaries (kubelet, etcd) as systemd-sysext images, and this says from "
            "where: set it to "
            f"netboot's http://NETBOOT-ADDRESS:PORT{release.SYSEXT_SERVED_PATH} (build the images with `stellwerk "
            "images sysext`), or to a copy of that folder")


def _quorum(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    count = len(cluster.spec.controllers)
    if count and count % 2 == 0:
        yield ("spec", "controllers"), (
            f"{count} controllers: etcd needs a majority of its members to work, so an even count "
            f"tolerates no more failures than {count - 1} and adds a member that can split the vote; "
            f"use {count - 1} or {count + 1} controllers"
        )


def _uniqueness(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    for attribute in ("name", "mac", "address"):
        first: dict[str, Location] = {}
        for found in cluster.spec.nodes():
            loc, node = found.location, found.node
            value = str(getattr(node, attribute))
            if value in first:
                yield (*loc, attribute), f"{attribute} {value} is already used by {_where(first[value])}; every node needs its own"
            else:
                first[value] = loc
    pools: dict[str, int] = {}
    for index, pool in enumerate(cluster.spec.worker_pools):
        if pool.name in pools:
            yield ("spec", "workerPools", index, "name"), f"pool name {pool.name!r} is already used by workerPools[{pools[pool.name]}]"
        else:
            pools[pool.name] = index


def _where(loc: Location) -> str:
    if loc[1] == "controllers":
        return f"controllers[{loc[2]}]"
    return f"workerPools[{loc[2]}].nodes[{loc[4]}]"


def _addresses(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    network = cluster.spec.network
    cidr = network.node_cidr
    reserved = {cidr.network_address, cidr.broadcast_address} if cidr.prefixlen < 31 else set()
    for found in cluster.spec.nodes():
        loc, node = found.location, found.node
        if node.address not in cidr:
            yield (*loc, "address"), f"{node.address} is outside network.nodeCIDR {cidr}; use an address in it or widen nodeCIDR"
        elif node.address in reserved:
            yield (*loc, "address"), f"{node.address} is the network or broadcast address of {cidr}; pick a host address"
        elif network.gateway is not None and node.address == network.gateway:
            yield (*loc, "address"), f"{node.address} is the gateway's address; pick another"
    if network.gateway is not None and network.gateway not in cidr:
        yield ("spec", "network", "gateway"), f"gateway {network.gateway} is outside nodeCIDR {cidr}; nodes could not reach it"


def _networks(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    spec = cluster.spec
    named: list[tuple[Location, str, ipaddress.IPv4Network]] = [
        (("spec", "kubernetes", "podCIDR"), "kubernetes.podCIDR", spec.kubernetes.pod_cidr),
        (("spec", "kubernetes", "serviceCIDR"), "kubernetes.serviceCIDR", spec.kubernetes.service_cidr),
        (("spec", "network", "nodeCIDR"), "network.nodeCIDR", spec.network.node_cidr),
    ]
    if spec.wireguard.enabled:
        named.append((("spec", "wireguard", "network"), "wireguard.network", spec.wireguard.network))
    for index, (loc, name, net) in enumerate(named):
        for other_loc, other_name, other in named[:index]:
            if net.overlaps(other):
                yield loc, f"{name} {net} overlaps {other_name} {other}; the networks must be disjoint"
    if spec.kubernetes.service_cidr.prefixlen < 12:
        yield ("spec", "kubernetes", "serviceCIDR"), (
            f"/{spec.kubernetes.service_cidr.prefixlen} is larger than kube-apiserver accepts; use /12 or smaller")
    pod_prefix = spec.kubernetes.pod_cidr.prefixlen
    node_count = len(spec.controllers) + sum(len(pool.nodes) for pool in spec.worker_pools)
    if pod_prefix > NODE_POD_PREFIX:
        yield ("spec", "kubernetes", "podCIDR"), (
            f"/{pod_prefix} is smaller than one node's pod range (/{NODE_POD_PREFIX}); use /{NODE_POD_PREFIX} or larger")
    elif 2 ** (NODE_POD_PREFIX - pod_prefix) < node_count:
        yield ("spec", "kubernetes", "podCIDR"), (
            f"/{pod_prefix} holds {2 ** (NODE_POD_PREFIX - pod_prefix)} per-node /{NODE_POD_PREFIX} pod ranges "
            f"but the cluster has {node_count} nodes; use a larger podCIDR")
    if spec.kubernetes.service_cidr.num_addresses < 16:
        yield ("spec", "kubernetes", "serviceCIDR"), "needs at least 16 addresses (the 10th is the cluster DNS); use /28 or larger"
    if spec.wireguard.enabled and spec.wireguard.network.prefixlen > spec.network.node_cidr.prefixlen:
        yield ("spec", "wireguard", "network"), (
            f"/{spec.wireguard.network.prefixlen} is smaller than nodeCIDR /{spec.network.node_cidr.prefixlen}: a node's "
            f"mesh address reuses the host part of its node address; use a /{spec.network.node_cidr.prefixlen} or larger"
        )


def _labels(cluster: Cluster) -> Iterator[tuple[Location, str]]:
    def check(loc: Location, labels: dict[str, str]) -> Iterator[tuple[Location, str]]:
        for key in labels:
            prefix = key.rpartition("/")[0]
            reserved = prefix == "kubernetes.io" or prefix.endswith((".kubernetes.io", ".k8s.io")) or prefix == "k8s.io"
            if reserved and key not in _KUBELET_ALLOWED_LABELS and not key.startswith(_KUBELET_ALLOWED_PREFIXES):
                yield (*loc, "labels", key), (
                    f"a kubelet may not set {key!r} on its own node (NodeRestriction); use your own prefix, "
                    "such as node.example.com/, or node.kubernetes.io/"
                )

    for found in cluster.spec.nodes():
        loc, node = found.location, found.node
        yield from check(loc, node.labels)
    for index, pool in enumerate(cluster.spec.worker_pools):
        yield from check(("spec", "workerPools", index), pool.labels)


def _snippet_problems(cluster: Cluster, source: SourceMap, base_dir: Path) -> list[Problem]:
    snippets = cluster.spec.snippets
    pool_names = {pool.name for pool in cluster.spec.worker_pools}
    node_names = {found.name for found in cluster.spec.nodes()}
    problems: list[Problem] = []
    for key in snippets.pools:
        if key not in pool_names:
            problems.append(source.problem(("spec", "snippets", "pools", key), f"no worker pool is named {key!r}"))
    for key in snippets.nodes:
        if key not in node_names:
            problems.append(source.problem(("spec", "snippets", "nodes", key), f"no node is named {key!r}"))
    for loc, item in iter_snippets(cluster):
        try:
            load_snippet(item, base_dir, loc, source)
        except SnippetProblem as exc:
            problems.extend(exc.to_problems())
    return problems


def iter_snippets(cluster: Cluster) -> Iterator[tuple[Location, object]]:
    snippets = cluster.spec.snippets
    base: Location = ("spec", "snippets")
    for group in ("all", "controllers", "workers"):
        for index, item in enumerate(getattr(snippets, group)):
            yield (*base, group, index), item
    for group in ("pools", "nodes"):
        for key, items in getattr(snippets, group).items():
            for index, item in enumerate(items):
                yield (*base, group, key, index), item
