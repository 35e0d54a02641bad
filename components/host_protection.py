"""Host protection: one inbound policy per node, enforced by nftables from first boot and by Calico after it.

The policy (see `hostpolicy`) allows ssh from the management networks, the
apiserver, etcd and the kubelet to the nodes that need them, the cluster's own
node-to-node traffic (WireGuard, Calico's BGP and overlays, MetalLB), pods,
ping and DHCP replies, plus the operator's `allow` rules; everything else sent
to a node is dropped.

It is rendered twice:
- Calico objects (crd.projectcalico.org/v1, the API group that Calico's manifest
  install serves to kubectl): a HostEndpoint per node, one pre-DNAT
  GlobalNetworkPolicy per rule, an egress allow, a final ingress deny, and a
  FelixConfiguration that narrows Felix's failsafe ports to the same sources.
- An nftables ruleset per node role, loaded by a systemd unit before the network
  comes up, so a node is protected from its first boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from stellwerk.components import hostpolicy
from stellwerk.components.base import ComponentOptions
from stellwerk.ignition.fragments import NodeFragment
from stellwerk.base.types import ROLES, Role
from stellwerk.components.hostpolicy import ANYWHERE, HostPolicy, PortRange, Rule
from stellwerk.base.templating import render_template
from stellwerk.ignition.model import Config, File, Unit
from stellwerk.spectypes import CIDR, DNSLabel, StrictModel

if TYPE_CHECKING:
    from stellwerk.plan import NodePlan, Plan
    from stellwerk.spec import Cluster

KEY = "hostProtection"

API_VERSION = "crd.projectcalico.org/v1"
ROLE_LABEL = "hostprotection.stellwerk.dev/role"
MANAGED_BY = {"app.kubernetes.io/managed-by": "stellwerk"}
RULE_ANNOTATION = "stellwerk.dev/rule"
POLICY_PREFIX = "stellwerk-host-"
# Calico's KDD backend serves this profile to every cluster; it allows everything.
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"
ALLOW_ORDER, ALLOW_ORDER_STEP = 100, 10
EGRESS_ORDER, DENY_ORDER = 9000, 10000

NFT_PATH = "/etc/nftables.d/stellwerk-host-protection.nft"
NFT_TABLE = "stellwerk_host_protection"
UNIT_NAME = "stellwerk-host-protection.service"

# Linux interface names as Calico's validator takes them (at most 15 characters).
_INTERFACE = re.compile(r"[a-zA-Z0-9_.-]{1,15}")
_RANGE = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


# --------------------------------------------------------------------------- options


def _port(value: Any) -> int | str:
    """A port (22) or an ordered range ('30000:32767'), returned as Calico writes them."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port; write a number such as 443 or a range such as '30000:32767'")
    if isinstance(value, int):
        if not 1 <= value <= hostpolicy.MAX_PORT:
            raise ValueError(f"port {value} is outside 1-{hostpolicy.MAX_PORT}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _port(int(text))
        match = _RANGE.fullmatch(text)
        if match:
            first, last = int(match.group(1)), int(match.group(2))
            for port in (first, last):
                if not 1 <= port <= hostpolicy.MAX_PORT:
                    raise ValueError(f"{value!r}: port {port} is outside 1-{hostpolicy.MAX_PORT}")
            if first > last:
                raise ValueError(f"{value!r} is backwards (it starts after it ends); write '{last}:{first}'")
            return first if first == last else f"{first}:{last}"
    raise ValueError(f"{value!r} is not a port; write a number such as 443 or a quoted range such as '30000:32767'")


Port = Annotated[
    int | str,
    BeforeValidator(_port),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1, "maximum": hostpolicy.MAX_PORT},
                              {"type": "string", "pattern": r"^\d+:\d+$"}]}),
]


