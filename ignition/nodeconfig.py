"""A node's complete config: host basics, its role's additions, then the operator's snippets.

Merge order is all -> role -> pool -> node (see Plan.snippets); later entries win
with Ignition's own merge rules, so a snippet can replace any file Stellwerk writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellwerk.plan import NodePlan

from .cloudinit import render_cloud_config
from .context import RenderContext
from .controller import controller_config
from .flatcar import sysext_config
from .host import host_config
from .merge import merge
from .model import Config, dumps


@dataclass(frozen=True)
class RenderedNode:
    name: str
    file_name: str  # ignition.json or cloud-config.yaml
    data: bytes
    config: Config


def node_config(context: RenderContext, node: NodePlan) -> Config:
    parts = [host_config(context, node)]
    if context.plan.spec.os.family == "flatcar":
        parts.append(sysext_config(context.plan, node))
    if node.is_controller:
        parts.append(controller_config(context, node))
    for loc, item in node.snippets:
        parts.append(context.snippet(loc, item))
    return merge(*parts)


def render_node(context: RenderContext, node: NodePlan) -> RenderedNode:
    config = node_config(context, node)
    if context.plan.spec.os.family == "debian":
        return RenderedNode(node.name, "cloud-config.yaml", render_cloud_config(config, node.name), config)
    return RenderedNode(node.name, "ignition.json", dumps(config), config)
