"""MetalLB: LoadBalancer addresses for bare metal, announced by ARP (layer2) or BGP.

The options become MetalLB's own objects in namespace metallb-system: one
IPAddressPool and one L2Advertisement or BGPAdvertisement per pool, a BGPPeer
per router (its password in a basic-auth Secret) and, for BFD, a BFDProfile.
MetalLB itself comes from the pinned upstream manifest: metallb-native, or
metallb-frr when BFD is on (only the FRR speaker does BFD).

packetPeerDiscovery is for Packet-style clouds (Equinix Metal), where each
host learns its BGP neighbours from the provider's metadata service. A oneshot
unit on every node reads them, routes to them and labels the node's own Node
object; every BGPPeer then selects exactly the nodes whose metadata lists that
router with that ASN.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from stellwerk.base.templating import render_template
from stellwerk.base.types import Location
from stellwerk.components.base import ComponentOptions
from stellwerk.ignition.fragments import NodeFragment
from stellwerk.ignition.model import Config, File, Unit
from stellwerk.spectypes import IPv4, DNSLabel, DNSSubdomain, Duration, LabelKey, LabelValue, StrictModel

if TYPE_CHECKING:
    from stellwerk.plan import NodePlan, Plan
    from stellwerk.spec import Cluster

KEY = "metallb"
NAMESPACE = "metallb-system"

# Equinix Metal's metadata service; its bgp_neighbors list says which routers this host may peer with.
DEFAULT_METADATA_URL = "https://metadata.platformequinix.com/metadata"
# Equinix Metal's local-BGP routers (the two top-of-rack switches) and their ASN: the peers
# packetPeerDiscovery uses when the cluster file lists none.
PACKET_ROUTER_ADDRESSES = ("169.254.255.1", "169.254.255.2")
PACKET_ROUTER_ASN = 65530

# What the discovery unit writes on its own Node object. Keys outside kubernetes.io and
# k8s.io, so NodeRestriction lets a kubelet's credentials set them.
ASN_LABEL = "metallb.stellwerk.dev/bgp-asn"
PEER_LABEL_PREFIX = "peer.metallb.stellwerk.dev/"
ANNOTATION_PREFIX = "metallb.stellwerk.dev/"

DISCOVERY_SCRIPT = "/opt/stellwerk/bin/metallb-peer-discovery"
DISCOVERY_UNIT = "stellwerk-metallb-peers.service"
DISCOVERY_TIMER = "stellwerk-metallb-peers.timer"

MAX_ASN = 4294967295
# Linux's TCP_MD5SIG_MAXKEYLEN: longer TCP-MD5 keys are refused by the kernel.
MAX_PASSWORD_BYTES = 80
# RFC 4271: a hold time is 0 or 3 to 65535 seconds; MetalLB takes no 0 here.
MIN_HOLD_SECONDS, MAX_HOLD_SECONDS = 3, 65535

_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%!&()*+,;=:@/?\-]*)?")


# --------------------------------------------------------------------------- field types


def _asn(value: int) -> int:
    if not 1 <= value <= MAX_ASN:
        raise ValueError(
            f"AS number {value} is outside 1..{MAX_ASN}; a private ASN such as 64512-65534 "
            "or 4200000000-4294967294 fits a site without its own"
        )
    return value


def _asn_input(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not an AS number; write a number such as 64512")
    return value


ASN = Annotated[
    int,
    BeforeValidator(_asn_input),
    AfterValidator(_asn),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_ASN}),
]


def _pool_address(value: Any) -> str:
    """A CIDR or an 'a-b' range of IPv4 addresses, returned in canonical form."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an address range; quote a CIDR such as '192.168.10.0/24' "
                         "or a range such as '192.168.10.240-192.168.10.250'")
    text = value.strip()
    if "-" in text:
        first_text, _, last_text = (part.strip() for part in text.partition("-"))
        try:
            first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
        except ValueError:
            raise ValueError(f"{value!r} is neither a CIDR such as '192.168.10.0/24' nor a range of two "
                             "addresses such as '192.168.10.240-192.168.10.250'") from None
        if first.version != last.version:
            raise ValueError(f"{value!r} mixes an IPv4 and an IPv6 address; both ends of a range must be IPv4")
        if first.version == 6:
            raise ValueError(f"{value!r} is IPv6; Stellwerk clusters are IPv4-only, so no service could get "
                             "one of these addresses; use an IPv4 range")
        if first > last:
            raise ValueError(f"{value!r} is backwards (it starts after it ends); write '{last}-{first}'")
        return f"{first}-{last}"
    if "/" not in text:
        raise ValueError(f"{value!r} is neither a CIDR such as '192.168.10.0/24' nor a range such as "
                         "'192.168.10.240-192.168.10.250'; a single address is '192.168.10.240/32'")
    try:
        network = ipaddress.ip_network(text)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise ValueError(f"{value!r} has host bits set; did you mean "
                             f"'{ipaddress.ip_network(text, strict=False)}'?") from None
        raise ValueError(f"{value!r} is not a CIDR such as '192.168.10.0/24'") from None
    if network.version == 6:
        raise ValueError(f"{value!r} is IPv6; Stellwerk clusters are IPv4-only, so no service could get "
                         "one of these addresses; use an IPv4 CIDR")
    return str(network)


