"""Kubernetes objects for manifests/: Stellwerk's own, per component, with the operator's patches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import podnetwork
from .addons import addon_objects
from .base.errors import UserError
from .base.types import AssetFile
from .components import enabled
from .components.base import Component, ComponentOptions
from .load import LoadedCluster, load_cluster
from .plan import Plan, make_plan
from .yamlsource import SourceMap
from .base.yamlout import dump_yaml


class ComponentPatchError(Exception):
    def __init__(self, key: str, index: int, message: str):
        self.key, self.index, self.message = key, index, message
        super().__init__(f"components.{key}.patches[{index}]: {message}")


def component_objects(plan: Plan) -> Iterator[tuple[Component, ComponentOptions, list[dict[str, Any]]]]:
    """(component, its options, its objects after patches) for each enabled component."""
    from .components.patches import PatchError, apply_patches

    for component, options in enabled(plan.cluster):
        objects = component.manifests(plan, options)
        try:
            objects = apply_patches(objects, options.patches)
        except PatchError as exc:
            raise ComponentPatchError(component.key, exc.index, exc.message) from None
        yield component, options, objects


ComponentObjects = list[tuple[Component, ComponentOptions, list[dict[str, Any]]]]


@dataclass(frozen=True)
class CheckedCluster:
    """A cluster file that passed every check: the file on its own, then its components' objects with the
    operator's patches. What `validate` checks; `render` goes on from here, with the objects built once."""

    loaded: LoadedCluster
    plan: Plan
    components: ComponentObjects


def load_checked(cluster_file: Path) -> CheckedCluster:
    """Load `cluster_file` and check it through: a UserError lists every problem, as `validate` prints them."""
    loaded = load_cluster(cluster_file)
    plan = make_plan(loaded.cluster, cluster_file.parent)
    return CheckedCluster(loaded, plan, checked_component_objects(plan, loaded.source))


def checked_component_objects(plan: Plan, source: SourceMap) -> ComponentObjects:
    """Every enabled component's objects, built once: a patch that does not fit its objects is a UserError at
    the patch's line in the cluster file. `validate` and `render` both call this; render then writes what it got."""
    try:
        return list(component_objects(plan))
    except ComponentPatchError as exc:
        raise UserError(source.problem(("spec", "components", exc.key, "patches", exc.index), exc.message)) from None


ADDONS_DIR = "cluster-addons"

Documents = list[dict[str, Any]]


@dataclass(frozen=True)
class UpstreamUse:
    """A pinned upstream manifest the cluster installs: which one, where render writes it, what it sets in it."""

    name: str  # a key of release.UPSTREAM
    directory: str  # under manifests/
    file_name: str  # orders it among the directory's files
    adjust: Callable[[Documents], Documents] | None = None  # sets cluster values; None keeps it byte for byte

    @property
    def path(self) -> str:
        return f"manifests/{self.directory}/{self.file_name}"


def upstream_uses(plan: Plan) -> list[UpstreamUse]:
    """Every pinned upstream manifest the cluster installs, in apply order: the pod network's, then each enabled
    component's (its CRDs first)."""
    network = podnetwork.upstream_names(plan.spec.kubernetes.network)
    first = len(podnetwork.objects(plan))
    uses = [UpstreamUse(name, ADDONS_DIR, f"{first + index:02d}-upstream-{name}.yaml",
                        _adjusting(name, plan)) for index, name in enumerate(network)]
    for component, options in enabled(plan.cluster):
        # 00-<n>-: before the component's own objects, which are numbered from 01.
        uses += [UpstreamUse(name, component.key, f"00-{index}-upstream-{name}.yaml")
                 for index, name in enumerate(component.upstream(options))]
    return uses


def _adjusting(name: str, plan: Plan) -> Callable[[Documents], Documents]:
    return lambda documents: podnetwork.adjust_upstream(name, documents, plan)


def addon_files(plan: Plan) -> dict[str, AssetFile]:
    """manifests/cluster-addons/ but its upstream manifests: the pod network's own objects first, then (after
    the pod network's upstream manifest, see upstream_uses) kube-proxy and CoreDNS."""
    network_objects = podnetwork.objects(plan)
    after = len(network_objects) + len(podnetwork.upstream_names(plan.spec.kubernetes.network))
    return {**object_files(ADDONS_DIR, network_objects), **object_files(ADDONS_DIR, addon_objects(plan), first=after)}


def object_files(directory: str, objects: list[dict[str, Any]], first: int = 0) -> dict[str, AssetFile]:
    """One object per file, numbered from `first` so that applying in name order follows the list order."""
    files: dict[str, AssetFile] = {}
    width = max(2, len(str(first + len(objects))))
    for index, obj in enumerate(objects, start=first):
        name = obj["metadata"]["name"].replace(":", "-").replace("/", "-")
        file_name = f"{index:0{width}d}-{obj['kind'].lower()}-{name}.yaml"
        # Secrets are credentials even in the assets directory.
        mode = 0o600 if obj["kind"] == "Secret" else 0o644
        files[f"manifests/{directory}/{file_name}"] = AssetFile(dump_yaml(obj).encode(), mode)
    return files
