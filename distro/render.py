"""The render pipeline: cluster file -> plan -> secrets -> node configs and manifests -> assets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from . import release
from .assets import WriteReport, claim_assets_dir, write_assets
from .base.types import AssetFile, ExtensionImage
from .bootstrap import bootstrap_objects
from .extensions import images_for_render
from .ignition.nodeos import node_os
from .sysext import build_from_host, os_release_text
from .base.errors import Problem, UserError
from .kubeconfig import kubeconfig
from .lockfile import LOCK_FILE, lock_document
from .manifests import ADDONS_DIR, ComponentObjects, UpstreamUse, addon_files, load_checked, object_files, upstream_uses
from .netbootstore import store_files
from .upstream import default_cache_dir, read_cached
from .plan import Plan
from .secrets import Secrets, load_or_create_secrets
from .base.yamlout import dump_yaml_all

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RenderResult:
    assets_dir: Path
    plan: Plan
    secrets: Secrets
    report: WriteReport
    notes: tuple[str, ...] = ()


def needed_extensions(plan: Plan) -> set[str]:
    """The sysext images some node of the plan merges over /usr."""
    nodeos = node_os(plan.spec.os.family)
    return {name for node in plan.nodes for name in nodeos.extensions(plan, node)}


def default_assets_dir(plan: Plan) -> Path:
    return Path("assets") / plan.name


def render(cluster_file: Path, output: Path | None = None, *, now: datetime | None = None,
           progress: Progress | None = None, cache_dir: Path | None = None) -> RenderResult:
    # Everything is checked (patches against the objects they change) before anything is written; the components'
    # objects are built here, once, and written below.
    checked = load_checked(cluster_file)
    plan, components = checked.plan, checked.components
    assets_dir = output if output is not None else default_assets_dir(plan)
    claim_assets_dir(assets_dir, plan.name)
    needed = needed_extensions(plan)
    nodeos = node_os(plan.spec.os.family)
    built = build_from_host(assets_dir, needed, nodeos.host_binaries, nodeos.extension_release)
    images = images_for_render(plan, cluster_file, assets_dir, needed, os_release_text(nodeos.extension_release))
    secrets = load_or_create_secrets(assets_dir, plan, now=now)

    from .ignition.nodeconfig import NodeConfigError

    notes: list[str] = [f"built the {b.image.name} sysext image {b.image.image} from {b.image.source}"
                        for b in built if b.state == "built"]
    upstream = _UpstreamSource(cache_dir or default_cache_dir(), cluster_file, plan, notes)
    try:
        report = write_assets(assets_dir, plan.name, _derived_files(plan, secrets, images, components, progress, upstream))
        upstream.finish()
    except NodeConfigError as exc:
        raise UserError(Problem(str(cluster_file), None, "spec.snippets", str(exc))) from None
    return RenderResult(assets_dir=assets_dir, plan=plan, secrets=secrets, report=report, notes=tuple(notes))


@dataclass
class _UpstreamSource:
    """Cached upstream manifests for render; missing ones become one note, not a failure."""

    cache: Path
    cluster_file: Path
    plan: Plan
    notes: list[str]
    missing: list[str] = field(default_factory=list)

    def files(self, uses: list[UpstreamUse]) -> Iterator[tuple[str, AssetFile]]:
        for use in uses:
            manifest = release.UPSTREAM[use.name]
            data = read_cached(self.cache, manifest)
            if data is None:
                self.missing.append(f"{use.name} ({manifest.project} {manifest.version}, for manifests/{use.directory})")
                continue
            if use.adjust is not None:
                # The cluster's values set in the upstream objects (documented where they are set); the file is
                # then re-serialized, otherwise it stays byte for byte as upstream has it.
                documents = [doc for doc in yaml.safe_load_all(data) if doc is not None]
                adjusted = use.adjust(copy.deepcopy(documents))
                if adjusted != documents:
                    data = dump_yaml_all(adjusted).encode()
            yield use.path, AssetFile(data)

    def finish(self) -> None:
        if self.missing:
            self.notes.append(
                f"not in the cache {self.cache}: {', '.join(self.missing)}; the rest was rendered. "
                f"Run: stellwerk components fetch {self.cluster_file}, then render again")


def _derived_files(plan: Plan, secrets: Secrets, images: dict[str, ExtensionImage], components: ComponentObjects,
                   progress: Progress | None, upstream: _UpstreamSource) -> Iterator[tuple[str, AssetFile]]:
    """Every derived file, one at a time, so a large cluster never sits in memory whole."""
    from .ignition.context import RenderContext
    from .ignition.nodeconfig import render_node

    # 0600: the lock repeats inline snippets, which may hold credentials.
    yield LOCK_FILE, AssetFile(lock_document(plan).encode(), 0o600)
    yield "auth/admin.conf", AssetFile(_admin_kubeconfig(plan, secrets), 0o600)
    yield from object_files("bootstrap", bootstrap_objects(secrets.bootstrap_token)).items()
    uses = upstream_uses(plan)
    yield from addon_files(plan).items()
    yield from upstream.files([use for use in uses if use.directory == ADDONS_DIR])
    for component, _, objects in components:
        yield from upstream.files([use for use in uses if use.directory == component.key])
        # 00 is for the pinned upstream install manifests, which come first.
        yield from object_files(component.key, objects, first=1).items()
    yield from store_files(plan).items()
    context = RenderContext(plan, secrets, images)
    total = len(plan.nodes)
    for index, node in enumerate(plan.nodes, start=1):
        rendered = render_node(context, node)
        # Controller configs carry private keys; worker configs the bootstrap token.
        yield f"nodes/{node.name}/{rendered.file_name}", AssetFile(rendered.data, 0o600)
        if progress:
            progress("nodes", index, total)


def _admin_kubeconfig(plan: Plan, secrets: Secrets) -> bytes:
    pair = secrets.pki.pair("admin")
    return kubeconfig(
        plan.name, plan.api_server_url, secrets.pki.pair("ca").cert_pem, "kubernetes-admin",
        client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem,
    )