PoolAddress = Annotated[
    str,
    BeforeValidator(_pool_address),
    WithJsonSchema({"type": "string", "description": "An IPv4 CIDR (10.0.0.0/28) or range (10.0.0.10-10.0.0.20)."}),
]


def _hold_time(value: Any) -> Any:
    seconds = int(value.total_seconds())
    if not MIN_HOLD_SECONDS <= seconds <= MAX_HOLD_SECONDS:
        raise ValueError(f"a BGP hold time is {MIN_HOLD_SECONDS}s to {MAX_HOLD_SECONDS}s (RFC 4271); "
                         "90s is the usual value")
    return value


def _password(value: str) -> str:
    size = len(value.encode())
    if not value:
        raise ValueError("an empty password; remove the key for a session without TCP-MD5")
    if size > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is {size} bytes; the kernel takes TCP-MD5 keys of at most "
                         f"{MAX_PASSWORD_BYTES} bytes")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("the password holds a control character; routers take printable passwords only")
    return value


def _metadata_url(value: str) -> str:
    if not _URL.fullmatch(value):
        raise ValueError(f"{value!r} is not an http(s) URL such as {DEFAULT_METADATA_URL!r}")
    return value


def _discovery_shorthand(value: Any) -> Any:
    # `packetPeerDiscovery: true` is the common spelling; it means "on, with the defaults".
    if value is True:
        return {}
    if value is False:
        return None
    return value


# --------------------------------------------------------------------------- options


class AddressPool(StrictModel):
    name: DNSLabel = Field(description="Name of the IPAddressPool; services pick a pool with the "
                                       "metallb.io/address-pool annotation.")
    addresses: list[PoolAddress] = Field(min_length=1, description="IPv4 CIDRs or 'first-last' ranges.")
    auto_assign: bool = Field(True, description="Hand out addresses from this pool to any LoadBalancer service; "
                                                "false reserves the pool for services that ask for it.")


class Peer(StrictModel):
    address: IPv4 = Field(description="The router's address.")
    asn: ASN = Field(description="The router's AS number.")
    name: DNSLabel | None = Field(None, description="Name of the BGPPeer object; default peer-<address with dashes>.")
    password: Annotated[str, AfterValidator(_password)] | None = Field(
        None, description="TCP-MD5 password; rendered into a kubernetes.io/basic-auth Secret, never into the BGPPeer.")
    password_secret: DNSSubdomain | None = Field(
        None, description="Name of an existing kubernetes.io/basic-auth Secret in metallb-system holding the "
                          "password (key 'password'), to keep it out of the cluster file.")
    hold_time: Annotated[Duration, AfterValidator(_hold_time)] | None = Field(
        None, description="BGP hold time, 3s to 65535s; MetalLB's default is 90s.")
    ebgp_multi_hop: bool = Field(False, description="The router is more than one hop away (FRR mode needs this "
                                                    "for such eBGP sessions; native mode ignores it).")
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Only nodes with all these labels peer with this router; empty means all.")


