"""The lab OS: cache keys, mirror handling, the boot scripts, the command's errors, and a real build booted in QEMU.

The VM tests build the image for real (mmdebstrap from the Debian mirror; the
build is cached, so only the first run is slow), serve an Ignition config from
a loopback HTTP server, and boot the kernel and initrd with qemu-system-x86_64
(TCG unless a probe proves KVM works) with an NVMe install disk. The first
boot must run Ignition and come up with what the config asked for; the second
boot, from the same disk, must not fetch the config again and must find what
the first boot left.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import ignition_engine
from support.tools import require_tool
from stellwerk.base.errors import UserError
from stellwerk.ignition import model
from stellwerk.images import base, cache, debian, initramfs, labos, qemu, rootfs
from stellwerk.images.contract import INITRD_FILE, KERNEL_ARGS, KERNEL_FILE, MANIFEST_FILE, STATE_LABEL

INRELEASE = b"""-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Origin: Debian
Label: Debian
Suite: oldstable
Version: 12.12
Codename: bookworm
Date: Sat, 06 Sep 2025 10:14:39 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib non-free-firmware non-free
Description: Debian 12.12 Released 06 September 2025
SHA256:
 0ee4e6b1e1f3d0b1b4e3c6e7e6f5f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5   1234 main/binary-amd64/Packages.xz
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
"""


# ----------------------------------------------------------------------------- cache keys


def test_key_is_stable_and_changes_with_every_input():
    inputs = {"suite": "bookworm", "packages": ["systemd", "etcd-server"], "nested": {"a": 1, "b": 2}}
    reordered = {"nested": {"b": 2, "a": 1}, "packages": ["systemd", "etcd-server"], "suite": "bookworm"}
    assert cache.key(inputs) == cache.key(reordered)
    assert cache.key(inputs) != cache.key({**inputs, "suite": "trixie"})
    assert cache.key(inputs) != cache.key({**inputs, "packages": ["systemd"]})
    assert cache.key(inputs) != cache.key({**inputs, "packages": ["etcd-server", "systemd"]})


def test_base_key_covers_mirror_suite_state_packages_and_source(monkeypatch):
    mirror = debian.Mirror()
    suite = debian.suite_state(INRELEASE, "test")
    digest = cache.source_digest(base.SOURCES)
    reference = cache.key(base.inputs(mirror, suite, digest))
    changed_suite = debian.suite_state(INRELEASE.replace(b"12.12", b"12.13"), "test")
    variants = [
        base.inputs(debian.Mirror(url="http://mirror.example/debian"), suite, digest),
        base.inputs(debian.Mirror(suite="trixie"), suite, digest),
        base.inputs(mirror, changed_suite, digest),  # a point release: new kernel, new packages
        base.inputs(mirror, suite, digest[::-1]),  # the builder's code changed
    ]
    monkeypatch.setattr(rootfs, "PACKAGES", (*rootfs.PACKAGES, "htop"))
    variants.append(base.inputs(mirror, suite, digest))
    keys = [cache.key(v) for v in variants]
    assert reference not in keys and len(set(keys)) == len(keys)


def test_source_digest_follows_file_contents(tmp_path, monkeypatch):
    package = tmp_path / "fakepkg"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "build.py").write_text("STEP = 1\n")
    (package / "templates" / "init.sh.j2").write_text("echo one\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = cache.source_digest(["build.py", "templates/"], package="fakepkg")
    (package / "templates" / "init.sh.j2").write_text("echo two\n")
    after_template = cache.source_digest(["build.py", "templates/"], package="fakepkg")
    (package / "templates" / "extra.j2").write_text("")
    after_new_file = cache.source_digest(["build.py", "templates/"], package="fakepkg")
    assert len({before, after_template, after_new_file}) == 3
    assert cache.source_digest(["build.py"], package="fakepkg") == cache.source_digest(["build.py"], package="fakepkg")


def test_the_init_script_is_part_of_the_image_key_not_the_base_key():
    assert "templates/" in labos.IMAGE_SOURCES and "initramfs.py" in labos.IMAGE_SOURCES
    assert not any(name.startswith("templates") for name in base.SOURCES)


def test_cache_entries_appear_whole_or_not_at_all(tmp_path):
    store = cache.Cache(tmp_path)
    with pytest.raises(RuntimeError), store.locked(), store.building("lab-os", "k1") as work:
        (work / "out" / "half").write_text("x")
        raise RuntimeError("build died")
    assert store.lookup("lab-os", "k1") is None
    assert not any((tmp_path / "work").iterdir())
    with store.locked(), store.building("lab-os", "k1") as work:
        (work / "out" / "vmlinuz").write_text("kernel")
    entry = store.lookup("lab-os", "k1")
    assert entry is not None and (entry / "vmlinuz").read_text() == "kernel"
    assert not os.access(entry / "vmlinuz", os.W_OK) or os.geteuid() == 0
    assert (entry / "vmlinuz").stat().st_mode & 0o222 == 0


# ----------------------------------------------------------------------------- Debian mirror


def test_suite_state_reads_a_signed_inrelease():
    state = debian.suite_state(INRELEASE, "test")
    assert state.version == "12.12"
    assert state.epoch == 1757153679  # Sat, 06 Sep 2025 10:14:39 UTC
    assert len(state.inrelease_sha256) == 64


def test_suite_state_refuses_other_files():
    with pytest.raises(UserError, match="not a Debian InRelease"):
        debian.suite_state(b"<html>captive portal</html>", "http://mirror/dists/bookworm/InRelease")


def test_package_records_and_meta_packages(tmp_path):
    index = tmp_path / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
    index.write_text(
        "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.140+1)\nVersion: 6.1.140-1\n"
        "Depends: linux-image-6.1.0-37-amd64 (= 6.1.140-1)\nFilename: pool/main/l/linux-image-amd64.deb\n"
        "Size: 1500\nSHA256: aa\n\n"
        "Package: busybox-static\nVersion: 1:1.35.0-4\nFilename: pool/main/b/bb_old.deb\nSize: 10\nSHA256: bb\n\n"
        "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1\nFilename: pool/main/b/bb.deb\nSize: 11\n"
        "SHA256: cc\nDescription: static busybox\n multi-line text\n"
    )
    records = debian.find_packages(debian.package_indexes(tmp_path), ["linux-image-amd64", "busybox-static", "nope"])
    assert set(records) == {"linux-image-amd64", "busybox-static"}
    assert debian.first_dependency(records["linux-image-amd64"]) == "linux-image-6.1.0-37-amd64"
    assert records["busybox-static"].version == "1:1.35.0-4+deb12u1"  # the newer of the two, by dpkg's rules
    assert records["busybox-static"].filename == "pool/main/b/bb.deb" and records["busybox-static"].size == 11


@contextmanager
def http_server(routes: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering `routes` (404 otherwise); yields its base URL and the paths asked for."""
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            requested.append(self.path)
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def test_probe_names_an_unreachable_mirror():
    # port 9 (discard) is closed on loopback: a real connection refusal
    with pytest.raises(UserError, match="Debian mirror unreachable"):
        debian.probe(debian.Mirror(url="http://127.0.0.1:9/debian"), timeout=5)


