"""Boot files for VM tests: a real Debian kernel and a tiny busybox initramfs that reports what it fetched.

The kernel is the one Debian's `linux-image-amd64` metapackage currently depends on, fetched with `apt-get download`
and kept in a cache directory per package version (with only the modules the initramfs loads). The initramfs holds
a static busybox, those modules and an /init that:

1. mounts proc, sysfs and devtmpfs, and loads the NIC's modules with insmod (dependencies first);
2. gets an address with udhcpc (its own small script configures the interface);
3. reads `ignition.config.url=` from /proc/cmdline and fetches that URL with busybox wget;
4. prints `STELLWERK-VMBOOT <nonce> sha256=<digest> bytes=<size> url=<url>` on the console, and powers off.

Every line it prints starts with `STELLWERK-VMBOOT <nonce>`, the nonce being new for each initramfs, so a test
never mistakes an earlier boot's output (or a kernel message quoting the command line) for this one's. A failing
step prints `… error=<what>` and powers off too, so the test fails at once and says where.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import ipaddress
import json
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("STELLWERK_TEST_CACHE", "/var/cache/stellwerk-tests"))
METAPACKAGE = "linux-image-amd64"
NIC_MODULES = ("virtio_pci", "virtio_net")  # a virtio-net-pci NIC: the PCI transport, then the driver
BUSYBOX = Path("/bin/busybox")
MARKER = "STELLWERK-VMBOOT"
_SBIN = os.pathsep.join(("/usr/sbin", "/sbin", os.environ.get("PATH", "/usr/bin:/bin")))


class BootFilesError(RuntimeError):
    """The host cannot provide the test boot files; the message says what to install or run."""


@dataclass(frozen=True)
class TestKernel:
    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # the Debian package version, e.g. 6.1.192-2
    vmlinuz: Path
    modules: tuple[Path, ...]  # in load order: every module after the modules it needs


# ---- the kernel ---------------------------------------------------------------------------------


def _run(command: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "PATH": _SBIN})
    except FileNotFoundError:
        raise BootFilesError(f"{command[0]} is not installed") from None
    if result.returncode != 0:
        raise BootFilesError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def kernel_package(metapackage: str = METAPACKAGE) -> tuple[str, str]:
    """(package, version) of the kernel image the metapackage's candidate version depends on."""
    text = _run(["apt-cache", "show", "--no-all-versions", metapackage])
    found = re.search(r"^Depends:\s*(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)", text, re.MULTILINE)
    if found is None:
        raise BootFilesError(f"apt-cache knows no kernel that {metapackage} depends on; run 'apt-get update'")
    return found.group(1), found.group(2)


@contextmanager
def _locked(directory: Path):
    """One process builds a cache entry; the others wait and then find it."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {relative path: [relative paths it needs]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        module, sep, needs = line.partition(":")
        if sep:
            deps[module.strip()] = needs.split()
    return deps


def module_name(path: str) -> str:
    """The module name of a .ko file: its file name without .ko (and compression suffix), '-' read as '_'."""
    base = path.rsplit("/", 1)[-1]
    return base[:base.index(".ko")].replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: tuple[str, ...]) -> list[str]:
    """The module files to insmod for `wanted`, every one after those it needs (depth first over modules.dep)."""
    by_name = {module_name(path): path for path in deps}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise BootFilesError(f"modules.dep has a dependency cycle through {path}")
        visiting.add(path)
        for needed in deps.get(path, []):
            visit(needed)
        visiting.discard(path)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise BootFilesError(f"the kernel has no module {name} (built in, or not built at all?)")
        visit(by_name[name])
    return order


def _uncompressed(path: Path) -> bytes:
    """busybox insmod loads plain .ko files; newer Debian kernels ship them xz-compressed."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise BootFilesError(f"{path.name}: cannot decompress this kind of module in the test helper")


def debian_kernel(cache: Path = CACHE, wanted: tuple[str, ...] = NIC_MODULES) -> TestKernel:
    """The current Debian kernel and the modules `wanted` needs, downloaded once per package version."""
    package, version = kernel_package()
    key = re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{package}_{version}_{'+'.join(wanted)}")
    kernels = cache / "kernels"
    entry = kernels / key
    try:
        with _locked(kernels):
            if not (entry / "load-order").exists():
                _build_kernel_entry(package, version, wanted, kernels, entry)
    except PermissionError as exc:
        raise BootFilesError(f"cannot write the kernel cache ({exc}); run as root, or point STELLWERK_TEST_CACHE "
                             "at a writable directory") from None
    names = (entry / "load-order").read_text().split()
    return TestKernel(package, version, entry / "vmlinuz", tuple(entry / "modules" / name for name in names))


