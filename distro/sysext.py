"""systemd-sysext images: the binaries a node OS lacks, as a squashfs that systemd-sysext merges over /usr.

An image holds usr/bin/<binary> for each binary and usr/lib/extension-release.d/extension-release.<name>, whose
fields (ID and SYSEXT_LEVEL or VERSION_ID, ARCHITECTURE) must match the host's os-release or systemd-sysext refuses
to merge it. The same binaries give byte-identical images: every file is owned by root with one timestamp, in a
reproducible squashfs, so an image's sha512 is a fact of its inputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .base.errors import Problem, UserError
from .base.fsutil import make_dirs
from .base.types import ExtensionImage
from .binaries import Artifact
from .extensions import ARCHITECTURE, BINARIES, SYSEXT_DIR, image_name, read_record, sha512_of, write_record

# zstd: the fastest to decompress of the compressors both Flatcar's and Debian's kernels read.
MKSQUASHFS_OPTIONS = ("-noappend", "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0", "-comp", "zstd",
                      "-quiet", "-no-progress")


def extension_release(name: str, os_fields: Sequence[tuple[str, str]], source: str) -> bytes:
    """The extension-release file: the host fields systemd-sysext matches, and where the binaries came from."""
    lines = [f"{key}={value}" for key, value in os_fields]
    lines += [f"ARCHITECTURE={ARCHITECTURE}", f"STELLWERK_EXTENSION={name}", f"STELLWERK_SOURCE=\"{source}\""]
    return ("\n".join(lines) + "\n").encode()


def build_image(name: str, binaries: Mapping[str, bytes], release: bytes, output: Path) -> None:
    """Write the image to `output` (replacing a partial one, never a different finished one: the caller checks)."""
    if shutil.which("mksquashfs") is None:
        raise UserError(Problem("mksquashfs", None, "", "is not installed; apt-get install squashfs-tools"))
    with tempfile.TemporaryDirectory(prefix="stellwerk-sysext-") as scratch:
        root = Path(scratch) / "root"
        bin_dir = root / "usr/bin"
        bin_dir.mkdir(parents=True)
        for binary, data in sorted(binaries.items()):
            (bin_dir / binary).write_bytes(data)
            (bin_dir / binary).chmod(0o755)
        release_dir = root / "usr/lib/extension-release.d"
        release_dir.mkdir(parents=True)
        (release_dir / f"extension-release.{name}").write_bytes(release)
        for directory in (root, root / "usr", bin_dir, root / "usr/lib", release_dir):
            directory.chmod(0o755)
        (release_dir / f"extension-release.{name}").chmod(0o644)
        partial = output.with_name(f".{output.name}.partial")
        partial.unlink(missing_ok=True)
        done = subprocess.run(["mksquashfs", str(root), str(partial), *MKSQUASHFS_OPTIONS],
                              capture_output=True, text=True)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise UserError(Problem(str(output), None, "", f"mksquashfs failed: {done.stderr.strip()[-500:]}"))
        partial.chmod(0o644)
        partial.replace(output)


def binaries_from_artifacts(artifacts: Sequence[Artifact], read: Callable[[Artifact], bytes]) -> dict[str, bytes]:
    """The binaries in verified artifacts: a binary as is, an archive's named members."""
    binaries = {}
    for artifact in artifacts:
        data = read(artifact)
        if not artifact.members:
            binaries[artifact.name] = data
            continue
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member_path, binary in artifact.members:
                try:
                    member = archive.getmember(member_path)
                    extracted = archive.extractfile(member) if member.isfile() else None
                except KeyError:
                    extracted = None
                if extracted is None:
                    raise UserError(Problem(artifact.url, None, "", f"has no file {member_path}, which the pin "
                                            "says it holds"))
                binaries[binary] = extracted.read()
    return binaries


@dataclass(frozen=True)
class Built:
    image: ExtensionImage
    state: str  # "built", "unchanged"


def install_image(assets_dir: Path, name: str, version: str, binaries: Mapping[str, bytes], source: str,
                  os_fields: Sequence[tuple[str, str]]) -> Built:
    """Build extension `name` into the assets directory and record it; an existing different image is refused."""
    missing = [binary for binary in BINARIES[name] if binary not in binaries]
    if missing:
        raise UserError(Problem(name, None, "", f"the {name} extension needs {', '.join(BINARIES[name])}; "
                                f"missing: {', '.join(missing)}"))
    directory = assets_dir / SYSEXT_DIR
    file_name = image_name(name, version)
    target = directory / file_name
    release = extension_release(name, os_fields, source)
    try:
        make_dirs(directory)
        with tempfile.TemporaryDirectory(prefix=".sysext-", dir=directory) as scratch:
            fresh = Path(scratch) / file_name
            cached_build(name, binaries, release, fresh)
            digest = sha512_of(fresh)
            try:
                os.link(fresh, target)  # never over a file that is there, even one placed a moment ago
                state = "built"
            except FileExistsError:
                if target.is_symlink() or not target.is_file() or sha512_of(target) != digest:
                    raise UserError(Problem(str(target), None, "", "exists with other contents than this build "
                                            "gives; move it away first (Stellwerk never overwrites an image)"))
                state = "unchanged"
    except OSError as exc:
        raise UserError(Problem(str(exc.filename or directory), None, "", f"cannot write the {name} sysext image: "
                                f"{exc.strerror or exc}; make {directory} a writable directory")) from None
    image = ExtensionImage(name=name, version=version, image=file_name, sha512=digest, source=source,
                           os_release=os_release_text(os_fields))
    record = read_record(assets_dir)
    record[name] = image
    write_record(assets_dir, record)
    return Built(image, state)