class BFDProfile(StrictModel):
    name: DNSLabel = Field("stellwerk", description="Name of the BFDProfile object.")
    receive_interval: int = Field(300, ge=10, le=60000, description="Slowest rate of BFD packets this node "
                                                                    "accepts, in milliseconds.")
    transmit_interval: int = Field(300, ge=10, le=60000, description="Rate this node sends BFD packets at, "
                                                                     "in milliseconds.")
    detect_multiplier: int = Field(3, ge=2, le=255, description="Packets lost in a row before the session "
                                                               "counts as down.")
    echo_mode: bool = Field(False, description="Send BFD echo packets (not for multi-hop sessions).")
    echo_interval: int = Field(50, ge=10, le=60000, description="Echo packet interval in milliseconds, "
                                                                "when echoMode is on.")
    passive_mode: bool = Field(False, description="Wait for the router to start the BFD session.")
    minimum_ttl: int | None = Field(None, ge=1, le=254, description="Multi-hop sessions only: lowest TTL "
                                                                    "accepted on incoming BFD packets.")


class PacketPeerDiscovery(StrictModel):
    metadata_url: Annotated[str, AfterValidator(_metadata_url)] = Field(
        DEFAULT_METADATA_URL, alias="metadataURL",
        description="The provider's metadata document (JSON with bgp_neighbors); read by every node.")
    add_peer_routes: bool = Field(
        True, description="Route each discovered peer address (/32) via the private IPv4 gateway named in the "
                          "metadata; Equinix Metal's routers are reachable only that way.")


class BGP(StrictModel):
    my_asn: ASN = Field(alias="myASN", description="The cluster's AS number.")
    peers: list[Peer] = Field(default_factory=list, description="The routers MetalLB's speakers peer with.")
    packet_peer_discovery: Annotated[
        PacketPeerDiscovery | None,
        BeforeValidator(_discovery_shorthand, json_schema_input_type=bool | PacketPeerDiscovery | None),
    ] = Field(None, description="Learn each node's peers from the provider metadata (true, or a mapping to "
                                "change the defaults); with no peers listed, Equinix Metal's two routers "
                                "169.254.255.1 and 169.254.255.2 (AS 65530) are used.")
    bfd_profile: BFDProfile | None = Field(None, description="Back every BGP session with BFD using this profile; "
                                                             "switches MetalLB to its FRR speaker.")


class Options(ComponentOptions):
    mode: Literal["layer2", "bgp"] = Field("layer2", description="layer2 answers ARP for service addresses "
                                                                 "on the node network; bgp announces them to routers.")
    address_pools: list[AddressPool] = Field(min_length=1, description="The addresses services get.")
    bgp: BGP | None = Field(None, description="BGP settings; mode bgp only.")


def upstream(options: Options) -> tuple[str, ...]:
    if _bfd(options) is not None:
        return ("metallb-frr",)
    return ("metallb-native",)


# --------------------------------------------------------------------------- check

_BASE: Location = ("spec", "components", KEY)


def check(cluster: Cluster, options: Options) -> Iterator[tuple[Location, str]]:
    yield from _check_pools(cluster, options)
    yield from _check_mode(options)
    if options.mode == "bgp" and options.bgp is not None:
        yield from _check_bgp(options, options.bgp)