def kernel_for_tests(wanted: tuple[str, ...] = NIC_MODULES) -> TestKernel:
    """`debian_kernel()` for a test: where this host cannot provide it, a failure in CI and a skip elsewhere."""
    import pytest

    try:
        return debian_kernel(wanted=wanted)
    except BootFilesError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _build_kernel_entry(package: str, version: str, wanted: tuple[str, ...], kernels: Path, entry: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=kernels))
    try:
        # As root, apt downloads as user _apt, who cannot write into this private directory; download as root.
        _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{package}={version}"], cwd=scratch)
        debs = list(scratch.glob("*.deb"))
        if len(debs) != 1:
            raise BootFilesError(f"apt-get download {package}={version} left {len(debs)} .deb files")
        root = scratch / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
        trees = [tree for base in ("lib/modules", "usr/lib/modules") for tree in (root / base).glob("*")
                 if tree.is_dir()]
        if len(trees) != 1:
            raise BootFilesError(f"{package} holds {len(trees)} module trees, expected one")
        release = trees[0].name
        # The package has no modules.dep (its postinst runs depmod on the host); make one for this tree.
        # depmod -b BASE looks in BASE/lib/modules/RELEASE.
        _run(["depmod", "-b", str(trees[0].parent.parent.parent), release])
        order = load_order(parse_modules_dep((trees[0] / "modules.dep").read_text()), wanted)
        ready = scratch / "entry"
        (ready / "modules").mkdir(parents=True)
        names = []
        for relative in order:
            name = module_name(relative) + ".ko"
            (ready / "modules" / name).write_bytes(_uncompressed(trees[0] / relative))
            names.append(name)
        vmlinuz = root / "boot" / f"vmlinuz-{release}"
        if not vmlinuz.is_file():
            raise BootFilesError(f"{package} has no boot/vmlinuz-{release}")
        shutil.copyfile(vmlinuz, ready / "vmlinuz")
        (ready / "package").write_text(f"{package} {version} {release}\n")
        (ready / "load-order").write_text("\n".join(names) + "\n")  # written last: marks the entry complete
        if entry.exists():
            shutil.rmtree(entry)  # a half-built entry from an interrupted run
        ready.rename(entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- the initramfs ------------------------------------------------------------------------------


def _is_static(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP) needs no shared libraries."""
    with open(path, "rb") as elf:
        header = elf.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only: the VM is x86-64
            return False
        phoff, = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def static_busybox(path: Path = BUSYBOX) -> Path:
    if not path.is_file() or not _is_static(path):
        raise BootFilesError(f"{path} is missing or not statically linked; install busybox-static")
    return path


_INIT = """#!/bin/busybox sh
# Stellwerk VM test: get an address, fetch the Ignition config named on the kernel command line, report its digest.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
MARK={mark}
finish() {{
    echo "$MARK $*"
    poweroff -f
    exit 1
}}
echo "$MARK init started"
for module in {modules}; do
    insmod "/lib/modules/$module" || finish "error=insmod-$module"
done
tries=0
while [ ! -e /sys/class/net/eth0 ]; do
    tries=$((tries + 1))
    [ "$tries" -le 50 ] || finish "error=no-eth0"
    usleep 200000
done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.script -f -q -n -t 10 -T 3 || finish "error=dhcp-failed"
set -f  # the URL holds '?': no globbing while splitting the command line into words
url=
for word in $(cat /proc/cmdline); do
    case "$word" in
        ignition.config.url=*) url="${{word#ignition.config.url=}}" ;;
    esac
