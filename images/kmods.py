"""Kernel modules: pick the few the lab OS needs out of the ~4000 Debian's kernel ships.

The Debian kernel package carries no modules.dep (its postinst runs depmod),
so the build runs depmod once on the unpacked package, resolves the wanted
names against that index, copies only the chosen modules, and runs depmod
again on the trimmed tree so modprobe and udev see a consistent set.

Resolution follows hard dependencies (modules.dep) and soft dependencies
(modules.softdep: ext4 wants "crc32c" loaded first, and "crc32c" is an alias
that modules.alias turns into real modules). Built-in modules
(modules.builtin) need nothing. Wanted names may be fnmatch patterns
("nft_*"); every name and pattern must match something, so a typo or a module
that disappears from a new kernel fails the build instead of a boot.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# What the OS loads (mostly through udev, by device) and what its services need.
OS_MODULES: tuple[str, ...] = (
    # disks and controllers: virtio and NVMe in the lab, SATA/SAS on metal
    "virtio_pci", "virtio_blk", "virtio_scsi", "nvme", "ahci", "sd_mod",
    # network cards: virtio and the two Intel families QEMU and libvirt emulate
    "virtio_net", "e1000", "e1000e",
    # entropy and the virtio console of libvirt guests
    "virtio_rng", "virtio_console",
    # systemd mounts some API filesystems on demand through autofs (binfmt_misc among them)
    "autofs4", "binfmt_misc",
    # filesystems: the state and data filesystems, and the image itself
    "ext4", "xfs", "vfat", "overlay", "squashfs", "loop",
    # software RAID and LVM (Ignition's storage.raid, Rook and OpenEBS disks)
    "md_mod", "raid0", "raid1", "raid10", "dm_mod", "dm_thin_pool", "dm_snapshot", "dm_mirror",
    # the WireGuard mesh
    "wireguard",
    # host protection: nftables, its expressions and connection tracking
    "nf_tables", "nft_*", "nf_conntrack", "nf_nat", "nf_reject_ipv4", "nf_reject_ipv6",
    # what Kubernetes networking loads on every node
    "bridge", "br_netfilter", "veth", "vxlan", "ipip",
)

# What the initramfs must load itself before the image is mounted: the image
# is a squashfs file on a loop device, under an overlay.
INITRAMFS_MODULES: tuple[str, ...] = ("loop", "squashfs", "overlay")

_INDEX_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


class ModuleError(ValueError):
    pass


def module_name(path_or_name: str) -> str:
    """"kernel/crypto/crc32c-intel.ko" -> "crc32c_intel": the kernel treats - and _ alike in names."""
    name = path_or_name.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz", ".ko"):
        name = name.removesuffix(suffix)
    return name.replace("-", "_")


@dataclass(frozen=True)
class ModuleIndex:
    paths: dict[str, str]  # module -> its path below /lib/modules/<release>
    depends: dict[str, tuple[str, ...]]  # module -> every module it needs (modules.dep is transitive)
    builtin: frozenset[str]
    softdeps: dict[str, tuple[str, ...]]  # module -> names or aliases it wants loaded with it
    aliases: dict[str, tuple[str, ...]]  # exact alias -> modules

    @classmethod
    def load(cls, directory: Path) -> ModuleIndex:
        """Read the index files depmod wrote into `directory` (/lib/modules/<release>)."""
        paths: dict[str, str] = {}
        depends: dict[str, tuple[str, ...]] = {}
        for line in _lines(directory / "modules.dep"):
            module, _, deps = line.partition(":")
            paths[module_name(module)] = module
            depends[module_name(module)] = tuple(module_name(d) for d in deps.split())
        builtin = frozenset(module_name(line) for line in _lines(directory / "modules.builtin", missing_ok=True))
        softdeps: dict[str, tuple[str, ...]] = {}
        for line in _lines(directory / "modules.softdep", missing_ok=True):
            words = line.split()
            if len(words) >= 2 and words[0] == "softdep":
                wanted = tuple(w for w in words[2:] if w not in ("pre:", "post:"))
                softdeps[module_name(words[1])] = softdeps.get(module_name(words[1]), ()) + wanted
        aliases: dict[str, tuple[str, ...]] = {}
        for line in _lines(directory / "modules.alias", missing_ok=True):
            words = line.split()
            if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
                aliases[words[1]] = aliases.get(words[1], ()) + (module_name(words[2]),)
        return cls(paths, depends, builtin, softdeps, aliases)

    def _lookup(self, name: str) -> tuple[str, ...] | None:
        """Modules a name stands for: () when built in, None when unknown."""
        normal = module_name(name)
        if normal in self.paths:
            return (normal,)
        if normal in self.builtin:
            return ()
        if name in self.aliases:
            return self.aliases[name]
        return None

    def resolve(self, wanted: Iterable[str]) -> list[str]:
        """Every loadable module `wanted` needs, sorted; ModuleError names what matches nothing."""
        chosen: set[str] = set()
        unknown: list[str] = []
        queue: list[str] = []
        for name in wanted:
            if any(c in name for c in "*?["):
                matches = fnmatch.filter(self.paths, module_name(name))
                if not matches and not fnmatch.filter(self.builtin, module_name(name)):
                    unknown.append(name)
                queue += matches
                continue
            found = self._lookup(name)
            if found is None:
                unknown.append(name)
            else:
                queue += found
        if unknown:
            raise ModuleError("no such kernel module (nor built-in, nor alias): " + ", ".join(unknown))
        while queue:
            module = queue.pop()
            if module in chosen:
                continue
            chosen.add(module)
            queue += self.depends.get(module, ())
            for soft in self.softdeps.get(module, ()):
                # A soft dependency is a wish, not a need: one that is not there is skipped.
                queue += self._lookup(soft) or ()
        return sorted(chosen)


def _lines(path: Path, missing_ok: bool = False) -> list[str]:
    if missing_ok and not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def copy_modules(index: ModuleIndex, modules: Iterable[str], source: Path, target: Path) -> None:
    """Copy `modules` and the build-time index files from `source` to `target` (both /lib/modules/<release>)."""
    target.mkdir(parents=True, exist_ok=True)
    for module in modules:
        relative = index.paths[module]
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, target / relative)
    for name in _INDEX_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def depmod_command(base: Path, release: str) -> list[str]:
    """depmod for the tree at base/lib/modules/<release>; -a so every module is indexed."""
    return ["depmod", "-a", "-b", str(base), release]