def _spans(options: Options) -> list[tuple[Location, str, int, int]]:
    """(location, text, first, last) for every pool address, in file order."""
    spans = []
    for index, pool in enumerate(options.address_pools):
        for position, text in enumerate(pool.addresses):
            first, last = _bounds(text)
            spans.append(((*_BASE, "addressPools", index, "addresses", position), text, first, last))
    return spans


def _bounds(text: str) -> tuple[int, int]:
    if "-" in text:
        first, _, last = text.partition("-")
        return int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))
    network = ipaddress.IPv4Network(text)
    return int(network.network_address), int(network.broadcast_address)


def _check_pools(cluster: Cluster, options: Options) -> Iterator[tuple[Location, str]]:
    spec = cluster.spec
    names: dict[str, int] = {}
    for index, pool in enumerate(options.address_pools):
        if pool.name in names:
            yield (*_BASE, "addressPools", index, "name"), (
                f"pool name {pool.name!r} is already used by addressPools[{names[pool.name]}]; give each pool its own")
        else:
            names[pool.name] = index

    spans = _spans(options)
    for number, (loc, text, first, last) in enumerate(spans):
        for other_loc, other_text, other_first, other_last in spans[:number]:
            if first <= other_last and other_first <= last:
                yield loc, f"{text} overlaps {other_text} ({_where(other_loc)}); an address can be in one pool only"
                break

    networks: list[tuple[str, ipaddress.IPv4Network]] = [
        ("kubernetes.podCIDR", spec.kubernetes.pod_cidr),
        ("kubernetes.serviceCIDR", spec.kubernetes.service_cidr),
    ]
    if spec.wireguard.enabled:
        networks.append(("wireguard.network", spec.wireguard.network))
    if options.mode == "bgp":
        networks.append(("network.nodeCIDR", spec.network.node_cidr))
    for loc, text, first, last in spans:
        for name, network in networks:
            if first <= int(network.broadcast_address) and int(network.network_address) <= last:
                fix = ("announce addresses from outside the node network" if name == "network.nodeCIDR"
                       else "pick addresses outside it")
                yield loc, f"{text} overlaps {name} {network}; {fix}"
        if options.mode == "layer2":
            yield from _check_layer2_span(cluster, loc, text, first, last)


def _check_layer2_span(cluster: Cluster, loc: Location, text: str, first: int, last: int
                       ) -> Iterator[tuple[Location, str]]:
    """In layer2 mode a pool normally lies inside the node network, but must miss every address in use there."""
    network = cluster.spec.network
    cidr = network.node_cidr
    low, high = int(cidr.network_address), int(cidr.broadcast_address)
    if first > high or last < low:
        return
    if first < low or last > high:
        yield loc, (f"{text} lies partly inside network.nodeCIDR {cidr}; in layer2 mode keep a pool wholly "
                    "inside the node network (or wholly in another routed network)")
        return
    taken: dict[int, list[str]] = {}
    if cidr.prefixlen < 31:
        taken.setdefault(low, []).append(f"the network address of {cidr}")
        taken.setdefault(high, []).append(f"the broadcast address of {cidr}")
    if network.gateway is not None:
        taken.setdefault(int(network.gateway), []).append("network.gateway")
    for index, server in enumerate(network.dns):
        taken.setdefault(int(server), []).append(f"network.dns[{index}]")
    for found in cluster.spec.nodes():
        taken.setdefault(int(found.node.address), []).append(f"node {found.name}'s address")
    for address in sorted(taken):
        if first <= address <= last:
            owners = " and ".join(taken[address])
            yield loc, (f"{text} contains {ipaddress.IPv4Address(address)}, which is {owners}; MetalLB would answer "
                        "ARP for it; leave it out of the pool")
            return


def _check_mode(options: Options) -> Iterator[tuple[Location, str]]:
    if options.mode == "layer2" and options.bgp is not None:
        yield (*_BASE, "bgp"), ("bgp settings are only used in mode bgp; set 'mode: bgp' to announce by BGP, "
                                "or remove the bgp section to stay with layer2")
    if options.mode == "bgp" and options.bgp is None:
        yield (*_BASE, "mode"), ("mode bgp needs a bgp section with myASN and the peers "
                                 "(or packetPeerDiscovery); add one under spec.components.metallb.bgp")