done
[ -n "$url" ] || finish "error=no-ignition.config.url"
# No -T: Debian's static busybox 1.35 wget crashes with it; the test's own timeout covers a stalled server.
wget -q -O /tmp/config "$url" || finish "error=fetch-failed url=$url"
digest=$(sha256sum /tmp/config)
finish "sha256=${{digest%% *}} bytes=$(wc -c < /tmp/config) url=$url"
"""

_UDHCPC_SCRIPT = """#!/bin/busybox sh
# udhcpc calls this with deconfig, bound, renew or nak; the lease is in the environment.
MARK={mark}
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "$subnet"
        for gateway in $router; do
            ip route replace default via "$gateway" dev "$interface"
            break
        done
        echo "$MARK lease ip=$ip subnet=$subnet router=$router server=$serverid"
        ;;
esac
exit 0
"""


def _newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks: (name, mode, data, (rdev major, minor)) each."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data, (major, minor)) in enumerate([*entries, ("TRAILER!!!", 0, b"", (0, 0))], 1):
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, major, minor, len(name) + 1, 0)
        out.write(b"070701" + "".join(f"{value:08x}" for value in fields).encode())
        out.write(name.encode() + b"\0")
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def initramfs(kernel: TestKernel, nonce: str, busybox: Path = BUSYBOX) -> bytes:
    """The gzip-compressed initramfs whose /init reports with `nonce` (letters and digits)."""
    if not re.fullmatch(r"[A-Za-z0-9]{8,64}", nonce):
        raise ValueError("nonce: 8 to 64 letters and digits")
    directory, executable, character = 0o040755, 0o100755, 0o020600
    mark = shlex.quote(f"{MARKER} {nonce}")
    names = " ".join(shlex.quote(module.name) for module in kernel.modules)
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        (name, directory, b"", (0, 0)) for name in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp")]
    # The kernel opens /dev/console for init before init can mount devtmpfs: it must exist in the archive.
    entries.append(("dev/console", character, b"", (5, 1)))
    entries.append(("bin/busybox", executable, static_busybox(busybox).read_bytes(), (0, 0)))
    entries.append(("init", executable, _INIT.format(mark=mark, modules=names).encode(), (0, 0)))
    entries.append(("etc/udhcpc.script", executable, _UDHCPC_SCRIPT.format(mark=mark).encode(), (0, 0)))
    for module in kernel.modules:
        entries.append((f"lib/modules/{module.name}", 0o100644, module.read_bytes(), (0, 0)))
    return gzip.compress(_newc(entries), compresslevel=6, mtime=0)


def install_boot_files(assets: Path, kernel: TestKernel, nonce: str, os_name: str = "lab") -> Path:
    """Put the kernel and a fresh initramfs where netboot serves /assets/<os>/{vmlinuz,initrd.img} from."""
    boot = assets / "boot" / os_name
    boot.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel.vmlinuz, boot / "vmlinuz")
    (boot / "initrd.img").write_bytes(initramfs(kernel, nonce))
    return boot


# ---- reading the console ------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What the initramfs said. `done` once it printed its last line (a digest or an error)."""

    lines: tuple[str, ...]
    lease: dict[str, str] | None
    sha256: str | None
    url: str | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.sha256 is not None or self.error is not None


def read_report(console: str, nonce: str) -> Report:
    prefix = f"{MARKER} {nonce} "
    lines = tuple(line.split(prefix, 1)[1].strip() for line in console.splitlines() if prefix in line)
    lease = sha256 = url = error = None
    for line in lines:
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if line.startswith("lease "):
            lease = fields
        elif line.startswith("sha256="):
            sha256, url = fields["sha256"], fields.get("url")
        elif line.startswith("error="):
            error = line
    return Report(lines, lease, sha256, url, error)


# ---- the host's network -------------------------------------------------------------------------


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 subnet this host has an address or a (non-default) route in."""
    taken = []
    for link in json.loads(_run(["ip", "-j", "-4", "addr"])):
        for info in link.get("addr_info", []):
            taken.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}").network)
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"])):
        if route.get("dst") not in (None, "default"):
            taken.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return taken


def free_subnet(first: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """`first` if no address or route of this host overlaps it, else the next free one of its size within its
    /16 (a test network must not shadow a network the host really uses)."""
    taken = host_networks()
    block = first.supernet(new_prefix=16)
    candidates = list(block.subnets(new_prefix=first.prefixlen))
    start = candidates.index(first)
    for candidate in candidates[start:] + candidates[:start]:
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise BootFilesError(f"every /{first.prefixlen} of {block} is in use on this host; free one for the test network")