def _interface(value: str) -> str:
    if value == "*":
        return value
    if value == "lo":
        raise ValueError("'lo' is the loopback interface; protecting it would cut the node off from itself. "
                         "Name the interface that faces the network, or '*' for all of them")
    if not _INTERFACE.fullmatch(value):
        raise ValueError(f"{value!r} is not an interface name: use at most 15 letters, digits, '_', '.' or '-', "
                         "or '*' for all interfaces")
    return value


class AllowRule(StrictModel):
    """An extra inbound rule: its own GlobalNetworkPolicy and its own nftables rule."""

    name: DNSLabel = Field(description="Names the rule: GlobalNetworkPolicy stellwerk-host-allow-<name>, and the "
                                       "comment of its nftables rule.")
    protocol: Literal["tcp", "udp"] = Field(description="tcp or udp.")
    ports: list[Port] = Field(min_length=1, description="Destination ports: numbers, or quoted 'first:last' "
                                                        "ranges such as '30000:32767'.")
    sources: list[CIDR] = Field(default_factory=list, alias="from",
                                description="Source networks; empty means any IPv4 address.")
    roles: list[Literal["controller", "worker"]] = Field(
        ["controller", "worker"], min_length=1,
        description="Which nodes the rule opens ports on: controller, worker or both.")


class Options(ComponentOptions):
    management_cidrs: list[CIDR] = Field(
        default_factory=list, alias="managementCIDRs",
        description="Networks that may reach ssh on every node and the apiserver on the controllers; "
                    "empty means spec.network.managementCIDRs.")
    interface_name: Annotated[str, AfterValidator(_interface)] = Field(
        "*", description="The interface to protect; '*' protects all of them (loopback excepted).")
    allow: list[AllowRule] = Field(default_factory=list, description="Extra inbound rules.")
    failsafe: Literal["tighten", "keep"] = Field(
        "tighten",
        description="tighten: Felix's failsafe ports become the policy's own lock-out protection (ssh, apiserver, "
                    "etcd, BGP, DHCP), open only to the sources the policy allows; keep: Calico's defaults, open "
                    "to any address.")


def upstream(options: Options) -> tuple[str, ...]:
    # Calico itself is the pod network (`kubernetes.network: calico`), which check() requires.
    return ()


# --------------------------------------------------------------------------- check


def _policy_patch_problem(patch: Any) -> str | None:
    """Patches that would change what is allowed are refused: nftables is rendered from the same policy
    model, so such a change would make the two renderings disagree."""
    kind = patch.target.kind
    if kind == "GlobalNetworkPolicy":
        return "GlobalNetworkPolicies are rendered from the host policy; change it with allow: rules instead"
    if kind == "HostEndpoint":
        touched = ([op.get("path", "") for op in patch.json_patch] if patch.json_patch is not None
                   else list(_leaf_paths(patch.merge or {}, "")))
        role = "/metadata/labels/" + ROLE_LABEL.replace("~", "~0").replace("/", "~1")
        for path in touched:
            if path.startswith("/spec") or path in ("", "/metadata", "/metadata/labels", role):
                return ("a HostEndpoint's spec and role label decide which rules apply to it; only other labels "
                        "and annotations may be patched")
    return None


def _leaf_paths(overlay: dict[str, Any], prefix: str) -> Iterator[str]:
    for key, value in overlay.items():
        path = f"{prefix}/{str(key).replace('~', '~0').replace('/', '~1')}"
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path)
        else:
            yield path


