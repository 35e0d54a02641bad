"""The host protection policy: one model of what may reach a node, rendered twice.

`host_protection` turns a `HostPolicy` into Calico HostEndpoints and GlobalNetworkPolicies
(enforced once Calico runs) and into an nftables ruleset (enforced from first
boot). Both renderings read the same `Rule` objects, so they cannot drift apart
by construction; the component's tests prove they also agree after Calico's and
nft's own parsing.

The model is deliberately small: inbound rules only (a node's own outbound
traffic is not restricted), IPv4 only (like the rest of Stellwerk), each rule
one protocol, some ports, some source networks and the roles it applies to.
Anything not allowed by a rule is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from stellwerk.base.types import ROLES, Role

Protocol = Literal["tcp", "udp", "icmp", "ipip", "any"]
Direction = Literal["ingress"]

ANYWHERE = ipaddress.IPv4Network("0.0.0.0/0")
MAX_PORT = 65535

# Well-known ports the built-in rules open (see `build`).
SSH_PORT = 22
APISERVER_PORT = 6443
ETCD_PORTS = (2379, 2380)
KUBELET_PORT = 10250
BGP_PORT = 179
DHCP_CLIENT_PORT = 68
VXLAN_PORT = 4789  # Calico's VXLAN port (FelixConfiguration vxlanPort default)
MEMBERLIST_PORT = 7946  # MetalLB speakers find each other with memberlist on this port
BFD_PORTS = (3784, 4784)  # RFC 5881 single-hop and RFC 5883 multi-hop BFD control packets
ICMP_ECHO_REQUEST = 8
# Equinix Metal's routers: MetalLB's peers when packetPeerDiscovery is on and no peer is listed.
PACKET_ROUTERS = ("169.254.255.1", "169.254.255.2")


@dataclass(frozen=True, order=True)
class PortRange:
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= MAX_PORT:
            raise ValueError(f"bad port range {self.first}..{self.last}")

    @property
    def single(self) -> bool:
        return self.first == self.last


@dataclass(frozen=True)
class Rule:
    """Allow `protocol` traffic to `ports` from `sources` on nodes of `roles`."""

    name: str
    description: str
    protocol: Protocol
    sources: tuple[ipaddress.IPv4Network, ...]
    roles: frozenset[Role]
    ports: tuple[PortRange, ...] = ()
    icmp_type: int | None = None
    direction: Direction = "ingress"
    # Also one of Felix's failsafe ports when the component tightens them (see host_protection.Options.failsafe).
    failsafe: bool = False

    def __post_init__(self) -> None:
        if self.direction != "ingress":
            raise ValueError(f"rule {self.name}: only ingress rules exist; outbound traffic is not restricted")
        if (self.protocol in ("tcp", "udp")) != bool(self.ports):
            raise ValueError(f"rule {self.name}: tcp and udp rules need ports, other protocols take none")
        if (self.protocol == "icmp") != (self.icmp_type is not None):
            raise ValueError(f"rule {self.name}: an icmp rule names one ICMP type, other rules none")
        if not self.sources or not self.roles:
            raise ValueError(f"rule {self.name}: needs sources and roles")
        object.__setattr__(self, "sources", collapse(self.sources))
        object.__setattr__(self, "ports", merge_ports(self.ports))

    @property
    def from_anywhere(self) -> bool:
        return self.sources == (ANYWHERE,)


@dataclass(frozen=True)
class HostPolicy:
    rules: tuple[Rule, ...]
    # Which interfaces the policy governs: "*" for all of them, else one interface name.
    interface: str = "*"

    def for_role(self, role: Role) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if role in rule.roles)

    def failsafe_ports(self) -> list[tuple[str, int, ipaddress.IPv4Network | None]]:
        """(protocol, port, source or None for anywhere) for every port of every failsafe rule, in rule order."""
        found: list[tuple[str, int, ipaddress.IPv4Network | None]] = []
        for rule in self.rules:
            if not rule.failsafe:
                continue
            for ports in rule.ports:
                for port in range(ports.first, ports.last + 1):
                    for source in rule.sources:
                        item = (rule.protocol, port, None if source == ANYWHERE else source)
                        if item not in found:
                            found.append(item)
        return found


def collapse(networks: Iterable[ipaddress.IPv4Network]) -> tuple[ipaddress.IPv4Network, ...]:
    """The same addresses as the fewest, sorted prefixes (nft refuses overlapping set elements)."""
    return tuple(ipaddress.collapse_addresses(networks))


def merge_ports(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sorted ranges with overlapping and adjacent ones joined."""
    merged: list[PortRange] = []
    for current in sorted(ranges):
        if merged and current.first <= merged[-1].last + 1:
            last = merged[-1]
            merged[-1] = PortRange(last.first, max(last.last, current.last))
        else:
            merged.append(current)
    return tuple(merged)


