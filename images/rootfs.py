"""The lab OS root filesystem: Debian packages installed by mmdebstrap, then made into an image.

The root is what every node runs and also the toolbox the initramfs borrows
on first boot (udevd, mkfs, sgdisk, mdadm, useradd, setfiles), so both lists
live here. It becomes a read-only squashfs under an overlay, so nothing in it
may be specific to one machine: no ssh host keys, no machine-id, no hostname.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from .debian import Mirror

PACKAGES: tuple[str, ...] = (
    # init, devices, network, time, names
    "systemd", "systemd-sysv", "udev", "dbus", "systemd-timesyncd", "systemd-resolved", "iproute2",
    # the node's services and their tools
    # (no etcd: controllers get the host's as a systemd-sysext image, the way Flatcar nodes get theirs)
    "wireguard-tools", "nftables", "curl", "ca-certificates",
    # storage: what Ignition's disks stage calls and what the cluster's storage needs
    "mdadm", "nvme-cli", "xfsprogs", "lvm2", "e2fsprogs", "dosfstools", "gdisk", "util-linux",
    # Ignition's files stage: accounts (useradd, usermod, chpasswd) and relabelling (setfiles)
    "passwd", "policycoreutils",
    # operating and debugging a lab node
    "kmod", "openssh-server", "sudo", "procps", "iputils-ping",
    # the lab's report unit builds its JSON document with jq
    "jq",
)

# Hooks shipped with mmdebstrap: merged /usr from the start (so apt never
# picks the usrmerge converter, which pulls in all of Perl), and no fsync
# while installing into a directory that is thrown away after squashing.
MMDEBSTRAP_HOOKS = ("/usr/share/mmdebstrap/hooks/merged-usr", "/usr/share/mmdebstrap/hooks/eatmydata")

# Units on at boot. The preset file makes first boot keep exactly this set
# plus what Ignition enables: Debian's presets would enable every installed
# unit (Stellwerk's units run what the node serves).
ENABLED_UNITS: tuple[str, ...] = (
    "systemd-networkd.service", "systemd-networkd.socket", "systemd-resolved.service",
    "systemd-timesyncd.service", "getty@.service", "ssh.service", "remote-fs.target",
    "systemd-pstore.service", "lvm2-monitor.service", "lvm2-lvmpolld.socket", "dm-event.socket",
    "blk-availability.service", "mdadm-shutdown.service", "fstrim.timer",
    # merges the images Ignition put in /etc/extensions over /usr, before sysinit.target
    "systemd-sysext.service",
)
# systemd's first-boot wizard asks for a locale and a time zone on the console
# and waits for an answer: a node gets its settings from Ignition instead.
MASKED_UNITS: tuple[str, ...] = ("systemd-firstboot.service",)
# Between Ignition's 20-ignition.preset (which must win) and Debian's 90-systemd.preset.
PRESET_PATH = "usr/lib/systemd/system-preset/80-stellwerk.preset"

# Files shipped in stellwerk/images/files/, and where they go in the root.
STATIC_FILES: dict[str, str] = {
    "90-stellwerk-dhcp.network": "usr/lib/systemd/network/90-stellwerk-dhcp.network",
    "ssh-host-keys.conf": "usr/lib/systemd/system/ssh.service.d/stellwerk-host-keys.conf",
    "selinux-config": "etc/selinux/config",
    "file_contexts": "etc/selinux/stellwerk/contexts/files/file_contexts",
}

# dpkg leaves these out of every package: the root is read-only and small.
_DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*",
                  "/usr/share/lintian/*", "/usr/share/bash-completion/*")
# ...but licences stay, they must travel with the binaries.
_DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)

# Identities that package scripts generate at install time; every node would share them. sshd's host keys
# are made per node at boot (files/ssh-host-keys.conf); the NVMe-oF host identity only matters for
# fabrics, where `nvme gen-hostnqn` makes one.
_MACHINE_IDENTITY = ("etc/nvme/hostid", "etc/nvme/hostnqn")
# Left behind by the build and specific to it; removed before the image is made.
_BUILD_LEFTOVERS = ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/templates.dat-old",
                    "var/cache/debconf/config.dat-old", "var/cache/ldconfig/aux-cache", "var/log/apt",
                    "var/log/dpkg.log", "var/log/alternatives.log", "var/log/bootstrap.log", "etc/hostname",
                    "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old")


def mmdebstrap_command(mirror: Mirror, target: Path, apt_archives: Path,
                       packages: Iterable[str] = PACKAGES) -> list[str]:
    """mmdebstrap for `target` (a directory that does not exist yet).

    `apt_archives` keeps downloaded .deb files between builds: it is synced
    into the new root before apt runs and synced back out afterwards.
    """
    return [
        "mmdebstrap", "--mode=root", "--variant=apt", "--format=directory",
        f"--architectures={mirror.architecture}", f"--components={','.join(mirror.components)}",
        '--aptopt=APT::Install-Recommends "false"',
        *(f"--dpkgopt=path-exclude={path}" for path in _DPKG_EXCLUDES),
        *(f"--dpkgopt=path-include={path}" for path in _DPKG_INCLUDES),
        f"--include={','.join(packages)}",
        *(f"--hook-dir={hooks}" for hooks in MMDEBSTRAP_HOOKS),
        # The package indexes stay so the kernel and busybox come from the same snapshot.
        "--skip=cleanup/apt/lists", "--skip=essential/unlink", "--skip=download/empty",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {apt_archives} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_archives}",
        mirror.suite, str(target), mirror.base,
    ]


def installed_packages(root: Path) -> dict[str, str]:
    """name -> version of every package dpkg installed in `root`."""
    result = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Version}\\n"],
                            capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


def prune_apt_archives(archives: Path, installed: dict[str, str], architecture: str) -> None:
    """Drop cached .deb files of versions the root no longer uses, so the cache does not grow forever."""
    keep = set()
    for name, version in installed.items():
        for arch in (architecture, "all"):
            keep.add(f"{name}_{version.replace(':', '%3a')}_{arch}.deb")
    for deb in archives.glob("*.deb"):
        if deb.name not in keep:
            deb.unlink()


def preset_text(enabled: Iterable[str] = ENABLED_UNITS) -> str:
    lines = ["# Stellwerk lab OS: the units the image enables, and nothing else by default.",
             "# Ignition's 20-ignition.preset comes first, so units a node's config enables win.",
             *(f"enable {unit}" for unit in enabled), "disable *", ""]
    return "\n".join(lines)


def install_files(root: Path) -> None:
    """Stellwerk's own files: networkd fallback, ssh host keys per node, the SELinux stub, the preset.

    The caller then runs `systemctl preset-all` in the root, which applies the
    preset in full (enable and disable), so the image is what ENABLED_UNITS
    says; on a node's first boot systemd only adds to it.
    """
    files = resources.files("stellwerk.images") / "files"
    for name, destination in STATIC_FILES.items():
        target = root / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((files / name).read_bytes())
        target.chmod(0o644)
    (root / PRESET_PATH).write_text(preset_text())
    for unit in MASKED_UNITS:
        mask = root / "etc/systemd/system" / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")


PRESET_ALL = ("systemctl", "preset-all")


def scrub(root: Path, image_info: str) -> None:
    """Remove what is specific to the build or to one machine; `image_info` goes to /usr/lib/stellwerk/image."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # "uninitialized" makes a node's first boot a systemd first boot: a new
    # machine-id is made and the presets (Ignition's included) are applied.
    (root / "etc/machine-id").write_text("uninitialized\n")
    for leftover in (*_MACHINE_IDENTITY, *_BUILD_LEFTOVERS):
        path = root / leftover
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            path.mkdir(mode=0o755)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for directory in ("tmp", "var/tmp"):
        for entry in (root / directory).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    info = root / "usr/lib/stellwerk/image"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_text(image_info)


