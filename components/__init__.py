"""Cluster components: each turns a few lines under spec.components into Kubernetes
objects and into node fragments (kernel modules, sysctls, udev rules, disks, units)
that the plan merges into the nodes that need them.

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
    adjust_upstream(name, documents, plan, options) -> the pinned upstream objects with cluster values set

Components return data; they never write files.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Order is the order manifests are applied in and fragments are merged in.
_MODULE_NAMES = ("nvme", "host_protection", "metallb", "rook_ceph", "openebs")


def _load() -> tuple[ModuleType, ...]:
    modules = []
    for name in _MODULE_NAMES:
        try:
            modules.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            # A component not yet part of this build; anything else missing is a real error.
            if exc.name != f"{__name__}.{name}":
                raise
    return tuple(modules)


MODULES: tuple[ModuleType, ...] = _load()
BY_KEY: dict[str, ModuleType] = {module.KEY: module for module in MODULES}
