"""What all node configs of one render share, computed once.

A 1000-node cluster renders 1000 configs; pieces that are the same for every
node (the CA, the bootstrap kubeconfig, each peer's wg0 section) are built once
here instead of once per node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from stellwerk.components import node_fragments
from stellwerk.kubeconfig import kubeconfig
from stellwerk.plan import NodePlan, Plan
from stellwerk.secrets import Secrets
from stellwerk.snippets import load_snippet
from stellwerk.base.types import ExtensionImage, Location

from .fragments import NodeFragment
from .model import Config

from stellwerk.base.templating import render_template


@dataclass
class RenderContext:
    plan: Plan
    secrets: Secrets
    extension_images: Mapping[str, ExtensionImage] = field(default_factory=dict)  # built sysexts, by name
    _snippets: dict[Location, Config] = field(default_factory=dict, repr=False)
    _fragments: dict[str, tuple[NodeFragment, ...]] = field(default_factory=dict, repr=False)

    def fragments(self, node: NodePlan) -> tuple[NodeFragment, ...]:
        """What the enabled components need on `node`, asked once per node."""
        if node.name not in self._fragments:
            self._fragments[node.name] = node_fragments(self.plan, node)
        return self._fragments[node.name]

    def node_labels(self, node: NodePlan) -> tuple[tuple[str, str], ...]:
        """The node's labels and the ones its components add (a storage role, say), sorted by key."""
        labels = dict(node.labels)
        for fragment in self.fragments(node):
            labels.update(fragment.labels)
        return tuple(sorted(labels.items()))

    def snippet(self, loc: Location, item: object) -> Config:
        """A snippet translated once, however many nodes it applies to."""
        if loc not in self._snippets:
            self._snippets[loc] = load_snippet(item, self.plan.base_dir, loc)
        return self._snippets[loc]

    @cached_property
    def ca_cert_pem(self) -> bytes:
        return self.secrets.pki.pair("ca").cert_pem

    @cached_property
    def bootstrap_kubeconfig(self) -> bytes:
        return kubeconfig(
            self.plan.name,
            self.plan.api_server_url,
            self.ca_cert_pem,
            "kubelet-bootstrap",
            token=self.secrets.bootstrap_token.value,
        )

    @cached_property
    def kubelet_configurations(self) -> dict[bool, bytes]:
        """The KubeletConfiguration document, which differs only between controllers and workers."""
        from .kubernetes import kubelet_configuration

        return {is_controller: kubelet_configuration(self.plan, is_controller).encode() for is_controller in (True, False)}

    @cached_property
    def wireguard_peer_sections(self) -> dict[str, str]:
        """Each node's [WireGuardPeer] section, as every other node lists it."""
        wireguard = self.plan.spec.wireguard
        return {
            peer.name: render_template(
                "stellwerk.ignition",
                "wg0-peer.j2",
                name=peer.name,
                public_key=self.secrets.wireguard[peer.name].public_key,
                endpoint=f"{peer.address}:{wireguard.port}",
                allowed_ip=f"{peer.mesh_address}/32",
                keepalive=wireguard.persistent_keepalive,
            )
            for peer in self.plan.nodes
        }

    def wireguard_peers_of(self, node: NodePlan) -> str:
        sections = self.wireguard_peer_sections
        return "".join(sections[peer.name] for peer in self.plan.nodes if peer.name != node.name)
