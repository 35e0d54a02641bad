"""The lab OS initrd: one file holding two concatenated cpio archives.

1. Uncompressed: the OS image, `stellwerk/root.squashfs`. It is compressed
   already; compressing it again costs boot time and saves nothing. The
   kernel wants an uncompressed archive to start on a 4-byte boundary, which
   the first one does.
2. zstd-compressed: busybox and /init (stage 0), the modules that mount the
   image (loop, squashfs, overlay), and `stellwerk/initrd/`, the files that
   /init lays over a copy of the image's /etc to make the systemd initrd:
   /etc/initrd-release, the provisioning service and scripts, Ignition.
   Ignition lives only here, not in the OS.

The kernel unpacks every archive of the initrd into one tmpfs, in order.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..base.templating import environment
from ..netboot.machines import FAILURE_LINE_CHARS
from . import cpio
from .contract import IMAGE_IN_INITRD, PROVISIONED_MARKER, STATE_LABEL
from .kmods import INITRAMFS_MODULES

ZSTD_LEVEL = 12
# Where /init mounts the image; it stays mounted (under /run) as the root's lower layer.
IMAGE_MOUNT = "/run/stellwerk/image"
# Mount points and directories /init needs before it mounts anything.
_DIRECTORIES = ("dev", "proc", "sys", "run", "newroot")
_INITRD = "stellwerk/initrd"
_UNITS = f"{_INITRD}/etc/systemd/system"


@dataclass(frozen=True)
class Parts:
    """What the Debian stage produced for the initramfs."""

    squashfs: Path
    busybox: Path
    busybox_applets: tuple[str, ...]
    ignition: Path
    modules: Path  # a tree holding lib/modules/<release>/
    image_id: str


def render(template: str) -> str:
    return environment("stellwerk.images").get_template(template).render(
        state_label=STATE_LABEL, marker=PROVISIONED_MARKER, lower=IMAGE_MOUNT, image_in_initrd=IMAGE_IN_INITRD,
        initramfs_modules=INITRAMFS_MODULES, failure_line_chars=FAILURE_LINE_CHARS)


def initrd_release(image_id: str) -> str:
    """os-release of the initrd; its presence is what makes systemd run as an initrd."""
    return (f'NAME="Stellwerk lab OS initrd"\nID=stellwerk-initrd\nPRETTY_NAME="Stellwerk lab OS initrd ({image_id})"\n'
            f"VERSION_ID={image_id}\n")


def busybox_applets(busybox: Path) -> tuple[str, ...]:
    """The applet names of a busybox binary (it is static, so the build host can run it)."""
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout
    return tuple(sorted(name for name in listed.split() if name and "/" not in name and name != "busybox"))


def boot_entries(parts: Parts) -> list[cpio.Entry]:
    """Everything of the compressed archive (2.)."""
    entries = [cpio.directory(d) for d in _DIRECTORIES]
    # The kernel opens /dev/console for /init before anything is mounted.
    entries.append(cpio.char_device("dev/console", 5, 1))
    entries.append(cpio.file_data("init", render("init.sh.j2").encode(), 0o755))
    entries.append(cpio.file_from("bin/busybox", parts.busybox, 0o755))
    entries += [cpio.symlink(f"bin/{applet}", "busybox") for applet in parts.busybox_applets]
    entries += cpio.tree(parts.modules / "lib", "lib")
    entries += [
        cpio.file_data(f"{_INITRD}/etc/initrd-release", initrd_release(parts.image_id).encode()),
        cpio.file_data(f"{_UNITS}/stellwerk-provision.service", render("stellwerk-provision.service.j2").encode()),
        cpio.symlink(f"{_UNITS}/initrd-root-fs.target.requires/stellwerk-provision.service",
                     "../stellwerk-provision.service"),
        cpio.file_data(f"{_UNITS}/emergency.service", render("emergency.service.j2").encode()),
        cpio.file_data(f"{_INITRD}/stellwerk/provision.sh", render("provision.sh.j2").encode(), 0o755),
        cpio.file_data(f"{_INITRD}/stellwerk/failed.sh", render("failed.sh.j2").encode(), 0o755),
        cpio.file_data(f"{_INITRD}/stellwerk/udhcpc.sh", render("udhcpc.sh.j2").encode(), 0o755),
        cpio.file_data(f"{_INITRD}/stellwerk/network.sh", render("network.sh.j2").encode(), 0o644),
        cpio.file_data(f"{_INITRD}/stellwerk/image-id", parts.image_id.encode() + b"\n"),
        cpio.file_from(f"{_INITRD}/stellwerk/bin/ignition", parts.ignition, 0o755),
        cpio.file_from(f"{_INITRD}/stellwerk/bin/busybox", parts.busybox, 0o755),
    ]
    return entries


def write_initrd(parts: Parts, output: Path, epoch: int, work: Path) -> None:
    """Write the initrd to `output`; `work` holds the uncompressed second archive meanwhile."""
    with output.open("wb") as out:
        cpio.write(out, [cpio.file_from(IMAGE_IN_INITRD, parts.squashfs, 0o644)], epoch)
    boot = work / "boot.cpio"
    with boot.open("wb") as out:
        cpio.write(out, boot_entries(parts), epoch)
    with output.open("ab") as out:
        subprocess.run(["zstd", "-q", f"-{ZSTD_LEVEL}", "-T0", "-c", str(boot)], stdout=out, check=True)
    boot.unlink()