def mark_updated(root: Path, epoch: int) -> None:
    """Tell systemd that /etc and /var match /usr.

    Units with ConditionNeedsUpdate= (ldconfig, the journal catalog, sysusers)
    otherwise run on every first boot, because the image's /usr is never
    older than a missing stamp. The squashfs gives /usr the time `epoch`.
    """
    for directory in ("etc", "var"):
        stamp = root / directory / ".updated"
        stamp.write_text("# The image was built with /usr and this directory in step (stellwerk.images).\n"
                         f"TIMESTAMP_NSEC={epoch * 1_000_000_000}\n")
        os.utime(stamp, (epoch, epoch))


def mksquashfs_command(root: Path, output: Path, epoch: int) -> list[str]:
    """A squashfs of `root`, the same bytes for the same tree: fixed times, sorted, one compressor setting.

    zstd with 1 MiB blocks. Level 6: levels up to 15 save under 2 % of the
    size and take six times as long; xz would be smaller still but the kernel
    decompresses it several times slower, and every file of the OS is read
    from this image.
    """
    processors = str(max(1, min(4, os.cpu_count() or 1)))
    return ["mksquashfs", str(root), str(output), "-noappend", "-comp", "zstd", "-Xcompression-level", "6",
            "-b", "1M", "-reproducible", "-mkfs-time", str(epoch), "-all-time", str(epoch),
            "-processors", processors, "-no-progress"]