def os_release_text(os_fields: Sequence[tuple[str, str]]) -> str:
    """The OS an image is for, as its extension-release says: "ID=flatcar SYSEXT_LEVEL=1.0"."""
    return " ".join(f"{key}={value}" for key, value in os_fields)


def local_version(binaries: Mapping[str, bytes], os_fields: Sequence[tuple[str, str]]) -> str:
    """The version of an image built from local binaries: a digest of them and of the OS it is for, since the
    binaries carry no version Stellwerk can trust."""
    digest = hashlib.sha256()
    for binary, data in sorted(binaries.items()):
        digest.update(f"{binary}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    for key, value in os_fields:
        digest.update(f"{key}={value}\n".encode())
    return f"local-{digest.hexdigest()[:12]}"


def local_source(binaries: Mapping[str, bytes]) -> str:
    return "local binaries: " + ", ".join(f"{binary} sha256:{hashlib.sha256(data).hexdigest()}"
                                          for binary, data in sorted(binaries.items()))


def pinned_source(artifacts: Sequence[Artifact]) -> str:
    return ", ".join(f"{artifact.url} sha256:{artifact.sha256}" for artifact in artifacts)


# Builds are a function of their inputs, so one made before (another assets directory, an earlier render) is
# copied instead of squashed again; a cache that cannot be written only costs the time.
BUILD_CACHE_VERSION = 1


def build_cache_dir() -> Path:
    return Path(os.environ.get("STELLWERK_IMAGES_CACHE", "/var/cache/stellwerk/images")) / "sysext"


def cached_build(name: str, binaries: Mapping[str, bytes], release: bytes, output: Path) -> None:
    key = hashlib.sha256(json.dumps({
        "version": BUILD_CACHE_VERSION, "name": name, "release": release.decode(), "options": MKSQUASHFS_OPTIONS,
        "binaries": {binary: hashlib.sha256(data).hexdigest() for binary, data in sorted(binaries.items())},
    }, sort_keys=True).encode()).hexdigest()
    cached = build_cache_dir() / f"{key}.raw"
    try:
        if cached.is_file():
            shutil.copyfile(cached, output)
            output.chmod(0o644)
            if holds(output, name, binaries, release):
                return
    except OSError:
        pass
    build_image(name, binaries, release, output)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        shutil.copyfile(output, partial)
        partial.replace(cached)
    except OSError:
        pass


def holds(image: Path, name: str, binaries: Mapping[str, bytes], release: bytes) -> bool:
    """Whether `image` holds exactly these binaries and this release file (a cached build is checked, not trusted:
    its sha512 is what the nodes will be told to accept)."""
    wanted = {f"usr/bin/{binary}": data for binary, data in binaries.items()}
    wanted[f"usr/lib/extension-release.d/extension-release.{name}"] = release
    listing = subprocess.run(["unsquashfs", "-lc", "-d", "", str(image)], capture_output=True, text=True)
    if listing.returncode != 0 or sorted(line.lstrip("/") for line in listing.stdout.split()) != sorted(wanted):
        return False
    for path, data in wanted.items():
        found = subprocess.run(["unsquashfs", "-cat", str(image), path], capture_output=True)
        if found.returncode != 0 or hashlib.sha256(found.stdout).digest() != hashlib.sha256(data).digest():
            return False
    return True


def build_from_host(assets_dir: Path, needed: set[str], host_binaries: Sequence[tuple[str, str]],
                    os_fields: Sequence[tuple[str, str]]) -> list[Built]:
    """Build the needed extensions that the node OS takes from the host's own binaries and that are not built yet
    (the lab OS's etcd is the host's Debian etcd); the rest is left to `stellwerk images sysext`."""
    host = dict(host_binaries)
    recorded = read_record(assets_dir)
    built = []
    for name in sorted(needed):
        names = BINARIES[name]
        if not all(binary in host for binary in names):
            continue
        if name in recorded and recorded[name].os_release == os_release_text(os_fields):
            continue
        binaries = {}
        for binary in names:
            try:
                binaries[binary] = Path(host[binary]).read_bytes()
            except OSError as exc:
                raise UserError(Problem(host[binary], None, "", f"the {name} sysext image is built from this host's "
                                        f"{binary}: {exc.strerror or exc}; install it (Debian: etcd-server, "
                                        "etcd-client), or build the image with `stellwerk images sysext --binary`"))
        # The same source text as `images sysext --binary` gives for these files: one image, whichever built it.
        built.append(install_image(assets_dir, name, local_version(binaries, os_fields), binaries,
                                   local_source(binaries), os_fields))
    return built