def check(cluster: Cluster, options: Options) -> Iterator[tuple[tuple, str]]:
    base = ("spec", "components", KEY)
    for index, patch in enumerate(options.patches):
        problem = _policy_patch_problem(patch)
        if problem:
            yield (*base, "patches", index, "target"), problem
    spec = cluster.spec
    if not options.management_cidrs and not spec.network.management_cidrs:
        yield (*base, "managementCIDRs"), (
            "no management network: with host protection on, ssh (22/tcp) and the apiserver (6443/tcp) would be "
            "open to nobody and you would lock yourself out of every node; list the networks your operators "
            "work from here or in spec.network.managementCIDRs")
    if spec.kubernetes.network != "calico":
        yield ("spec", "kubernetes", "network"), (
            f"host protection's policies are Calico objects (HostEndpoints, GlobalNetworkPolicies) and need Calico "
            f"as the pod network, but the network is {spec.kubernetes.network!r}: set kubernetes.network: calico, "
            "or remove components.hostProtection")
    first: dict[str, int] = {}
    for index, rule in enumerate(options.allow):
        if rule.name in first:
            yield (*base, "allow", index, "name"), (
                f"rule name {rule.name!r} is already used by allow[{first[rule.name]}]; every rule needs its own "
                "name (it names a GlobalNetworkPolicy)")
        else:
            first[rule.name] = index


# --------------------------------------------------------------------------- the policy


def policy(plan: Plan, options: Options) -> HostPolicy:
    """The host policy of this cluster (cached: the plan asks once per node)."""
    cached = _last_policy
    if cached and cached[0] is plan.cluster and cached[1] is options:
        return cached[2]
    management = options.management_cidrs or plan.spec.network.management_cidrs
    built = hostpolicy.build(plan, management=management, interface=options.interface_name,
                             extra=[_extra_rule(rule) for rule in options.allow])
    _last_policy[:] = [plan.cluster, options, built]
    return built


_last_policy: list[Any] = []


def _extra_rule(rule: AllowRule) -> Rule:
    ranges = []
    for port in rule.ports:
        if isinstance(port, int):
            ranges.append(PortRange(port, port))
        else:
            first, _, last = port.partition(":")
            ranges.append(PortRange(int(first), int(last)))
    sources = tuple(rule.sources) or (ANYWHERE,)
    return Rule(f"allow-{rule.name}", f"operator rule {rule.name}", rule.protocol, sources,
                frozenset(rule.roles), ports=tuple(ranges))


# --------------------------------------------------------------------------- Calico rendering


def manifests(plan: Plan, options: Options) -> list[dict[str, Any]]:
    """FelixConfiguration, then the policies, then the HostEndpoints that make them bite.

    Objects are applied in this order, so no HostEndpoint exists before the policy that lets traffic in.
    """
    host_policy = policy(plan, options)
    objects: list[dict[str, Any]] = []
    if options.failsafe == "tighten":
        objects.append(felix_configuration(host_policy))
    for index, rule in enumerate(host_policy.rules):
        objects.append(_allow_policy(rule, ALLOW_ORDER + ALLOW_ORDER_STEP * index))
    objects.append(_policy_object("egress", {
        "order": EGRESS_ORDER, "selector": _selector(ROLES), "types": ["Egress"],
        "egress": [{"action": "Allow", "metadata": {"annotations": {RULE_ANNOTATION: "egress"}}}],
    }))
    objects.append(_policy_object("default-deny", {
        "order": DENY_ORDER, "selector": _selector(ROLES), "types": ["Ingress"],
        "ingress": [{"action": "Deny", "metadata": {"annotations": {RULE_ANNOTATION: "default-deny"}}}],
    }))
    if host_policy.interface == "*":
        objects += [_loopback_endpoint(node) for node in plan.nodes]
    objects += [_host_endpoint(node, host_policy.interface) for node in plan.nodes]
    return objects


def felix_configuration(host_policy: HostPolicy) -> dict[str, Any]:
    ports = []
    for protocol, port, source in host_policy.failsafe_ports():
        entry: dict[str, Any] = {"protocol": protocol.upper(), "port": port}
        if source is not None:
            entry["net"] = str(source)
        ports.append(entry)
    return {
        "apiVersion": API_VERSION,
        "kind": "FelixConfiguration",
        "metadata": {"name": "default", "labels": dict(MANAGED_BY)},
        "spec": {"failsafeInboundHostPorts": ports},
    }