def _check_bgp(options: Options, bgp: BGP) -> Iterator[tuple[Location, str]]:
    base = (*_BASE, "bgp")
    if not bgp.peers and bgp.packet_peer_discovery is None:
        yield (*base, "peers") if "peers" in bgp.model_fields_set else base, (
            "BGP mode needs at least one peer; list your routers under peers (address and asn), "
            "or set packetPeerDiscovery: true on Equinix Metal")
    names: dict[str, int] = {}
    spans = _spans(options)
    for index, peer in enumerate(bgp.peers):
        loc = (*base, "peers", index)
        name = peer_name(peer)
        if name in names:
            where = ("name",) if peer.name else ("address",)
            yield (*loc, *where), (f"BGPPeer name {name!r} is already used by peers[{names[name]}]; "
                                   "give one of them a distinct name")
        else:
            names[name] = index
        if peer.password is not None and peer.password_secret is not None:
            yield (*loc, "passwordSecret"), ("set password or passwordSecret, not both; MetalLB rejects a peer "
                                             "with both")
        if peer.ebgp_multi_hop and peer.asn == bgp.my_asn:
            yield (*loc, "ebgpMultiHop"), (f"asn {peer.asn} equals myASN, so this is an iBGP session, and "
                                           "ebgpMultiHop is for eBGP only; remove it")
        if bgp.packet_peer_discovery is not None:
            for key in peer.node_selector:
                if key == ASN_LABEL or key.startswith(PEER_LABEL_PREFIX):
                    yield (*loc, "nodeSelector", key), (f"{key!r} is set by packetPeerDiscovery on each node; "
                                                        "select nodes by other labels")
        address = int(peer.address)
        for span_loc, text, first, last in spans:
            if first <= address <= last:
                yield (*loc, "address"), (f"{peer.address} is inside pool address {text} ({_where(span_loc)}); "
                                          "MetalLB would announce the router's own address; take it out of the pool")
                break


def _where(loc: Location) -> str:
    return f"addressPools[{loc[4]}].addresses[{loc[6]}]"


# --------------------------------------------------------------------------- manifests


def peer_name(peer: Peer) -> str:
    return peer.name or "peer-" + str(peer.address).replace(".", "-")


def _bfd(options: Options) -> BFDProfile | None:
    if options.mode == "bgp" and options.bgp is not None:
        return options.bgp.bfd_profile
    return None


def effective_peers(bgp: BGP) -> list[Peer]:
    """The peers BGPPeer objects are rendered for: the listed ones, or Equinix Metal's routers."""
    if bgp.peers or bgp.packet_peer_discovery is None:
        return list(bgp.peers)
    return [Peer.model_validate({"address": address, "asn": PACKET_ROUTER_ASN, "ebgpMultiHop": True})
            for address in PACKET_ROUTER_ADDRESSES]


def _metadata(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE}


def manifests(plan: Plan, options: Options) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for pool in options.address_pools:
        objects.append({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": _metadata(pool.name),
            "spec": {"addresses": list(pool.addresses), "autoAssign": pool.auto_assign},
        })
    bgp = options.bgp if options.mode == "bgp" else None
    if bgp is not None:
        objects += _bgp_objects(bgp)
    kind = "BGPAdvertisement" if options.mode == "bgp" else "L2Advertisement"
    for pool in options.address_pools:
        objects.append({
            "apiVersion": "metallb.io/v1beta1",
            "kind": kind,
            "metadata": _metadata(pool.name),
            "spec": {"ipAddressPools": [pool.name]},
        })
    return objects


