"""Sysext images end to end: built by `stellwerk images sysext`, merged by the real systemd-sysext, served by
netboot and fetched and checked by the real Ignition; pinned downloads checked by their sha256."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.clusters import write_cluster
from support.ignition_engine import apply, require_engine, validate
from support.netboot_servers import secure_server
from support.paths import REPO
from support.sysext import build_images
from support.tools import require_tool
from support.webserver import static_http

RACK = REPO / "examples/rack-cluster.yaml"
FLATCAR_OS_RELEASE = "ID=flatcar\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n"


def merged(root: Path, os_release: str, image: Path, extension: str, command: str) -> subprocess.CompletedProcess:
    """Merge `image` into a scratch root with the real systemd-sysext, in a mount namespace of its own, and run
    `command` there (it sees the merged /usr under `root`)."""
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(os_release)
    (root / "etc/extensions").mkdir(parents=True)
    shutil.copy(image, root / f"etc/extensions/{extension}.raw")
    # systemd-sysext makes /run a slave mount; a private tmpfs gives it one wherever this runs.
    script = (f"mount --make-rprivate / && mount --make-rshared / && mount -t tmpfs tmpfs /run && "
              f"systemd-sysext --root={root} merge && {command}")
    return subprocess.run(["unshare", "-m", "--propagation", "unchanged", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(autouse=True)
def own_build_cache(tmp_path, monkeypatch):
    # Each test builds for itself: a build copied from another test's cache would prove nothing about this one.
    monkeypatch.setenv("STELLWERK_IMAGES_CACHE", str(tmp_path / "images-cache"))


@pytest.fixture
def rack_images(tmp_path) -> Path:
    for tool in ("mksquashfs", "systemd-sysext", "unshare", "etcd"):
        require_tool(tool)
    assets = tmp_path / "assets"
    build_images(RACK, assets)
    return assets


def test_an_image_holds_the_binaries_and_its_release_and_merges_over_usr_on_flatcar_only(rack_images, tmp_path):
    record = json.loads((rack_images / "boot/sysext/extensions.json").read_text())["extensions"]
    assert sorted(record) == ["etcd", "kubernetes"]
    etcd = rack_images / "boot/sysext" / record["etcd"]["image"]
    assert record["etcd"]["sha512"] == hashlib.sha512(etcd.read_bytes()).hexdigest()
    listing = subprocess.run(["unsquashfs", "-lls", "-d", "", str(etcd)], capture_output=True, text=True, check=True)
    files = sorted(line.split()[-1] for line in listing.stdout.splitlines() if line.startswith("-"))
    assert files == ["/usr/bin/etcd", "/usr/bin/etcdctl", "/usr/lib/extension-release.d/extension-release.etcd"]
    assert all(" root/root " in line for line in listing.stdout.splitlines() if line[:1] in "-d")

    # The same binaries give the same bytes: a second build elsewhere (without the build cache), and a rebuild in
    # place, change nothing.
    shutil.rmtree(tmp_path / "images-cache")
    again = tmp_path / "again"
    build_images(RACK, again)
    assert (again / "boot/sysext" / etcd.name).read_bytes() == etcd.read_bytes()
    assert all(line.startswith("unchanged ") for line in build_images(RACK, rack_images)[:-1])

    flatcar = merged(tmp_path / "flatcar", FLATCAR_OS_RELEASE, etcd, "etcd",
                     f"{tmp_path}/flatcar/usr/bin/etcd --version && "
                     f"cat {tmp_path}/flatcar/usr/lib/extension-release.d/extension-release.etcd")
    assert flatcar.returncode == 0, flatcar.stderr
    real = subprocess.run([shutil.which("etcd"), "--version"], capture_output=True, text=True).stdout
    assert flatcar.stdout.startswith(real) and "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n" in flatcar.stdout
    assert "STELLWERK_SOURCE=\"local binaries: etcd sha256:" in flatcar.stdout

    # Another OS is refused by systemd-sysext itself: the image's release fields say Flatcar.
    debian = merged(tmp_path / "debian", "ID=debian\nVERSION_ID=12\n", etcd, "etcd", "true")
    assert not (tmp_path / "debian/usr/bin/etcd").exists()
    assert "1 ignored due to incompatible version" in debian.stderr


def tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_pinned_files_are_downloaded_checked_and_unpacked_and_a_different_file_is_refused(tmp_path):
    from stellwerk.base.errors import UserError
    from stellwerk.binaries import Artifact
    from stellwerk.sysext import binaries_from_artifacts, install_image, pinned_source
    from stellwerk.release import UpstreamManifest
    from stellwerk.upstream import fetch, read_cached

    require_tool("mksquashfs")
    etcd, etcdctl = Path(shutil.which("etcd")).read_bytes(), Path(shutil.which("etcdctl")).read_bytes()
    archive = tarball({"etcd-v9.9.9-linux-amd64/etcd": etcd, "etcd-v9.9.9-linux-amd64/etcdctl": etcdctl})
    www = tmp_path / "www"
    www.mkdir()
    (www / "etcd-v9.9.9-linux-amd64.tar.gz").write_bytes(archive)
    cache = tmp_path / "cache"
    with static_http(www) as base:
        artifact = Artifact("etcd", "9.9.9", f"{base}/etcd-v9.9.9-linux-amd64.tar.gz",
                            hashlib.sha256(archive).hexdigest(),
                            members=(("etcd-v9.9.9-linux-amd64/etcd", "etcd"),
                                     ("etcd-v9.9.9-linux-amd64/etcdctl", "etcdctl")))
        pin = UpstreamManifest("etcd", "etcd", "9.9.9", artifact.url, artifact.sha256, None)
        fetch([pin], cache)
        # The same URL with one byte changed on the server: refused, and nothing of it is kept.
        (www / "etcd-v9.9.9-linux-amd64.tar.gz").write_bytes(archive[:-1] + bytes([archive[-1] ^ 1]))
        other = UpstreamManifest("etcd", "etcd", "9.9.9", artifact.url, hashlib.sha256(b"x").hexdigest(), None)
        with pytest.raises(UserError, match="not the pinned"):
            fetch([other], tmp_path / "other-cache")
    assert not list((tmp_path / "other-cache").rglob("*")) or not any(
        p.is_file() for p in (tmp_path / "other-cache").rglob("*"))
    binaries = binaries_from_artifacts([artifact], lambda a: read_cached(cache, pin))
    assert binaries == {"etcd": etcd, "etcdctl": etcdctl}
    built = install_image(tmp_path / "assets", "etcd", "9.9.9", binaries, pinned_source([artifact]),
                          (("ID", "flatcar"), ("SYSEXT_LEVEL", "1.0")))
    assert built.state == "built" and built.image.image == "etcd-v9.9.9-x86-64.raw" and built.image.pinned
    assert built.image.source == f"{artifact.url} sha256:{artifact.sha256}"


def test_the_release_pins_are_enforced_on_a_mirror(tmp_path, run_cli):
    # An air-gapped mirror holding some other etcd archive under the pinned name is refused, naming both digests.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "etcd-v3.5.16-linux-amd64.tar.gz").write_bytes(tarball({"etcd-v3.5.16-linux-amd64/etcd": b"x"}))
    result = run_cli("images", "sysext", RACK, "-o", tmp_path / "assets", "--mirror", mirror,
                     "--binary", f"kubelet={shutil.which('true')}", "--binary", f"kubectl={shutil.which('true')}",
                     "--cache-dir", tmp_path / "cache")
    assert result.code == 2 and "Traceback" not in result.err
    assert "not the pinned b414b27a5ad05f7cb01395c447c85d3227e3fb1c176e51757a283b817f645ccc" in result.err
    assert not list((tmp_path / "assets").glob("boot/sysext/etcd-*"))
    # An extension takes all of its binaries from --binary or none.
    half = run_cli("images", "sysext", RACK, "-o", tmp_path / "assets", "--binary", f"kubelet={shutil.which('true')}")
    assert half.code == 2 and "takes all of kubelet, kubectl from --binary or none; missing: kubectl" in half.err
    unknown = run_cli("images", "sysext", RACK, "--binary", "kube-proxy=/bin/true")
    assert unknown.code == 2 and "'kube-proxy' is not a binary of any extension" in unknown.err


def test_ignition_fetches_each_image_from_netboot_by_its_sha512_and_refuses_a_corrupted_one(rack_images, tmp_path):
    from stellwerk.render import render

    require_engine()
    cluster = write_cluster(tmp_path, RACK.read_text().replace("http://10.213.0.2:8080/", "http://127.0.0.1:9/"))
    render(cluster, rack_images, cache_dir=tmp_path / "empty-cache")
    with secure_server(rack_images) as server:
        # Rendered again with the port netboot got, as an operator renders for the address netboot serves on.
        cluster.write_text(RACK.read_text().replace("http://10.213.0.2:8080/", f"{server.url}/"))
        render(cluster, rack_images, cache_dir=tmp_path / "empty-cache")
        config = (rack_images / "nodes/c1/ignition.json").read_bytes()
        validate(config)
        root = tmp_path / "c1"
        apply(config, root, online=True)
        record = json.loads((rack_images / "boot/sysext/extensions.json").read_text())["extensions"]
        for name in ("kubernetes", "etcd"):
            image = record[name]["image"]
            placed = root / "opt/extensions" / name / image
            assert placed.read_bytes() == (rack_images / "boot/sysext" / image).read_bytes()
            link = root / f"etc/extensions/{name}.raw"
            assert link.is_symlink() and str(link.readlink()) == f"/opt/extensions/{name}/{image}"

        # The same config against a corrupted image on the server: Ignition stops at the hash, nothing is placed.
        served = rack_images / "boot/sysext" / record["etcd"]["image"]
        served.write_bytes(served.read_bytes()[:-4096] + b"\0" * 4096)
        with pytest.raises(AssertionError, match="hash"):
            apply(config, tmp_path / "c1-corrupted", online=True)
        assert not (tmp_path / "c1-corrupted/opt/extensions/etcd" / record["etcd"]["image"]).exists()


def test_the_lab_check_names_an_etcd_that_is_not_from_the_rendered_image():
    from stellwerk.lab.checks import check_etcd_image

    image = "ab" * 64  # the sha512 the node's rendered config checks the image by
    facts = ("ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\nSTELLWERK_EXTENSION=etcd\nSTELLWERK_SOURCE=\"this host's "
             "/usr/bin/etcd sha256:00\"\nIMAGE=/opt/extensions/etcd/etcd-local-0123456789ab-x86-64.raw\n"
             f"IMAGE_SHA512={'ab' * 64}\nUSR_FSTYPE=overlay\nETCD=/usr/bin/etcd\n")
    good = check_etcd_image("c1", {"etcdExtension": facts}, image)
    assert good.ok and "from the sysext etcd-local-0123456789ab-x86-64.raw" in good.detail
    assert "built from this host's /usr/bin/etcd" in good.detail
    other = check_etcd_image("c1", {"etcdExtension": facts.replace("ab" * 64, "cd" * 64)}, image)
    assert not other.ok and "its image has sha512 cdcdcdcdcdcdcdcd…, render gave abababababababab…" in other.detail
    unmerged = check_etcd_image("c1", {"etcdExtension": facts.replace("USR_FSTYPE=overlay", "USR_FSTYPE=")}, image)
    assert not unmerged.ok and "systemd-sysext did not merge it (/usr is not a mount)" in unmerged.detail
    assert not check_etcd_image("c1", {"etcdExtension": ""}, image).ok
    assert "its rendered config fetches no etcd sysext image" in check_etcd_image("c1", {"etcdExtension": facts},
                                                                                   None).detail


def test_a_cached_build_is_checked_before_it_is_used(tmp_path):
    from stellwerk.sysext import build_cache_dir

    first = tmp_path / "first"
    build_images(RACK, first)
    [cached] = [path for path in build_cache_dir().glob("*.raw")
                if path.read_bytes() == next(first.glob("boot/sysext/etcd-*.raw")).read_bytes()]
    cached.write_bytes(cached.read_bytes()[:-4096] + b"\0" * 4096)  # as a changed or half-written cache file
    second = tmp_path / "second"
    build_images(RACK, second)
    assert next(second.glob("boot/sysext/etcd-*.raw")).read_bytes() == next(first.glob("boot/sysext/etcd-*.raw")).read_bytes()


@pytest.mark.parametrize("change, message", [
    (lambda e: e["etcd"].update(image="../../../../../etc/hostname"), "image '../../../../../etc/hostname' is not"),
    (lambda e: e["etcd"].update(version=5), "wants exactly the text fields"),
    (lambda e: e.update(kube={}), "no extension is called 'kube'"),
    (lambda e: e["etcd"].update(sha512="00"), "sha512 is not 128 hex digits"),
])
def test_a_record_that_was_tampered_with_stops_render(rack_images, run_cli, change, message):
    record = rack_images / "boot/sysext/extensions.json"
    document = json.loads(record.read_text())
    change(document["extensions"])
    record.write_text(json.dumps(document))
    result = run_cli("render", RACK, "-o", rack_images)
    assert result.code == 2 and "Traceback" not in result.err and message in result.err, result.err
    assert "run `stellwerk images sysext` again" in result.err


def test_an_image_built_for_another_os_is_refused_and_the_labs_own_is_the_same_whichever_command_built_it(
        tmp_path, run_cli):
    from support.paths import EXAMPLE

    # The lab's etcd comes from this host: render builds it, and `images sysext` then finds the same image.
    lab = tmp_path / "lab"
    assert run_cli("render", EXAMPLE, "-o", lab).code == 0
    [built] = lab.glob("boot/sysext/etcd-*.raw")
    again = run_cli("images", "sysext", EXAMPLE, "-o", lab)
    assert again.code == 0 and again.out.startswith("unchanged "), again.out + again.err
    # The same assets moved to Flatcar: the lab's image says ID=debian, so Flatcar's systemd-sysext would refuse it.
    flatcar = write_cluster(tmp_path, EXAMPLE.read_text().replace("family: lab", "family: flatcar"))
    record = json.loads((lab / "boot/sysext/extensions.json").read_text())
    record["extensions"]["kubernetes"] = {**record["extensions"]["etcd"], "name": "kubernetes",
                                          "image": built.name.replace("etcd-", "kubernetes-")}
    (lab / "boot/sysext/extensions.json").write_text(json.dumps(record))
    refused = run_cli("render", flatcar, "-o", lab)
    assert refused.code == 2 and "was built for ID=debian VERSION_ID=12" in refused.err, refused.err
    assert "would refuse it on ID=flatcar SYSEXT_LEVEL=1.0" in refused.err


def test_an_unwritable_sysext_folder_is_a_clear_error(tmp_path, run_cli):
    from support.paths import EXAMPLE

    lab = tmp_path / "lab"
    assert run_cli("render", EXAMPLE, "-o", lab).code == 0
    shutil.rmtree(lab / "boot/sysext")
    (lab / "boot/sysext").write_text("not a folder")
    result = run_cli("render", EXAMPLE, "-o", lab)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{lab / 'boot/sysext'}" in result.err
