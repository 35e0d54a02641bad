"""The Debian stage of the lab OS: everything that comes from the mirror.

Out of it come the OS image (a squashfs of the root, with its kernel
modules), the kernel, and the pieces the initramfs is assembled from
(busybox, Ignition, the modules that mount the image). It is the slow,
network-bound stage, so it is cached on its own: changing the init script
rebuilds only the initrd.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import debian, kmods, rootfs
from .progress import Reporter
from .runner import BuildError, run

# Files of this package whose content decides what the stage produces.
SOURCES = ("base.py", "debian.py", "kmods.py", "rootfs.py", "files/")

KERNEL_META_PACKAGE = "linux-image-amd64"
# Where the Debian packages keep what the initramfs takes from them.
BUSYBOX = ("busybox-static", "bin/busybox")
IGNITION = ("ignition", "usr/lib/dracut/modules.d/30ignition/ignition")

# Names of the entry's files.
SQUASHFS = "root.squashfs"
VMLINUZ = "vmlinuz"
BUSYBOX_FILE = "busybox"
IGNITION_FILE = "ignition"
INITRAMFS_MODULES_DIR = "initramfs-modules"
INFO = "base.json"


@dataclass(frozen=True)
class Context:
    mirror: debian.Mirror
    suite: debian.SuiteState
    key: str
    cache_dir: Path
    reporter: Reporter
    log: TextIO


def inputs(mirror: debian.Mirror, suite: debian.SuiteState, sources: str) -> dict[str, object]:
    """What the stage's cache key is made of."""
    return {
        "stage": "base", "format": 1,
        "mirror": mirror.base, "suite": mirror.suite, "components": list(mirror.components),
        "architecture": mirror.architecture,
        # The signed index of the suite: it pins every package version, the kernel's included.
        "inrelease_sha256": suite.inrelease_sha256,
        "packages": list(rootfs.PACKAGES), "enabled_units": list(rootfs.ENABLED_UNITS),
        "masked_units": list(rootfs.MASKED_UNITS),
        "kernel": KERNEL_META_PACKAGE, "modules": list(kmods.OS_MODULES),
        "initramfs_modules": list(kmods.INITRAMFS_MODULES), "sources": sources,
    }


