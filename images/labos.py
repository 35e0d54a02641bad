"""`stellwerk images build-lab-os`: the lab's own OS, built only from Debian packages.

Two cached stages (see docs/images.md):

- base (`base.py`): mmdebstrap root, kernel and modules, squashfs. Keyed by
  the mirror, the suite's signed index, the package and module lists and its
  own source.
- lab-os (`initramfs.py`): the initrd around the squashfs, the kernel copied
  beside it, a manifest. Keyed by the base key and its own source (the init
  script among it).

A build that finds its lab-os entry only links the files into the output
directory. The one network request it makes is the suite's InRelease (to
learn whether the suite changed); when the mirror cannot be reached, the
newest entry built from the same inputs is used, with a note.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..base.errors import Problem, UserError
from . import base, cache, debian, initramfs
from .contract import INITRD_FILE, KERNEL_ARGS, KERNEL_FILE, MANIFEST_FILE, STATE_LABEL
from .progress import Reporter, Silent
from .runner import BuildError, require_root, require_tools

IMAGE_SOURCES = ("initramfs.py", "cpio.py", "contract.py", "templates/")
FORMAT = 1
WHAT = "stellwerk images build-lab-os"
# command -> Debian package, for the error that lists what to install
TOOLS = {"mmdebstrap": "mmdebstrap", "mksquashfs": "squashfs-tools", "depmod": "kmod", "dpkg-deb": "dpkg",
         "zstd": "zstd", "chroot": "coreutils", "systemctl": "systemd"}


@dataclass(frozen=True)
class BuildOptions:
    output: Path
    cache_dir: Path = field(default_factory=cache.default_dir)
    mirror: debian.Mirror = field(default_factory=debian.Mirror)


@dataclass(frozen=True)
class LabOs:
    output: Path
    manifest: dict[str, object]
    cached: bool

    @property
    def kernel(self) -> Path:
        return self.output / KERNEL_FILE

    @property
    def initrd(self) -> Path:
        return self.output / INITRD_FILE


def build_lab_os(options: BuildOptions, reporter: Reporter | None = None) -> LabOs:
    """Build (or find in the cache) the lab OS and publish it into `options.output`."""
    reporter = reporter or Silent()
    _check_output(options.output)
    store = cache.Cache(options.cache_dir)
    reporter.phase("checking the Debian mirror")
    offline_key = _inputs_key(options.mirror)
    try:
        suite = debian.probe(options.mirror)
    except debian.MirrorUnreachable:
        entry = _newest_built_from(store, offline_key)
        if entry is None:
            raise
        reporter.note(f"the mirror {options.mirror.base} cannot be reached; using the lab OS built on "
                      f"{_manifest(entry)['built']} from the same inputs")
        return _finish(entry, options.output, reporter, cached=True)

    base_key = cache.key(base.inputs(options.mirror, suite, cache.source_digest(base.SOURCES)))
    image_key = cache.key({"stage": "lab-os", "format": FORMAT, "base": base_key,
                           "sources": cache.source_digest(IMAGE_SOURCES)})
    entry = store.lookup("lab-os", image_key)
    cached = entry is not None
    if entry is not None:
        store.touch(entry)
    else:
        require_root(WHAT)
        require_tools(WHAT, TOOLS)
        with store.locked():
            # Another build may have finished it while this one waited for the lock.
            entry = store.lookup("lab-os", image_key) or _build(store, options, suite, base_key, image_key,
                                                                 offline_key, reporter)
    return _finish(entry, options.output, reporter, cached=cached)


def _build(store: cache.Cache, options: BuildOptions, suite: debian.SuiteState, base_key: str, image_key: str,
           offline_key: str, reporter: Reporter) -> Path:
    store.clean_work()
    logs = options.cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{image_key[:16]}.log").open("w") as log:
        base_entry = store.lookup("base", base_key)
        if base_entry is None:
            context = base.Context(options.mirror, suite, base_key, options.cache_dir, reporter, log)
            with store.building("base", base_key) as work:
                base.build(context, work, work / "out")
            base_entry = store.entry("base", base_key)
        store.touch(base_entry)
        with store.building("lab-os", image_key) as work:
            _build_image(base_entry, work, work / "out", image_key, offline_key, reporter)
    store.prune("base")
    store.prune("lab-os")
    return store.entry("lab-os", image_key)


def _build_image(base_entry: Path, work: Path, out: Path, image_key: str, offline_key: str,
                 reporter: Reporter) -> None:
    info = base.load_info(base_entry)
    reporter.phase("making the initrd")
    busybox = base_entry / base.BUSYBOX_FILE
    parts = initramfs.Parts(squashfs=base_entry / base.SQUASHFS, busybox=busybox,
                            busybox_applets=initramfs.busybox_applets(busybox),
                            ignition=base_entry / base.IGNITION_FILE,
                            modules=base_entry / base.INITRAMFS_MODULES_DIR, image_id=str(info["key"])[:16])
    epoch = int(str(info["source_date_epoch"]))
    try:
        initramfs.write_initrd(parts, out / INITRD_FILE, epoch, work)
    except subprocess.CalledProcessError as exc:
        raise BuildError("zstd", f"compressing the initramfs failed with exit code {exc.returncode}") from exc
    shutil.copyfile(base_entry / base.VMLINUZ, out / KERNEL_FILE)
    manifest = {
        "name": "stellwerk-lab-os", "format": FORMAT, "key": image_key, "inputs_key": offline_key,
        "image_id": parts.image_id, "built": _iso(epoch),
        "debian": {k: info[k] for k in ("mirror", "suite", "suite_version", "inrelease_sha256")},
        "kernel": info["kernel"], "busybox": info["busybox"], "ignition": info["ignition"],
        "packages": info["packages"], "modules": info["modules"],
        "kernel_args": list(KERNEL_ARGS), "state_label": STATE_LABEL,
        "files": {name: _describe(out / name) for name in (KERNEL_FILE, INITRD_FILE)},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _finish(entry: Path, output: Path, reporter: Reporter, *, cached: bool) -> LabOs:
    reporter.phase("publishing")
    publish(entry, output)
    manifest = _manifest(entry)
    kernel = manifest["kernel"]
    assert isinstance(kernel, dict)
    reporter.done(f"lab OS {manifest['image_id']} ({'cached' if cached else 'built'}): kernel {kernel['release']}, "
                  f"initrd {_mib(output / INITRD_FILE)} MiB in {output}")
    return LabOs(output, manifest, cached)


def publish(entry: Path, output: Path) -> None:
    """Put the entry's files into `output`: hard links when the cache is on the same filesystem, else copies.

    Each file appears whole (written beside, then renamed), so netboot never
    serves half an initrd.
    """
    output.mkdir(parents=True, exist_ok=True)
    for name in (KERNEL_FILE, INITRD_FILE, MANIFEST_FILE):
        source, target = entry / name, output / name
        if target.exists() and os.path.samefile(source, target):
            continue
        temporary = output / f".{name}.new"
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(Problem(str(output), None, "", "is not a directory (--output names a directory)"))


def _inputs_key(mirror: debian.Mirror) -> str:
    """The key without the suite's state: what an offline build may fall back on."""
    unknown = debian.SuiteState(inrelease_sha256="", epoch=0, version="")
    return cache.key({"base": base.inputs(mirror, unknown, cache.source_digest(base.SOURCES)),
                      "sources": cache.source_digest(IMAGE_SOURCES)})


def _newest_built_from(store: cache.Cache, inputs_key: str) -> Path | None:
    for entry in store.entries("lab-os"):
        try:
            if _manifest(entry).get("inputs_key") == inputs_key:
                return entry
        except (OSError, ValueError):
            continue
    return None


def _manifest(entry: Path) -> dict[str, object]:
    return json.loads((entry / MANIFEST_FILE).read_text())


def _describe(path: Path) -> dict[str, object]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mib(path: Path) -> int:
    return round(path.stat().st_size / (1 << 20))