def host(address: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{address}/32")


def build(plan: Any, *, management: Iterable[ipaddress.IPv4Network], interface: str,
          extra: Iterable[Rule] = ()) -> HostPolicy:
    """The policy for a plan: the rules every Stellwerk cluster needs, then the operator's own."""
    spec = plan.spec
    everyone: frozenset[Role] = frozenset(ROLES)
    controllers_only: frozenset[Role] = frozenset(("controller",))

    def identities(nodes: Iterable[Any]) -> list[ipaddress.IPv4Network]:
        # A node speaks from its node address, and over wg0 from its mesh address.
        found = []
        for node in nodes:
            found.append(host(node.address))
            if node.mesh_address is not None:
                found.append(host(node.mesh_address))
        return found

    node_addresses = [host(node.address) for node in plan.nodes]
    nodes = identities(plan.nodes)
    controllers = identities(plan.controllers)
    node_network = [spec.network.node_cidr]
    if spec.wireguard.enabled:
        node_network.append(spec.wireguard.network)
    management = list(management)

    def each(*numbers: int) -> tuple[PortRange, ...]:
        return tuple(PortRange(number, number) for number in numbers)

    rules = [
        Rule("ssh", "ssh from the management networks", "tcp", tuple(management), everyone,
             ports=each(SSH_PORT), failsafe=True),
        Rule("apiserver", "the Kubernetes API from the management networks and the node network", "tcp",
             tuple(management + node_network), controllers_only, ports=each(APISERVER_PORT), failsafe=True),
        Rule("etcd", "etcd clients and peers, between controllers only", "tcp", tuple(controllers),
             controllers_only, ports=(PortRange(*ETCD_PORTS),), failsafe=True),
        Rule("kubelet", "the kubelet API, for the apiservers on the controllers", "tcp", tuple(controllers),
             everyone, ports=each(KUBELET_PORT)),
    ]
    rules += _metallb_rules(plan, everyone, nodes)
    if spec.wireguard.enabled:
        rules.append(Rule("wireguard", "the wg0 mesh between the nodes", "udp", tuple(node_addresses), everyone,
                          ports=each(spec.wireguard.port)))
    rules += [
        Rule("calico-bgp", "Calico's BGP sessions between the nodes (BIRD full mesh)", "tcp",
             tuple(nodes), everyone, ports=each(BGP_PORT), failsafe=True),
        Rule("calico-ipip", "Calico's IP-in-IP pod traffic between the nodes", "ipip", tuple(nodes), everyone),
        Rule("calico-vxlan", "Calico's VXLAN pod traffic between the nodes", "udp", tuple(nodes),
             everyone, ports=each(VXLAN_PORT)),
        Rule("pods", "pods, from any node, to the node's services", "any", (spec.kubernetes.pod_cidr,), everyone),
        Rule("icmp-echo", "ping", "icmp", (ANYWHERE,), everyone, icmp_type=ICMP_ECHO_REQUEST),
        Rule("dhcp-client", "DHCP offers and acknowledgements for interfaces that use DHCP", "udp", (ANYWHERE,),
             everyone, ports=each(DHCP_CLIENT_PORT), failsafe=True),
    ]
    rules += list(extra)
    return HostPolicy(rules=tuple(rules), interface=interface)


def _metallb_rules(plan: Any, everyone: frozenset[Role], nodes: list[ipaddress.IPv4Network]) -> list[Rule]:
    # The metallb component may not be part of this build: read its options defensively.
    options = getattr(plan.spec.components, "metallb", None)
    if options is None:
        return []
    rules = [
        Rule("metallb-memberlist-tcp", "MetalLB speakers' memberlist between the nodes", "tcp",
             tuple(nodes), everyone, ports=(PortRange(MEMBERLIST_PORT, MEMBERLIST_PORT),)),
        Rule("metallb-memberlist-udp", "MetalLB speakers' memberlist between the nodes", "udp",
             tuple(nodes), everyone, ports=(PortRange(MEMBERLIST_PORT, MEMBERLIST_PORT),)),
    ]
    if getattr(options, "mode", None) != "bgp":
        return rules
    bgp = getattr(options, "bgp", None)
    peers = [host(ipaddress.IPv4Address(str(peer.address))) for peer in getattr(bgp, "peers", None) or ()]
    if not peers and getattr(bgp, "packet_peer_discovery", None) is not None:
        peers = [host(ipaddress.IPv4Address(address)) for address in PACKET_ROUTERS]
    if not peers:
        peers = [plan.spec.network.node_cidr]
    rules.append(Rule("metallb-bgp", "BGP sessions from MetalLB's routers", "tcp", tuple(peers), everyone,
                      ports=(PortRange(BGP_PORT, BGP_PORT),)))
    if getattr(bgp, "bfd_profile", None) is not None:
        rules.append(Rule("metallb-bfd", "BFD control packets from MetalLB's routers", "udp", tuple(peers),
                          everyone, ports=tuple(PortRange(port, port) for port in BFD_PORTS)))
    return rules
