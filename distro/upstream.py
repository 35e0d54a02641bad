"""Upstream install manifests: download, verify and cache by content digest.

Every manifest is pinned in the release manifest by URL, version and sha256.
The cache is content-addressed (`<cache>/sha256/<digest>`), so a file in it is
the pinned file or nothing. Air-gapped sites copy the files into a mirror
directory and fetch from there instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .base.errors import Problem, UserError
from .base.fsutil import make_dirs
from .release import UpstreamManifest

Progress = Callable[[str, int, int | None], None]  # (name, bytes so far, total or None)
CHUNK = 1 << 16


def default_cache_dir() -> Path:
    configured = os.environ.get("STELLWERK_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stellwerk"


def cache_path(cache: Path, manifest: UpstreamManifest) -> Path:
    return cache / "sha256" / manifest.sha256


def read_cached(cache: Path, manifest: UpstreamManifest) -> bytes | None:
    """The pinned bytes if they are in the cache (checked again on every read), else None."""
    try:
        data = cache_path(cache, manifest).read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == manifest.sha256 else None


@dataclass(frozen=True)
class FetchResult:
    manifest: UpstreamManifest
    state: str  # "cached" (already there), "fetched" or "copied" (from a mirror)


def fetch(manifests: Iterable[UpstreamManifest], cache: Path, *, mirror: Path | None = None,
          progress: Progress | None = None, timeout: float = 60.0) -> list[FetchResult]:
    """Make every manifest available in the cache; raise UserError naming each one that failed."""
    results: list[FetchResult] = []
    problems: list[Problem] = []
    for manifest in manifests:
        if read_cached(cache, manifest) is not None:
            results.append(FetchResult(manifest, "cached"))
            continue
        try:
            if mirror is not None:
                _store(cache, manifest, _from_mirror(mirror, manifest, progress))
                results.append(FetchResult(manifest, "copied"))
            else:
                _store(cache, manifest, _download(manifest, progress, timeout))
                results.append(FetchResult(manifest, "fetched"))
        except _FetchError as exc:
            problems.append(Problem(exc.where, None, "", f"{manifest.name} {manifest.version}: {exc.message}"))
        except OSError as exc:
            where = exc.filename or (mirror if mirror is not None else cache)
            problems.append(Problem(str(where), None, "", f"{manifest.name} {manifest.version}: {exc.strerror or exc}; "
                                    "use a writable --cache-dir (and a readable --mirror)"))
    if problems:
        raise UserError(problems)
    return results


class _FetchError(Exception):
    def __init__(self, where: str, message: str):
        self.where, self.message = where, message
        super().__init__(message)


def _download(manifest: UpstreamManifest, progress: Progress | None, timeout: float) -> Iterable[bytes]:
    import requests

    try:
        response = requests.get(manifest.url, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise _FetchError(manifest.url, f"cannot download ({type(exc).__name__}); check the network, or use --mirror DIR") from None
    if response.status_code != 200:
        response.close()
        raise _FetchError(manifest.url, f"the server answered HTTP {response.status_code}; use --mirror DIR with a copy of the file")
    total = int(response.headers.get("Content-Length") or 0) or manifest.size

    def chunks() -> Iterable[bytes]:
        done = 0
        try:
            for chunk in response.iter_content(CHUNK):
                done += len(chunk)
                if progress:
                    progress(manifest.name, done, total)
                yield chunk
        except requests.RequestException as exc:
            raise _FetchError(manifest.url, f"the download broke off ({type(exc).__name__}); run the command again") from None
        finally:
            response.close()

    return chunks()


def _from_mirror(mirror: Path, manifest: UpstreamManifest, progress: Progress | None) -> Iterable[bytes]:
    """A mirror holds files by their upstream base name or by digest (sha256/<digest>)."""
    candidates = [mirror / Path(urlsplit(manifest.url).path).name, mirror / "sha256" / manifest.sha256,
                  mirror / manifest.name]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        names = ", ".join(str(path) for path in candidates)
        raise _FetchError(str(mirror), f"not in the mirror; put the file from {manifest.url} at one of: {names}")

    def chunks() -> Iterable[bytes]:
        done = 0
        with found.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                done += len(chunk)
                if progress:
                    progress(manifest.name, done, manifest.size)
                yield chunk

    return chunks()


def _store(cache: Path, manifest: UpstreamManifest, chunks: Iterable[bytes]) -> None:
    """Stream into a temporary file, verify size and digest, then rename into the cache."""
    target = cache_path(cache, manifest)
    make_dirs(target.parent)
    digest = hashlib.sha256()
    size = 0
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if manifest.size is not None and size > manifest.size:
                    raise _FetchError(manifest.url, f"is larger than the pinned {manifest.size} bytes; refusing it")
                digest.update(chunk)
                handle.write(chunk)
        if digest.hexdigest() != manifest.sha256:
            raise _FetchError(manifest.url, f"has sha256 {digest.hexdigest()}, not the pinned {manifest.sha256}; "
                              "the file is not the release Stellwerk was tested with, so it is not used")
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
