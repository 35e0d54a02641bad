"""Every container image a cluster pulls, with where it is named: for mirroring ahead of an air-gapped install.

The control plane's static pods, the add-ons, every component's own objects, and the pinned upstream manifests in
the cache (a manifest not fetched yet is named, since its images cannot be listed without it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import release
from .addons import addon_objects
from .manifests import ComponentObjects, upstream_uses
from .plan import Plan
from .upstream import read_cached


@dataclass(frozen=True)
class ImageUse:
    image: str
    where: str  # "static pod kube-apiserver", "manifests/metallb DaemonSet metallb-system/speaker", ...


def images_in(obj: Any) -> Iterator[str]:
    """The `image` of every container, init container and ephemeral container anywhere in a Kubernetes object, and
    the image an operator's custom resource runs its daemons from (Rook's CephCluster: spec.cephVersion.image)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        yield container["image"]
            if key == "cephVersion" and isinstance(value, dict) and isinstance(value.get("image"), str):
                yield value["image"]
            yield from images_in(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from images_in(item)


def _label(obj: dict) -> str:
    metadata = obj.get("metadata") or {}
    name = f"{metadata['namespace']}/{metadata.get('name')}" if metadata.get("namespace") else metadata.get("name")
    return f"{obj.get('kind')} {name}"


def cluster_images(plan: Plan, components: ComponentObjects, cache: Path) -> tuple[list[ImageUse], list[str]]:
    """(every image use, the upstream manifests not in the cache)."""
    uses = [ImageUse(release.control_plane_image(component, plan.spec.kubernetes.version), f"static pod {component}")
            for component in release.CONTROL_PLANE_COMPONENTS]
    for obj in addon_objects(plan):
        uses += [ImageUse(image, f"manifests/cluster-addons {_label(obj)}") for image in images_in(obj)]
    missing = []
    for upstream in upstream_uses(plan):
        manifest = release.UPSTREAM[upstream.name]
        data = read_cached(cache, manifest)
        if data is None:
            missing.append(upstream.name)
            continue
        for obj in yaml.safe_load_all(data):
            if isinstance(obj, dict):
                uses += [ImageUse(image, f"{upstream.name} {manifest.version} {_label(obj)}")
                         for image in images_in(obj)]
    for component, _, objects in components:
        for obj in objects:
            uses += [ImageUse(image, f"manifests/{component.key} {_label(obj)}") for image in images_in(obj)]
    return uses, missing


def pinned(image: str) -> bool:
    """Whether the reference names one image: a digest, or a tag other than latest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")
