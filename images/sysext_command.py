"""`stellwerk images sysext`: the cluster's sysext images, from pinned upstream files or the operator's binaries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from stellwerk.assets import claim_assets_dir
from stellwerk.base.errors import Problem, UserError
from stellwerk.extensions import BINARIES, SYSEXT_DIR, pinned_artifacts, version_of
from stellwerk.ignition.nodeos import node_os
from stellwerk.manifests import load_checked
from stellwerk.release import UpstreamManifest
from stellwerk.render import default_assets_dir, needed_extensions
from stellwerk.summary import download_bar
from stellwerk.upstream import default_cache_dir, fetch, read_cached

from stellwerk.sysext import binaries_from_artifacts, install_image, local_source, local_version, pinned_source


def parse_binaries(values: tuple[str, ...]) -> dict[str, Path]:
    known = sorted(binary for names in BINARIES.values() for binary in names)
    found: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise UserError(Problem("--binary", None, "", f"{value!r}: write NAME=PATH, such as etcd=/usr/bin/etcd"))
        if name not in known:
            raise UserError(Problem("--binary", None, "", f"{name!r} is not a binary of any extension; "
                                    f"known: {', '.join(known)}"))
        if name in found:
            raise UserError(Problem("--binary", None, "", f"{name} is given twice"))
        found[name] = Path(path)
    return found


def _read_local(paths: dict[str, Path], names: tuple[str, ...]) -> dict[str, bytes]:
    binaries = {}
    for binary in names:
        try:
            binaries[binary] = paths[binary].read_bytes()
        except OSError as exc:
            raise UserError(Problem(str(paths[binary]), None, "", f"--binary {binary}: {exc.strerror or exc}")) from None
    return binaries


def _manifest(artifact) -> UpstreamManifest:
    return UpstreamManifest(artifact.name, artifact.name, artifact.version, artifact.url, artifact.sha256, None)


def build_cluster_images(cluster_file: Path, output: Path | None, *, mirror: Path | None, binaries: tuple[str, ...],
                         cache_dir: Path | None) -> Iterator[str]:
    plan = load_checked(cluster_file).plan
    local = parse_binaries(binaries)
    nodeos = node_os(plan.spec.os.family)
    needed = sorted(needed_extensions(plan))
    if not needed:
        yield f"nothing to build: {plan.spec.os.family} nodes get their binaries as {nodeos.binaries}"
        return
    assets_dir = output if output is not None else default_assets_dir(plan)
    claim_assets_dir(assets_dir, plan.name)
    cache = cache_dir or default_cache_dir()
    host = {binary: Path(path) for binary, path in nodeos.host_binaries}
    unused = set(local) - {binary for name in needed for binary in BINARIES[name]}
    if unused:
        raise UserError(Problem("--binary", None, "", f"{', '.join(sorted(unused))}: no extension of this cluster "
                                f"holds it (it needs {', '.join(needed)})"))
    # Every choice is checked before anything is downloaded.
    for name in needed:
        names = BINARIES[name]
        given = [binary for binary in names if binary in local]
        if given and len(given) != len(names):
            raise UserError(Problem("--binary", None, "", f"the {name} extension takes all of {', '.join(names)} "
                                    f"from --binary or none; missing: {', '.join(b for b in names if b not in local)}"))
        if not given and all(binary in host for binary in names):
            local.update({binary: host[binary] for binary in names})
        elif not given and pinned_artifacts(plan, name) is None:
            raise UserError(Problem(str(cluster_file), None, "spec.kubernetes.version",
                                    f"this release pins no {name} {version_of(plan, name)} binaries; choose a "
                                    f"pinned version, or pass --binary for each of {', '.join(names)}"))
    for name in needed:
        names = BINARIES[name]
        if names[0] in local:
            data = _read_local(local, names)
            built = install_image(assets_dir, name, local_version(data, nodeos.extension_release), data, local_source(data),
                                  nodeos.extension_release)
        else:
            artifacts = pinned_artifacts(plan, name) or ()
            manifests = {artifact: _manifest(artifact) for artifact in artifacts}
            with download_bar() as progress:
                fetch(list(manifests.values()), cache, mirror=mirror, progress=progress)

            def read(artifact):
                data = read_cached(cache, manifests[artifact])
                if data is None:  # removed or changed between the fetch and now
                    raise UserError(Problem(str(cache), None, "", f"{artifact.url} left the cache; run again"))
                return data

            data = binaries_from_artifacts(artifacts, read)
            built = install_image(assets_dir, name, version_of(plan, name), data, pinned_source(artifacts),
                                  nodeos.extension_release)
        image = built.image
        yield (f"{built.state:<9} {assets_dir / SYSEXT_DIR / image.image}  sha512:{image.sha512[:16]}  "
               f"({image.source})")
    yield f"netboot serves them as {plan.spec.os.sysext_base_url or '/assets/sysext'}/<image>; now run render"