def test_probe_names_a_missing_suite_and_reads_a_present_one():
    with http_server({"/debian/dists/bookworm/InRelease": INRELEASE}) as (url, requested):
        assert debian.probe(debian.Mirror(url=url + "/debian")).version == "12.12"
        with pytest.raises(UserError, match="no suite 'bookwrom'"):
            debian.probe(debian.Mirror(url=url + "/debian", suite="bookwrom"))
    assert requested == ["/debian/dists/bookworm/InRelease", "/debian/dists/bookwrom/InRelease"]


# ----------------------------------------------------------------------------- boot scripts


SCRIPTS = ("init.sh.j2", "provision.sh.j2", "failed.sh.j2", "udhcpc.sh.j2", "network.sh.j2")


@pytest.mark.parametrize("template", SCRIPTS)
def test_boot_scripts_parse(template, tmp_path):
    script = tmp_path / template.removesuffix(".j2")
    script.write_text(initramfs.render(template))
    # init runs under busybox's ash; the others under the image's dash
    shell = [require_tool("busybox"), "sh"] if template in ("init.sh.j2", "udhcpc.sh.j2") else ["sh"]
    subprocess.run([*shell, "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_scripts_use_the_contract_names():
    provision = initramfs.render("provision.sh.j2")
    assert f"STATE_LABEL={STATE_LABEL}" in provision
    assert "MARKER=.stellwerk-provisioned" in provision
    assert "LOWER=" + initramfs.IMAGE_MOUNT in provision
    assert initramfs.IMAGE_MOUNT in initramfs.render("init.sh.j2")
    for stage in ("fetch-offline", "fetch", "disks", "mount", "files", "umount"):
        assert f"ignition {stage}\n" in provision


def test_rootfs_preset_keeps_ignition_first_and_debian_etcd_off():
    preset = rootfs.preset_text()
    # Ignition writes 20-ignition.preset; Debian ships 90-systemd.preset; the first match wins
    assert "20-ignition" < Path(rootfs.PRESET_PATH).name < "90-systemd"
    assert "enable systemd-networkd.service" in preset and preset.rstrip().endswith("disable *")
    assert "etcd" not in " ".join(rootfs.ENABLED_UNITS)
    assert not {"etcd-server", "etcd-client"} & set(rootfs.PACKAGES)  # etcd comes as a sysext image
    assert {"wireguard-tools", "nftables", "mdadm", "nvme-cli", "xfsprogs", "lvm2",
            "systemd", "curl", "ca-certificates", "iproute2", "passwd", "policycoreutils", "gdisk"} <= set(rootfs.PACKAGES)


# ----------------------------------------------------------------------------- the command's errors


@pytest.fixture
def images_cli(run_cli):
    """The real `stellwerk` entry point with the images group (distro/cli.py adds it; until then, so does this)."""
    from stellwerk.cli import cli
    from stellwerk.images.cli import images

    if "images" not in cli.commands:
        cli.add_command(images)
    return run_cli


def test_unreachable_mirror_is_a_user_error(images_cli, tmp_path):
    result = images_cli("images", "build-lab-os", "-o", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                        "--mirror", "http://127.0.0.1:9/debian")
    assert result.code == 2
    assert "http://127.0.0.1:9/debian: Debian mirror unreachable" in result.err
    assert "Traceback" not in result.err + result.out


def test_an_unreachable_mirror_falls_back_to_a_build_from_the_same_inputs(tmp_path):
    mirror = debian.Mirror(url="http://127.0.0.1:9/debian")
    store = cache.Cache(tmp_path / "cache")
    for name, inputs_key in (("other", "0" * 64), ("same", labos._inputs_key(mirror))):
        with store.locked(), store.building("lab-os", name) as work:
            for file in (KERNEL_FILE, INITRD_FILE):
                (work / "out" / file).write_text(f"{name} {file}")
            manifest = {"inputs_key": inputs_key, "built": "2025-09-06T10:14:39Z", "image_id": name,
                        "kernel": {"release": "6.1.0-test"}}
            (work / "out" / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = labos.build_lab_os(labos.BuildOptions(output=tmp_path / "out", cache_dir=tmp_path / "cache",
                                                   mirror=mirror))
    assert result.cached and result.manifest["image_id"] == "same"
    assert (tmp_path / "out" / INITRD_FILE).read_text() == f"same {INITRD_FILE}"
    # another suite was never built: no fallback, the mirror error stands
    with pytest.raises(debian.MirrorUnreachable):
        labos.build_lab_os(labos.BuildOptions(output=tmp_path / "out", cache_dir=tmp_path / "cache",
                                              mirror=debian.Mirror(url=mirror.url, suite="trixie")))


def test_output_that_is_a_file_is_a_user_error(images_cli, tmp_path):
    (tmp_path / "out").write_text("not a directory")
    result = images_cli("images", "build-lab-os", "-o", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert result.code == 2 and "is a file" in result.err and "Traceback" not in result.err
    with pytest.raises(UserError, match="is not a directory"):
        labos.build_lab_os(labos.BuildOptions(output=tmp_path / "out", cache_dir=tmp_path / "cache"))


def test_missing_tools_are_named_with_their_packages(images_cli, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("as non-root the root check comes first")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with http_server({"/debian/dists/bookworm/InRelease": INRELEASE}) as (url, _):
        result = images_cli("images", "build-lab-os", "-o", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                            "--mirror", url + "/debian")
    assert result.code == 2
    assert "missing" in result.err and "mmdebstrap" in result.err
    assert "apt-get install" in result.err and "squashfs-tools" in result.err


def test_non_root_is_told_to_use_root():
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root to drop to another user")
    code = ("import sys; from stellwerk.cli import cli, main; from stellwerk.images.cli import images; "
            "cli.add_command(images); main(sys.argv[1:])")
    # pytest's own temporary directories are private to root; nobody needs a place it can reach
    with tempfile.TemporaryDirectory(prefix="stellwerk-nobody-") as scratch, \
            http_server({"/debian/dists/bookworm/InRelease": INRELEASE}) as (url, _):
        Path(scratch).chmod(0o777)
        result = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                                 code, "images", "build-lab-os", "-o", f"{scratch}/os", "--cache-dir",
                                 f"{scratch}/cache", "--mirror", url + "/debian"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "must run as root" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the real image

BUILD_TOOLS = ("mmdebstrap", "mksquashfs", "depmod", "dpkg-deb", "zstd", "unsquashfs", "cpio")


@pytest.fixture(scope="module")
def lab_os(tmp_path_factory) -> labos.LabOs:
    """The lab OS, built for real into the shared cache (minutes cold, a fraction of a second when cached)."""
    for tool in BUILD_TOOLS:
        require_tool(tool, f"/usr/sbin/{tool}")
    if os.geteuid() != 0:
        ignition_engine.require(False, "root (mmdebstrap and the boot test need it)")
    output = tmp_path_factory.mktemp("lab-os")
    started = time.monotonic()
    result = labos.build_lab_os(labos.BuildOptions(output=output))
    print(f"\nlab OS build: {time.monotonic() - started:.1f} s ({'cached' if result.cached else 'cold'})")
    return result


@pytest.mark.vm
def test_build_is_cached_and_described(lab_os):
    started = time.monotonic()
    again = labos.build_lab_os(labos.BuildOptions(output=lab_os.output))
    elapsed = time.monotonic() - started
    assert again.cached and again.manifest == lab_os.manifest
    assert elapsed < 1.0, f"a cached build took {elapsed:.2f} s"
    manifest = json.loads((lab_os.output / MANIFEST_FILE).read_text())
    for name in (KERNEL_FILE, INITRD_FILE):
        described = manifest["files"][name]
        digest = subprocess.run(["sha256sum", str(lab_os.output / name)], capture_output=True, text=True,
                                check=True).stdout.split()[0]
        assert described == {"sha256": digest, "bytes": (lab_os.output / name).stat().st_size}
    assert manifest["kernel"]["package"].startswith("linux-image-") and manifest["kernel"]["release"]
    assert manifest["state_label"] == STATE_LABEL and manifest["kernel_args"] == list(KERNEL_ARGS)
    assert set(manifest["packages"]) >= {"systemd", "wireguard-tools"}


def _split_initrd(initrd: Path) -> tuple[list[str], bytes]:
    """Names in the first (uncompressed) archive, and the decompressed second one."""
    first = subprocess.run(["cpio", "-it", "--quiet"], stdin=initrd.open("rb"), capture_output=True, check=True)
    data = initrd.read_bytes()
    end = data.index(b"TRAILER!!!") + len(b"TRAILER!!!")
    start = data.index(b"\x28\xb5\x2f\xfd", end)  # the zstd frame magic
    assert data[end:start].strip(b"\0") == b"", "only padding between the archives"
    second = subprocess.run(["zstd", "-dc"], input=data[start:], capture_output=True, check=True).stdout
    return first.stdout.decode().split(), second


@pytest.mark.vm
def test_initrd_holds_the_image_and_a_small_boot_archive(lab_os, tmp_path):
    image_names, boot = _split_initrd(lab_os.initrd)
    assert image_names == ["stellwerk", "stellwerk/root.squashfs"]
    boot_names = subprocess.run(["cpio", "-it", "--quiet"], input=boot, capture_output=True, check=True
                                ).stdout.decode().split()
    release = lab_os.manifest["kernel"]["release"]
    for name in ("init", "bin/busybox", "bin/switch_root", "dev/console", "stellwerk/initrd/etc/initrd-release",
                 "stellwerk/initrd/stellwerk/bin/ignition", "stellwerk/initrd/stellwerk/provision.sh",
                 "stellwerk/initrd/etc/systemd/system/initrd-root-fs.target.requires/stellwerk-provision.service",
                 f"lib/modules/{release}/modules.dep"):
        assert name in boot_names
    modules = [n for n in boot_names if n.endswith(".ko")]
    assert sorted(Path(m).name for m in modules) == ["loop.ko", "overlay.ko", "squashfs.ko"]
    # The image itself: extract the squashfs and look at what a node gets
    squashfs = tmp_path / "root.squashfs"
    with squashfs.open("wb") as out:
        subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "stellwerk/root.squashfs"],
                       stdin=lab_os.initrd.open("rb"), stdout=out, check=True)
    listed = subprocess.run(["unsquashfs", "-lc", str(squashfs)], capture_output=True, text=True, check=True).stdout
    listing = {line.removeprefix("squashfs-root") for line in listed.splitlines()}
    assert "/usr/bin/etcd" not in listing and "/usr/lib/systemd/system/systemd-sysext.service" in listing
    for path in ("/usr/bin/wg", "/usr/sbin/nft", "/usr/sbin/mdadm",
                 "/usr/sbin/nvme", "/usr/sbin/mkfs.xfs", "/usr/sbin/lvm", "/usr/sbin/setfiles", "/usr/sbin/useradd",
                 "/usr/sbin/sgdisk", "/usr/bin/curl", "/etc/selinux/stellwerk/contexts/files/file_contexts",
                 f"/usr/lib/modules/{release}/modules.dep", "/usr/lib/systemd/system-preset/80-stellwerk.preset"):
        assert path in listing, path
    shared_identities = [p for p in listing if p.startswith(("/etc/ssh/ssh_host_", "/etc/nvme/host"))]
    assert not shared_identities, "every node would have the same identity"
    assert not [p for p in listing if p.startswith(("/var/lib/apt/lists/", "/usr/share/man/"))]
    assert not [p for p in listing if "ignition" in Path(p).name], "Ignition belongs to the initrd only"
    assert len([p for p in listing if p.endswith(".ko")]) < 300
    machine_id = subprocess.run(["unsquashfs", "-cat", str(squashfs), "etc/machine-id"], capture_output=True,
                                text=True, check=True).stdout
    assert machine_id == "uninitialized\n"


# ----------------------------------------------------------------------------- booting it

INSTALL_SERIAL = "stw-install"
DATA_SERIAL = "stw-data"
CHECK_SCRIPT = b"""#!/bin/sh
# Runs at the end of every boot of the test node: one line for the console (the unit sends it there).
boots=$(( $(cat /var/lib/stellwerk-test/boots 2>/dev/null || echo 0) + 1 ))
mkdir -p /var/lib/stellwerk-test && echo "$boots" >/var/lib/stellwerk-test/boots && sync
echo "STELLWERK-CHECK boot=$boots note=$(cat /etc/stellwerk-test/note) data=$(cat /var/mnt/data/hello)" \\
  "etcd=$(etcd --version | sed -n 's/^etcd Version: //p') wg=$(wg --version | cut -d' ' -f2)" \\
  "user=$(id -un core) networkd=$(systemctl is-active systemd-networkd)" \\
  "usr=$(findmnt -no FSTYPE /usr) root=$(findmnt -no FSTYPE /)" \\
  "state=$(findmnt -no SOURCE /run/stellwerk/state) ok"
"""
CHECK_UNIT = """[Unit]
Description=Stellwerk lab OS boot test
After=multi-user.target
RequiresMountsFor=/var/mnt/data

[Service]
Type=oneshot
ExecStart=/usr/local/bin/stellwerk-check
# systemd opens the console without making it the unit's terminal, so the
# serial getty starting meanwhile cannot hang it up
StandardOutput=journal+console
StandardError=journal+console
# power off even when the check fails, so the test ends at once either way
ExecStopPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""
DATA_MOUNT = """[Unit]
Description=Data disk of the boot test

[Mount]
What=/dev/disk/by-label/data
Where=/var/mnt/data
Type=xfs

[Install]
WantedBy=local-fs.target
"""


def etcd_image(directory: Path) -> bytes:
    """The lab OS's etcd sysext image, as render builds it for controllers: the host's etcd, for Debian 12."""
    from stellwerk.ignition.nodeos import node_os
    from stellwerk.sysext import build_image, extension_release

    lab = node_os("lab")
    binaries = {name: Path(path).read_bytes() for name, path in lab.host_binaries}
    build_image("etcd", binaries, extension_release("etcd", lab.extension_release, "test"), directory / "etcd.raw")
    return (directory / "etcd.raw").read_bytes()


def node_config(image_url: str, image: bytes) -> bytes:
    """What Stellwerk gives a lab node, cut down: the state filesystem, a data disk, a user, files, a unit, and
    etcd as a sysext image fetched by its sha512."""
    install = f"/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_{INSTALL_SERIAL}"
    data = f"/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_{DATA_SERIAL}"
    config = model.Config(
        filesystems=(
            model.Filesystem(device=install, format="ext4", label=STATE_LABEL, wipe_filesystem=True),
            model.Filesystem(device=data, format="xfs", label="data", path="/var/mnt/data", wipe_filesystem=True),
        ),
        files=(
            model.File(path="/etc/stellwerk-test/note", contents=b"written-by-ignition\n"),
            model.File(path="/var/mnt/data/hello", contents=b"on-the-data-disk\n"),
            model.File(path="/usr/local/bin/stellwerk-check", contents=CHECK_SCRIPT, mode=0o755),
            model.File(path="/opt/extensions/etcd/etcd.raw", source=image_url,
                       verification="sha512-" + hashlib.sha512(image).hexdigest()),
        ),
        links=(model.Link(path="/etc/extensions/etcd.raw", target="/opt/extensions/etcd/etcd.raw", hard=False),),
        users=(model.User(name="core"),),
        units=(
            model.Unit(name="stellwerk-check.service", contents=CHECK_UNIT, enabled=True),
            model.Unit(name="var-mnt-data.mount", contents=DATA_MOUNT, enabled=True),
        ),
    )
    return model.dumps(config)


@contextmanager
def config_server(config: bytes) -> Iterator[tuple[str, list[str]]]:
    with http_server({"/config.ign": config}) as (url, requested):
        # QEMU's user-mode network shows the host's loopback to the guest as 10.0.2.2
        yield url.replace("127.0.0.1", "10.0.2.2") + "/config.ign", requested


@contextmanager
def node_config_server(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serves node_config() and the etcd image it fetches; yields the config's URL as the guest sees it."""
    image = etcd_image(directory)
    with http_server({"/etcd.raw": image}) as (image_url, _):
        config = node_config(image_url.replace("127.0.0.1", "10.0.2.2") + "/etcd.raw", image)
        ignition_engine.validate(config)
        with config_server(config) as served:
            yield served


def boot(lab_os: labos.LabOs, url: str, disks: list[qemu.Disk], console: Path, timeout: float,
         retry_wedged: bool = True) -> tuple[str, float]:
    """Boot once, until the guest powers off; returns the console and the seconds it took.

    A boot whose emulated NVMe controller wedged (QEMU 7.2 on a busy host: the guest logs I/O timeouts for a minute
    and more; see lab.lifecycle.wait_for_reports) is run again once, as the lab does, and said so."""
    from stellwerk.lab.lifecycle import NVME_STALL_RESTART, nvme_stalled_for

    append = [*KERNEL_ARGS, f"ignition.config.url={url}", "stellwerk.emergency=poweroff"]
    machine = qemu.Machine(kernel=lab_os.kernel, initrd=lab_os.initrd, append=append, console=console, disks=disks)
    started = time.monotonic()
    try:
        subprocess.run(machine.command(), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        text = console.read_text(errors="replace") if console.exists() else ""
        if retry_wedged and nvme_stalled_for(text) >= NVME_STALL_RESTART and "STELLWERK-CHECK" not in text:
            print(f"\n{console.name}: the VM's NVMe controller wedged (I/O timeouts for "
                  f"{nvme_stalled_for(text):.0f} s); booting it again, once")
            console.rename(console.with_name(console.name + ".wedged"))
            return boot(lab_os, url, disks, console, timeout, retry_wedged=False)
        pytest.fail(f"the guest did not power off within {timeout:.0f} s; console ends with:\n{text[-3000:]}")
    return console.read_text(errors="replace"), time.monotonic() - started


def check_line(console: str) -> dict[str, str]:
    lines = [line for line in console.splitlines() if "STELLWERK-CHECK" in line]
    assert len(lines) == 1, f"expected one check line, console ends with:\n{console[-3000:]}"
    assert lines[0].endswith(" ok"), "the check script did not run to its end"
    return dict(re.findall(r"(\S+?)=(\S*)", lines[0].split("STELLWERK-CHECK", 1)[1]))


def raw_disk(path: Path, size: str = "1G") -> Path:
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    return path


@pytest.mark.vm
def test_first_boot_runs_ignition_and_later_boots_keep_the_root(lab_os, tmp_path):
    require_tool("qemu-system-x86_64")
    disks = [qemu.Disk(raw_disk(tmp_path / "install.img"), INSTALL_SERIAL),
             qemu.Disk(raw_disk(tmp_path / "data.img", "512M"), DATA_SERIAL)]
    with node_config_server(tmp_path) as (url, requested):
        first, first_seconds = boot(lab_os, url, disks, tmp_path / "console-1.log", timeout=360)
        fetched_first = list(requested)
        second, second_seconds = boot(lab_os, url, disks, tmp_path / "console-2.log", timeout=240)
        fetched_second = requested[len(fetched_first):]
    print(f"\nfirst boot {first_seconds:.0f} s, second boot {second_seconds:.0f} s, "
          f"accelerator {'kvm' if qemu.kvm_works() else 'tcg'}")

    # (twice only if a wedged first boot was run again before Ignition had finished)
    assert fetched_first in (["/config.ign"], ["/config.ign"] * 2) and (
        len(fetched_first) == 1 or (tmp_path / "console-1.log.wedged").exists())
    assert "stellwerk: first boot: running Ignition" in first
    check = check_line(first)
    assert check == {"boot": "1", "note": "written-by-ignition", "data": "on-the-data-disk",
                     "etcd": check["etcd"], "wg": check["wg"], "user": "core", "networkd": "active",
                     "usr": "overlay", "root": "overlay", "state": "/dev/nvme0n1"}
    # etcd is not in the image: it ran from the sysext image Ignition fetched, merged over /usr by systemd-sysext.
    assert re.fullmatch(r"3\.\d+\.\d+", check["etcd"]) and check["wg"].startswith("v1.")

    assert fetched_second == [], "a later boot must not fetch the Ignition config"
    assert "Ignition does not run" in second and "Ignition: " not in second
    again = check_line(second)
    assert again["boot"] == "2", "what the first boot wrote at run time must survive the reboot"
    assert {k: again[k] for k in ("note", "data", "user", "state")} == {
        "note": "written-by-ignition", "data": "on-the-data-disk", "user": "core", "state": "/dev/nvme0n1"}


@pytest.mark.vm
def test_a_failing_ignition_stops_the_boot_loudly(lab_os, tmp_path):
    require_tool("qemu-system-x86_64")
    broken = json.dumps({"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "relative/path"}]}}).encode()
    install = raw_disk(tmp_path / "install.img")
    with config_server(broken) as (url, requested):
        console, seconds = boot(lab_os, url, [qemu.Disk(install, INSTALL_SERIAL)], tmp_path / "console.log",
                                timeout=240)
    print(f"\nfailed boot {seconds:.0f} s")
    assert requested == ["/config.ign"]
    assert "path not absolute" in console  # Ignition's own complaint, on the console
    assert "stellwerk: BOOT FAILED: Ignition's fetch stage failed" in console
    assert "initrd-switch-root" not in console and "STELLWERK-CHECK" not in console
    with install.open("rb") as disk:
        assert disk.read(1 << 20) == bytes(1 << 20), "nothing may touch the disks after a failed fetch"
