"""Kernel module selection: hard and soft dependencies, aliases, built-ins, patterns, and the trimmed tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from stellwerk.images import kmods

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nft_nat.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko
kernel/drivers/block/loop.ko:
"""
MODULES_BUILTIN = "kernel/drivers/virtio/virtio.ko\nkernel/fs/configfs/configfs.ko\n"
MODULES_SOFTDEP = "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\n" \
                  "softdep virtio_net post: not-there\n"
MODULES_ALIAS = ("# Aliases extracted from modules themselves.\nalias crypto-crc32c crc32c_intel\n"
                 "alias crypto-crc32c crc32c_generic\nalias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_net\n"
                 "alias block-major-7-* loop\n")


@pytest.fixture
def moddir(tmp_path: Path) -> Path:
    directory = tmp_path / "lib/modules/6.1.0-test"
    directory.mkdir(parents=True)
    (directory / "modules.dep").write_text(MODULES_DEP)
    (directory / "modules.builtin").write_text(MODULES_BUILTIN)
    (directory / "modules.softdep").write_text(MODULES_SOFTDEP)
    (directory / "modules.alias").write_text(MODULES_ALIAS)
    (directory / "modules.order").write_text(MODULES_DEP.replace(":", "").split("\n")[0] + "\n")
    for line in MODULES_DEP.splitlines():
        path = directory / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ko " + path.name.encode())
    return directory


def test_hard_and_soft_dependencies_come_along(moddir):
    index = kmods.ModuleIndex.load(moddir)
    # ext4's soft dependency is an alias, which names two modules
    assert index.resolve(["ext4"]) == ["crc16", "crc32c_generic", "crc32c_intel", "ext4", "jbd2", "mbcache"]
    # a soft dependency that resolves to nothing is skipped; hard ones are not
    assert index.resolve(["virtio_net"]) == ["failover", "net_failover", "virtio_net"]


def test_builtin_needs_nothing_and_dashes_equal_underscores(moddir):
    index = kmods.ModuleIndex.load(moddir)
    assert index.resolve(["virtio", "configfs"]) == []
    assert index.resolve(["crc32c-intel"]) == ["crc32c_intel"]
    assert kmods.module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz") == "crc32c_intel"


def test_patterns_and_exact_aliases(moddir):
    index = kmods.ModuleIndex.load(moddir)
    assert index.resolve(["nft_*"]) == ["nf_tables", "nfnetlink", "nft_ct", "nft_nat"]
    assert index.resolve(["crypto-crc32c"]) == ["crc32c_generic", "crc32c_intel"]
    # wildcard aliases are device matches for udev, not names to ask for
    assert "block-major-7-*" not in index.aliases


def test_unknown_names_fail_together(moddir):
    index = kmods.ModuleIndex.load(moddir)
    with pytest.raises(kmods.ModuleError, match="wireguard, xt_nothing_\\*"):
        index.resolve(["ext4", "wireguard", "xt_nothing_*"])


def test_copy_keeps_layout_and_index_files(moddir, tmp_path):
    index = kmods.ModuleIndex.load(moddir)
    target = tmp_path / "trimmed/lib/modules/6.1.0-test"
    kmods.copy_modules(index, index.resolve(["ext4"]), moddir, target)
    copied = sorted(str(p.relative_to(target)) for p in target.rglob("*.ko"))
    assert copied == ["kernel/arch/x86/crypto/crc32c-intel.ko", "kernel/crypto/crc32c_generic.ko",
                      "kernel/fs/ext4/ext4.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/mbcache.ko", "kernel/lib/crc16.ko"]
    assert (target / "modules.builtin").read_text() == MODULES_BUILTIN
    assert kmods.depmod_command(tmp_path / "trimmed", "6.1.0-test") == [
        "depmod", "-a", "-b", str(tmp_path / "trimmed"), "6.1.0-test"]


def test_the_initramfs_set_is_part_of_the_os_set():
    for name in kmods.INITRAMFS_MODULES:
        assert name in kmods.OS_MODULES