def _selector(roles: Any) -> str:
    roles = sorted(set(roles))
    if len(roles) == 1:
        return f"{ROLE_LABEL} == '{roles[0]}'"
    return f"{ROLE_LABEL} in {{{', '.join(repr(role) for role in roles)}}}"


def _policy_object(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": POLICY_PREFIX + name, "labels": dict(MANAGED_BY)},
        "spec": {"tier": "default", **spec},
    }


def _allow_policy(rule: Rule, order: int) -> dict[str, Any]:
    # Pre-DNAT: judged on the address and port a packet arrived for, before kube-proxy rewrites it, and
    # an Allow here admits host-bound traffic at once. What no rule allows falls through to default-deny.
    return _policy_object(rule.name, {
        "order": order,
        "selector": _selector(rule.roles),
        "preDNAT": True,
        "applyOnForward": True,  # Calico requires it with preDNAT
        "types": ["Ingress"],
        "ingress": [calico_rule(rule)],
    })


def calico_rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"action": "Allow", "metadata": {"annotations": {RULE_ANNOTATION: rule.name}},
                           "ipVersion": 4}
    if rule.protocol in ("tcp", "udp"):
        out["protocol"] = rule.protocol.upper()
    elif rule.protocol == "icmp":
        out["protocol"] = "ICMP"
        out["icmp"] = {"type": rule.icmp_type}
    elif rule.protocol == "ipip":
        out["protocol"] = 4
    if not rule.from_anywhere:
        out["source"] = {"nets": [str(source) for source in rule.sources]}
    if rule.ports:
        out["destination"] = {"ports": [ports.first if ports.single else f"{ports.first}:{ports.last}"
                                        for ports in rule.ports]}
    return out


def _host_endpoint(node: NodePlan, interface: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "HostEndpoint",
        "metadata": {"name": f"stellwerk-{node.name}", "labels": {ROLE_LABEL: node.role, **MANAGED_BY}},
        "spec": {"node": node.name, "interfaceName": interface, "expectedIPs": [str(node.address)]},
    }


def _loopback_endpoint(node: NodePlan) -> dict[str, Any]:
    # An all-interfaces HostEndpoint covers lo too (Calico issue #4478): local clients such as the
    # kubelet's probes would hit default-deny. lo gets its own endpoint that allows everything.
    return {
        "apiVersion": API_VERSION,
        "kind": "HostEndpoint",
        "metadata": {"name": f"stellwerk-{node.name}-lo", "labels": dict(MANAGED_BY)},
        "spec": {"node": node.name, "interfaceName": "lo", "profiles": [DEFAULT_ALLOW_PROFILE]},
    }


# --------------------------------------------------------------------------- nftables rendering


def node_fragments(plan: Plan, options: Options, node: NodePlan) -> NodeFragment | None:
    ruleset = _ruleset_file(plan, options, node.role)
    unit = Unit(name=UNIT_NAME, enabled=True, contents=_render("hostProtection-nftables.service.j2",
                                                               path=NFT_PATH, table=NFT_TABLE))
    return NodeFragment(component=KEY, config=Config(files=(ruleset,), units=(unit,)))


def _ruleset_file(plan: Plan, options: Options, role: Role) -> File:
    # One File per role, shared by every node of that role.
    host_policy = policy(plan, options)
    cached = _last_rulesets
    if not (cached and cached[0] is host_policy):
        _last_rulesets[:] = [host_policy, {}]
    files: dict[str, File] = _last_rulesets[1]
    if role not in files:
        files[role] = File(path=NFT_PATH, mode=0o644, contents=nftables_ruleset(host_policy, role, plan.name).encode())
    return files[role]


_last_rulesets: list[Any] = []


def nftables_ruleset(host_policy: HostPolicy, role: Role, cluster: str) -> str:
    return _render("hostProtection-ruleset.nft.j2", rules=host_policy.for_role(role), role=role, cluster=cluster,
                   interface=host_policy.interface, table=NFT_TABLE)


def _render(template: str, **values: Any) -> str:
    return render_template("stellwerk.components", template, **values)
