"""Cluster components: each turns a few lines under spec.components into Kubernetes
objects and into node fragments (kernel modules, sysctls, udev rules, disks, units)
that each node's config merges in, on the nodes that need them.

Every component module has the same shape:

    KEY          its key under spec.components (camelCase) and its manifests/ directory
    Options      the pydantic model of its options (a ComponentOptions)
    upstream(options) -> names of pinned upstream install manifests it needs (keys of stellwerk.release.UPSTREAM)
    check(cluster, options)              -> iterable of (location, message) for cross-field rules
    manifests(plan, options)             -> list of Kubernetes objects (dicts), Stellwerk's own
    node_fragments(plan, options, node)  -> a NodeFragment for that node, or None

Optional:

    claims(cluster, options)             -> Claims on disks and mount paths (see claims.py); two components
                                            claiming the same one on a node is a validation error

Components return data; they never write files. Each module is read once into a Component (base.py), which
checks this shape and that the module's name is its KEY in snake case; the stages use only COMPONENTS and BY_KEY.
Adding a component: its module, and its place in COMPONENTS.
"""

from __future__ import annotations

from typing import Any

from stellwerk.ignition.fragments import NodeFragment

from . import host_protection, metallb, nvme, openebs, rook_ceph
from .base import Component, ComponentOptions

# The order manifests are applied in and fragments merged in.
COMPONENTS: tuple[Component, ...] = tuple(Component.of(module) for module in (nvme, host_protection, metallb,
                                                                              rook_ceph, openebs))
BY_KEY: dict[str, Component] = {component.key: component for component in COMPONENTS}


def enabled(cluster: Any) -> list[tuple[Component, ComponentOptions]]:
    """(component, its options) for every component the cluster enables, in apply order."""
    return [(component, options) for component in COMPONENTS if (options := component.options_in(cluster)) is not None]


def node_fragments(plan: Any, node: Any) -> tuple[NodeFragment, ...]:
    """What the enabled components need on one node, in component order."""
    return tuple(fragment for component, options in enabled(plan.cluster)
                 if (fragment := component.node_fragments(plan, options, node)) is not None)
