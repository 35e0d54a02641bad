"""The systemd-sysext images nodes merge over /usr: which ones a cluster needs, and the record of those built.

`stellwerk images sysext` builds them into ASSETS/boot/sysext/, which netboot serves as /assets/sysext/, and
records each one in extensions.json beside them. Render reads that record and hashes each image again, so a
node's Ignition fetches exactly the image that was built, checked by its sha512; an image that is missing, or that
no longer matches what was recorded, stops the render with the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import release
from .base.errors import Problem, UserError
from .base.types import ExtensionImage
from .binaries import Artifact, etcd_artifacts, kubernetes_artifacts

if TYPE_CHECKING:
    from .plan import Plan

SYSEXT_DIR = "boot/sysext"  # inside the assets directory; netboot serves boot/ as /assets/
RECORD = f"{SYSEXT_DIR}/extensions.json"
SERVED_PATH = release.SYSEXT_SERVED_PATH
ARCHITECTURE = "x86-64"  # systemd's name for the one architecture Stellwerk builds for
# What each extension puts in /usr/bin.
BINARIES = {"kubernetes": ("kubelet", "kubectl"), "etcd": ("etcd", "etcdctl")}


def version_of(plan: Plan, name: str) -> str:
    return plan.spec.kubernetes.version if name == "kubernetes" else release.ETCD_VERSION


def pinned_artifacts(plan: Plan, name: str) -> tuple[Artifact, ...] | None:
    version = version_of(plan, name)
    return kubernetes_artifacts(version) if name == "kubernetes" else etcd_artifacts(version)


def image_name(name: str, version: str) -> str:
    """kubernetes-v1.31.4-x86-64.raw; etcd-local-<digest>-x86-64.raw for the operator's own binaries."""
    return f"{name}-{version if version.startswith('local-') else 'v' + version}-{ARCHITECTURE}.raw"


def read_record(assets_dir: Path) -> dict[str, ExtensionImage]:
    """The recorded images, by extension name; empty when none were built. Every field is checked: render turns
    them into paths and URLs."""
    path = assets_dir / RECORD
    fix = "remove it and run `stellwerk images sysext` again"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(Problem(str(path), None, "", f"unreadable ({exc}); {fix}")) from None
    entries = document.get("extensions") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise UserError(Problem(str(path), None, "extensions", f"is not a mapping of extension names; {fix}"))
    images = {}
    for name, entry in entries.items():
        problem = _bad_entry(name, entry)
        if problem:
            raise UserError(Problem(str(path), None, f"extensions.{name}", f"{problem}; {fix}"))
        images[name] = ExtensionImage(**entry)
    return images


_VERSION = re.compile(r"\d+\.\d+\.\d+|local-[0-9a-f]{12}")
_FIELDS = {"name", "version", "image", "sha512", "source", "os_release"}


def _bad_entry(name: str, entry: object) -> str | None:
    if name not in BINARIES:
        return f"no extension is called {name!r} (known: {', '.join(sorted(BINARIES))})"
    if not isinstance(entry, dict) or set(entry) != _FIELDS or not all(isinstance(v, str) for v in entry.values()):
        return f"wants exactly the text fields {', '.join(sorted(_FIELDS))}"
    if entry["name"] != name or not _VERSION.fullmatch(entry["version"]):
        return f"names {entry['name']!r} at version {entry['version']!r}"
    if entry["image"] != image_name(name, entry["version"]):
        return f"image {entry['image']!r} is not {image_name(name, entry['version'])!r}"
    if not re.fullmatch(r"[0-9a-f]{128}", entry["sha512"]):
        return "sha512 is not 128 hex digits"
    return None


def write_record(assets_dir: Path, images: dict[str, ExtensionImage]) -> None:
    path = assets_dir / RECORD
    document = {"extensions": {name: asdict(image) for name, image in sorted(images.items())}}
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".extensions-")
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        raise UserError(Problem(str(path), None, "", f"cannot write the record of the sysext images: "
                                f"{exc.strerror or exc}")) from None


def sha512_of(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def images_for_render(plan: Plan, cluster_file: Path, assets_dir: Path, needed: set[str],
                      os_release: str) -> dict[str, ExtensionImage]:
    """The built images of the extensions in `needed`, each checked against its file and built for the nodes' OS
    (`os_release`, as the images' extension-release holds it); UserError naming the fix."""
    if not needed:
        return {}
    recorded = read_record(assets_dir)
    build = f"`stellwerk images sysext {cluster_file} -o {assets_dir}`"
    problems = []
    found = {}
    for name in sorted(needed):
        image = recorded.get(name)
        wanted = version_of(plan, name)
        if image is None:
            problems.append(Problem(str(cluster_file), None, "spec.os.family", f"the nodes need the {name} sysext image "
                                    f"({name} {wanted}), and {assets_dir / SYSEXT_DIR} has none; run {build}"))
            continue
        if image.os_release != os_release:
            problems.append(Problem(str(assets_dir / RECORD), None, name, f"was built for {image.os_release}, the "
                                    f"nodes' systemd-sysext would refuse it on {os_release}; move "
                                    f"{assets_dir / SYSEXT_DIR / image.image} away and run {build}"))
            continue
        if image.pinned and image.version != wanted:
            problems.append(Problem(str(assets_dir / RECORD), None, name, f"holds {name} {image.version}, the cluster "
                                    f"wants {wanted}; run {build}"))
            continue
        path = assets_dir / SYSEXT_DIR / image.image
        try:
            actual = sha512_of(path)
        except OSError as exc:
            problems.append(Problem(str(path), None, "", f"{exc.strerror or exc}; run {build}"))
            continue
        if actual != image.sha512:
            problems.append(Problem(str(path), None, "", f"its sha512 is not the one recorded when it was built "
                                    f"(changed since); run {build} to build it again"))
            continue
        found[name] = image
    if problems:
        raise UserError(problems)
    return found
