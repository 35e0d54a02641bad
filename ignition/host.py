"""The parts of a node's config that every node gets, whatever its role.

Hostname, user core, static addressing, the wg0 mesh, kernel settings for
Kubernetes, time sync and journal size, the cluster CA and the kubelet's
bootstrap credentials.
"""

from __future__ import annotations

from stellwerk.plan import NodePlan, Plan

from . import kubernetes as k8s
from .context import RenderContext
from .model import Config, Dropin, File, Unit, User
from stellwerk.base.templating import render_template

NETWORK_DIR = "/etc/systemd/network"
# Beside the netdev that names it: networkd must reach it, and distributions ship /etc/wireguard as 0700 root
# (Debian's wireguard-tools does), where networkd, running as systemd-network, is refused.
WIREGUARD_KEY_FILE = "/etc/systemd/network/wg0.key"
# systemd-networkd reads PrivateKeyFile= as this user, so it owns the 0600 key.
WIREGUARD_KEY_OWNER = "systemd-network"

KERNEL_MODULES = ("br_netfilter", "overlay")
SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("fs.inotify.max_user_instances", "8192"),
    ("fs.inotify.max_user_watches", "524288"),
)
JOURNAL_MAX_USE = "1G"


def host_config(context: RenderContext, node: NodePlan) -> Config:
    plan = context.plan
    files = [
        File(path="/etc/hostname", contents=f"{node.name}\n".encode(), mode=0o644),
        File(path=f"{NETWORK_DIR}/00-stellwerk-node.network", contents=_node_network(plan, node).encode(), mode=0o644),
        File(path="/etc/modules-load.d/stellwerk-kubernetes.conf",
             contents="".join(f"{module}\n" for module in _kernel_modules(plan)).encode(), mode=0o644),
        File(path="/etc/sysctl.d/60-stellwerk-kubernetes.conf",
             contents="".join(f"{key} = {value}\n" for key, value in SYSCTLS).encode(), mode=0o644),
        File(path="/etc/systemd/journald.conf.d/60-stellwerk.conf",
             contents=f"[Journal]\nSystemMaxUse={JOURNAL_MAX_USE}\n".encode(), mode=0o644),
        File(path=f"{k8s.PKI}/ca.crt", contents=context.ca_cert_pem, mode=0o644),
        File(path=k8s.BOOTSTRAP_KUBECONFIG, contents=context.bootstrap_kubeconfig, mode=0o600),
        File(path=k8s.KUBELET_CONFIG, contents=context.kubelet_configurations[node.is_controller], mode=0o644),
    ]
    units = [
        Unit(name="systemd-networkd.service", enabled=True),
        Unit(name="systemd-timesyncd.service", enabled=True),
        Unit(name="kubelet.service", enabled=True, contents=render_template("stellwerk.ignition", "kubelet.service.j2"),
             dropins=(Dropin(name="20-stellwerk.conf",
                             contents=render_template("stellwerk.ignition", "kubelet-command.conf.j2",
                                                      flags=k8s.kubelet_flags(node, context.node_labels(node)))),)),
    ]
    if plan.spec.wireguard.enabled:
        files += _wireguard_files(context, node)
    users = [User(name="core", ssh_authorized_keys=tuple(plan.spec.ssh.authorized_keys))]
    return Config(files=tuple(files), units=tuple(units), users=tuple(users))


def _kernel_modules(plan: Plan) -> tuple[str, ...]:
    return KERNEL_MODULES + (("wireguard",) if plan.spec.wireguard.enabled else ())


def _node_network(plan: Plan, node: NodePlan) -> str:
    network = plan.spec.network
    return render_template(
        "stellwerk.ignition",
        "node.network.j2",
        mac=node.mac,
        mtu=network.mtu,
        address=node.address,
        prefix_length=node.prefix_length,
        gateway=network.gateway,
        dns=network.dns,
        ntp=network.ntp,
    )


def _wireguard_files(context: RenderContext, node: NodePlan) -> list[File]:
    plan, secrets = context.plan, context.secrets
    wireguard = plan.spec.wireguard
    netdev = render_template(
        "stellwerk.ignition",
        "wg0.netdev.j2",
        cluster=plan.name,
        private_key_file=WIREGUARD_KEY_FILE,
        port=wireguard.port,
        peers=context.wireguard_peers_of(node),
    )
    network = render_template("stellwerk.ignition", "wg0.network.j2", address=node.mesh_address,
                              prefix_length=wireguard.network.prefixlen)
    return [
        File(path=WIREGUARD_KEY_FILE, contents=(secrets.wireguard[node.name].private_key + "\n").encode(),
             mode=0o600, user=WIREGUARD_KEY_OWNER, group=WIREGUARD_KEY_OWNER),
        File(path=f"{NETWORK_DIR}/50-wg0.netdev", contents=netdev.encode(), mode=0o644),
        File(path=f"{NETWORK_DIR}/50-wg0.network", contents=network.encode(), mode=0o644),
    ]
