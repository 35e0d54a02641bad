"""Talking to a Debian mirror: the state of a suite, package records, and .deb files.

The state of a suite is the digest of its signed `InRelease` file. That file
lists the digests of every package index, so one small download pins every
package version in the suite, the kernel included, and it changes only when
the suite does (point releases for a stable suite). The build cache keys on it.

Package records come from the indexes apt downloaded (and verified against
the signed InRelease) while mmdebstrap built the root, so the extra .deb files
the image needs (kernel, busybox, Ignition) are the versions of the same
snapshot and are checked against the digests in those indexes.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import requests

from ..base.errors import Problem, UserError

_CHUNK = 1 << 20


class MirrorUnreachable(UserError):
    """No answer from the mirror at all (as opposed to an answer that says no)."""


@dataclass(frozen=True)
class Mirror:
    url: str = "http://deb.debian.org/debian"
    suite: str = "bookworm"
    components: tuple[str, ...] = ("main",)
    architecture: str = "amd64"

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


@dataclass(frozen=True)
class SuiteState:
    inrelease_sha256: str
    epoch: int  # the suite's Date as Unix time: SOURCE_DATE_EPOCH of the build
    version: str  # e.g. "12.12", "" for suites without one


@dataclass(frozen=True)
class PackageRecord:
    name: str
    version: str
    filename: str  # path below the mirror's base URL
    sha256: str
    size: int
    depends: str


def probe(mirror: Mirror, timeout: float = 20.0) -> SuiteState:
    """Fetch the suite's InRelease; a UserError when the mirror or the suite is not there."""
    url = f"{mirror.base}/dists/{mirror.suite}/InRelease"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise MirrorUnreachable(Problem(mirror.base, None, "", f"Debian mirror unreachable: {_reason(exc)}")) from exc
    if response.status_code == 404:
        raise UserError(Problem(url, None, "", f"no suite {mirror.suite!r} on this mirror (HTTP 404)"))
    if response.status_code != 200:
        raise UserError(Problem(url, None, "", f"Debian mirror answered HTTP {response.status_code}"))
    return suite_state(response.content, url)


def suite_state(inrelease: bytes, where: str) -> SuiteState:
    fields = _release_fields(inrelease.decode("utf-8", "replace"))
    if "Date" not in fields:
        raise UserError(Problem(where, None, "", "is not a Debian InRelease file (no Date field)"))
    try:
        epoch = int(email.utils.parsedate_to_datetime(fields["Date"]).timestamp())
    except (TypeError, ValueError) as exc:
        raise UserError(Problem(where, None, "", f"unreadable Date {fields['Date']!r}")) from exc
    return SuiteState(hashlib.sha256(inrelease).hexdigest(), epoch, fields.get("Version", ""))


def _release_fields(text: str) -> dict[str, str]:
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        # The armour header ("Hash: SHA256") ends at the first blank line; the fields follow.
        text = text.split("\n\n", 1)[-1]
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the fields of the Release paragraph end at the first blank line
        match = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line)
        if match:
            fields[match.group(1)] = match.group(2)
    return fields


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    # requests nests the socket error deep in a repr; the innermost part is the useful one
    match = re.search(r"\[Errno -?\d+\] ([^')]+)", text)
    return match.group(1) if match else type(exc).__name__


def package_indexes(lists_dir: Path) -> list[Path]:
    """The binary package indexes apt left in a root's /var/lib/apt/lists."""
    found = sorted(lists_dir.glob("*_Packages"))
    if not found:
        raise FileNotFoundError(f"no package index in {lists_dir}")
    return found


def find_packages(indexes: Iterable[Path], names: Iterable[str]) -> dict[str, PackageRecord]:
    """Records of `names`, newest version when an index holds several."""
    wanted = set(names)
    found: dict[str, PackageRecord] = {}
    for index in indexes:
        for stanza in _stanzas(index, wanted):
            record = PackageRecord(stanza["Package"], stanza["Version"], stanza["Filename"], stanza["SHA256"],
                                   int(stanza["Size"]), stanza.get("Depends", ""))
            current = found.get(record.name)
            if current is None or _newer(record.version, current.version):
                found[record.name] = record
    return found


def _stanzas(index: Path, wanted: set[str]) -> Iterable[dict[str, str]]:
    """Stanzas of a Packages file whose Package is in `wanted` (only those are parsed)."""
    stanza: dict[str, str] | None = None
    with index.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Package: "):
                stanza = {"Package": line[9:].strip()} if line[9:].strip() in wanted else None
            elif stanza is not None:
                if line == "\n":
                    yield stanza
                    stanza = None
                elif not line[0].isspace() and ":" in line:
                    key, _, value = line.partition(":")
                    stanza[key] = value.strip()
        if stanza is not None:
            yield stanza


def _newer(a: str, b: str) -> bool:
    """Whether Debian version `a` sorts after `b` (dpkg's ordering, checked with dpkg itself)."""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


def first_dependency(record: PackageRecord) -> str:
    """The package a meta-package (like linux-image-amd64) stands for: its first dependency."""
    first = record.depends.split(",")[0].split("|")[0].strip()
    name = first.split(" ")[0].split(":")[0]
    if not name:
        raise ValueError(f"{record.name} {record.version} depends on nothing")
    return name


def download(mirror: Mirror, record: PackageRecord, cache: Path,
             progress: Callable[[int, int], None] | None = None, timeout: float = 60.0) -> Path:
    """The .deb of `record`, from the content-addressed cache or the mirror; its SHA256 is always checked."""
    target = cache / f"{record.sha256}.deb"
    if target.exists() and _sha256(target) == record.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = f"{mirror.base}/{record.filename}"
    digest = hashlib.sha256()
    done = 0
    fd, temporary = tempfile.mkstemp(dir=cache, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise UserError(Problem(url, None, "", f"HTTP {response.status_code} (is the mirror in sync?)"))
            for chunk in response.iter_content(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, record.size)
        if digest.hexdigest() != record.sha256:
            raise UserError(Problem(url, None, "", f"SHA256 {digest.hexdigest()} is not the index's {record.sha256}"))
        os.replace(temporary, target)
    except requests.RequestException as exc:
        raise UserError(Problem(url, None, "", f"download failed: {_reason(exc)}")) from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