def build(ctx: Context, work: Path, out: Path) -> dict[str, object]:
    """Build the stage into `out`; returns what base.json records."""
    root = work / "root"
    archives = ctx.cache_dir / "apt-archives"
    archives.mkdir(parents=True, exist_ok=True)
    ctx.reporter.phase("installing Debian packages (mmdebstrap)")
    _run(ctx, rootfs.mmdebstrap_command(ctx.mirror, root, archives), "mmdebstrap",
         env={"SOURCE_DATE_EPOCH": str(ctx.suite.epoch)})
    ctx.reporter.phase("fetching kernel, busybox and Ignition")
    versions, unpacked = _fetch_debs(ctx, root, work / "debs")
    kernel_tree = unpacked[KERNEL_META_PACKAGE]
    ctx.reporter.phase("selecting kernel modules")
    release, os_modules, boot_modules = _install_modules(ctx, kernel_tree, root, out / INITRAMFS_MODULES_DIR)
    ctx.reporter.phase("configuring the root")
    installed = _configure(ctx, root, archives)
    info: dict[str, object] = {
        "key": ctx.key, "mirror": ctx.mirror.base, "suite": ctx.mirror.suite, "suite_version": ctx.suite.version,
        "inrelease_sha256": ctx.suite.inrelease_sha256, "source_date_epoch": ctx.suite.epoch,
        "kernel": {"package": versions[KERNEL_META_PACKAGE][0], "version": versions[KERNEL_META_PACKAGE][1],
                   "release": release},
        "busybox": versions[BUSYBOX[0]][1], "ignition": versions[IGNITION[0]][1],
        "packages": {name: installed[name] for name in rootfs.PACKAGES if name in installed},
        "modules": os_modules, "initramfs_modules": boot_modules,
    }
    rootfs.scrub(root, json.dumps({k: info[k] for k in ("key", "suite", "suite_version", "kernel")}, indent=2) + "\n")
    rootfs.mark_updated(root, ctx.suite.epoch)
    ctx.reporter.phase("making the squashfs image")
    _run(ctx, rootfs.mksquashfs_command(root, out / SQUASHFS, ctx.suite.epoch), "mksquashfs")
    shutil.copyfile(kernel_tree / "boot" / f"vmlinuz-{release}", out / VMLINUZ)
    for (package, inside), name in ((BUSYBOX, BUSYBOX_FILE), (IGNITION, IGNITION_FILE)):
        shutil.copyfile(unpacked[package] / inside, out / name)
        (out / name).chmod(0o755)
    info["squashfs_bytes"] = (out / SQUASHFS).stat().st_size
    (out / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _run(ctx: Context, args: list[str | Path], what: str, env: dict[str, str] | None = None) -> None:
    run(args, log=ctx.log, reporter=ctx.reporter, what=what, env=env)


def _fetch_debs(ctx: Context, root: Path, target: Path) -> tuple[dict[str, tuple[str, str]], dict[str, Path]]:
    """Download and unpack the kernel, busybox-static and Ignition from the root's package indexes.

    Returns, by the name asked for (the kernel by its meta-package), the real
    package and its version, and the directory it was unpacked into.
    """
    indexes = debian.package_indexes(root / "var/lib/apt/lists")
    wanted = [KERNEL_META_PACKAGE, BUSYBOX[0], IGNITION[0]]
    records = debian.find_packages(indexes, wanted)
    missing = [name for name in wanted if name not in records]
    if missing:
        raise BuildError(ctx.mirror.base, f"not in {ctx.mirror.suite}: {', '.join(missing)}")
    # linux-image-amd64 only points at the current kernel package, e.g. linux-image-6.1.0-37-amd64
    kernel = debian.first_dependency(records[KERNEL_META_PACKAGE])
    found = debian.find_packages(indexes, [kernel])
    if kernel not in found:
        raise BuildError(ctx.mirror.base, f"{KERNEL_META_PACKAGE} depends on {kernel}, which is not in the suite")
    records[KERNEL_META_PACKAGE] = found[kernel]
    versions: dict[str, tuple[str, str]] = {}
    unpacked: dict[str, Path] = {}
    for name in wanted:
        record = records[name]
        versions[name] = (record.name, record.version)
        deb = debian.download(ctx.mirror, record, ctx.cache_dir / "debs",
                              progress=lambda done, total, n=record.name: ctx.reporter.detail(
                                  f"{n}: {done >> 20} of {total >> 20} MiB"))
        unpacked[name] = target / record.name
        unpacked[name].parent.mkdir(parents=True, exist_ok=True)
        _run(ctx, ["dpkg-deb", "-x", deb, unpacked[name]], f"unpacking {record.name}")
    return versions, unpacked


def _install_modules(ctx: Context, kernel_tree: Path, root: Path, initramfs_tree: Path
                     ) -> tuple[str, list[str], list[str]]:
    """Copy the OS's modules into the root and the initramfs's into their own tree; depmod both."""
    releases = sorted(p.name for p in (kernel_tree / "lib/modules").iterdir())
    if len(releases) != 1:
        raise BuildError(str(kernel_tree), f"expected one kernel release in the package, found {releases}")
    release = releases[0]
    source = kernel_tree / "lib/modules" / release
    _run(ctx, kmods.depmod_command(kernel_tree, release), "depmod")
    index = kmods.ModuleIndex.load(source)
    try:
        os_modules = index.resolve(kmods.OS_MODULES)
        boot_modules = index.resolve(kmods.INITRAMFS_MODULES)
    except kmods.ModuleError as exc:
        raise BuildError(f"kernel {release}", str(exc)) from exc
    # The root is merged-/usr: /lib is a link to usr/lib, and depmod -b follows it.
    kmods.copy_modules(index, os_modules, source, root / "usr/lib/modules" / release)
    _run(ctx, kmods.depmod_command(root, release), "depmod")
    kmods.copy_modules(index, boot_modules, source, initramfs_tree / "lib/modules" / release)
    _run(ctx, kmods.depmod_command(initramfs_tree, release), "depmod")
    return release, os_modules, boot_modules


def _configure(ctx: Context, root: Path, archives: Path) -> dict[str, str]:
    """Stellwerk's files and unit presets; returns the installed packages (and prunes the .deb cache to them)."""
    rootfs.install_files(root)
    _run(ctx, ["chroot", root, *rootfs.PRESET_ALL], "systemctl preset-all")
    installed = rootfs.installed_packages(root)
    rootfs.prune_apt_archives(archives, installed, ctx.mirror.architecture)
    return installed


def load_info(entry: Path) -> dict[str, object]:
    return json.loads((entry / INFO).read_text())
