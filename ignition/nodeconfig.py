"""A node's complete config: host basics, its role's additions, then the operator's snippets.

Merge order is all -> role -> pool -> node (see Plan.snippets); later entries win
with Ignition's own merge rules, so a snippet can replace any file Stellwerk writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fragments import fragment_config
from stellwerk.plan import NodePlan

from .cloudinit import UnsupportedByCloudInit, render_cloud_config
from .context import RenderContext
from .controller import controller_config
from .host import host_config
from .merge import MergeConflict, merge
from .model import Config, dumps
from .nodeos import node_os


@dataclass(frozen=True)
class RenderedNode:
    name: str
    file_name: str  # ignition.json or cloud-config.yaml
    data: bytes = field(repr=False)
    config: Config = field(repr=False)


def node_config(context: RenderContext, node: NodePlan) -> Config:
    host_parts = node_os(context.plan.spec.os.family).host_parts(context.plan, node, context.extension_images)
    parts = [host_config(context, node), *host_parts]
    if node.is_controller:
        parts.append(controller_config(context, node))
    parts += [fragment_config(fragment) for fragment in context.fragments(node)]
    for loc, item in node.snippets:
        parts.append(context.snippet(loc, item))
    return merge(*parts)


class NodeConfigError(Exception):
    """A node whose snippets cannot be combined with its config, or expressed for its OS."""

    def __init__(self, node: str, message: str):
        self.node = node
        self.message = message
        super().__init__(f"node {node}: {message}")


def render_node(context: RenderContext, node: NodePlan) -> RenderedNode:
    nodeos = node_os(context.plan.spec.os.family)
    try:
        config = node_config(context, node)
        data = render_cloud_config(config, node.name) if nodeos.config_format == "cloud-config" else dumps(config)
    except MergeConflict as exc:
        raise NodeConfigError(node.name, f"{exc}; change the snippet that writes this path") from None
    except UnsupportedByCloudInit as exc:
        raise NodeConfigError(node.name, f"os.family {nodeos.family} uses {nodeos.provisioner}, which cannot do "
                              f"this: {exc}") from None
    return RenderedNode(node.name, nodeos.config_file, data, config)