def _bgp_objects(bgp: BGP) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    profile = bgp.bfd_profile
    if profile is not None:
        spec: dict[str, Any] = {
            "receiveInterval": profile.receive_interval,
            "transmitInterval": profile.transmit_interval,
            "detectMultiplier": profile.detect_multiplier,
            "echoMode": profile.echo_mode,
            "passiveMode": profile.passive_mode,
        }
        if profile.echo_mode:
            spec["echoInterval"] = profile.echo_interval
        if profile.minimum_ttl is not None:
            spec["minimumTtl"] = profile.minimum_ttl
        objects.append({"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile",
                        "metadata": _metadata(profile.name), "spec": spec})
    peers = effective_peers(bgp)
    for peer in peers:
        if peer.password is not None:
            objects.append({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _metadata(_secret_name(peer)),
                # The form MetalLB reads: type basic-auth, the password under the key "password".
                "type": "kubernetes.io/basic-auth",
                "data": {"password": base64.b64encode(peer.password.encode()).decode()},
            })
    for peer in peers:
        objects.append({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
                        "metadata": _metadata(peer_name(peer)), "spec": _peer_spec(bgp, peer)})
    return objects


def _secret_name(peer: Peer) -> str:
    return f"{peer_name(peer)}-password"


def _peer_spec(bgp: BGP, peer: Peer) -> dict[str, Any]:
    spec: dict[str, Any] = {"myASN": bgp.my_asn, "peerASN": peer.asn, "peerAddress": str(peer.address)}
    if peer.hold_time is not None:
        spec["holdTime"] = f"{int(peer.hold_time.total_seconds())}s"
    if peer.ebgp_multi_hop:
        spec["ebgpMultiHop"] = True
    if bgp.bfd_profile is not None:
        spec["bfdProfile"] = bgp.bfd_profile.name
    secret = _secret_name(peer) if peer.password is not None else peer.password_secret
    if secret is not None:
        spec["passwordSecret"] = {"name": secret, "namespace": NAMESPACE}
    selector = dict(sorted(peer.node_selector.items()))
    if bgp.packet_peer_discovery is not None:
        # Only nodes whose metadata names this router with this ASN, and gives them our ASN, connect.
        selector = {ASN_LABEL: str(bgp.my_asn), f"{PEER_LABEL_PREFIX}{peer.address}": str(peer.asn), **selector}
    if selector:
        spec["nodeSelectors"] = [{"matchLabels": selector}]
    return spec


# --------------------------------------------------------------------------- node fragments




def _render(template: str, **values: Any) -> str:
    return render_template("stellwerk.components", template, **values)


def node_fragments(plan: Plan, options: Options, node: NodePlan) -> NodeFragment | None:
    bgp = options.bgp
    if options.mode != "bgp" or bgp is None or bgp.packet_peer_discovery is None:
        return None
    discovery = bgp.packet_peer_discovery
    peers = effective_peers(bgp)
    script = _render(
        "metallb-peer-discovery.sh.j2",
        node=node.name,
        metadata_url=discovery.metadata_url,
        my_asn=bgp.my_asn,
        add_routes=discovery.add_peer_routes,
        expected_peers=[f"{peer.address}={peer.asn}" for peer in peers],
        passwords=any(peer.password is not None or peer.password_secret is not None for peer in peers),
        asn_label=ASN_LABEL,
        peer_label_prefix=PEER_LABEL_PREFIX,
        annotation_prefix=ANNOTATION_PREFIX,
    )
    config = Config(
        files=(File(path=DISCOVERY_SCRIPT, contents=script.encode(), mode=0o755),),
        units=(
            Unit(name=DISCOVERY_UNIT, enabled=True,
                 contents=_render("metallb-peer-discovery.service.j2", script=DISCOVERY_SCRIPT)),
            Unit(name=DISCOVERY_TIMER, enabled=True,
                 contents=_render("metallb-peer-discovery.timer.j2", service=DISCOVERY_UNIT)),
        ),
    )
    return NodeFragment(component=KEY, config=config)
