"""The image build cache: entries keyed by the digest of everything that goes into them.

An entry is a directory `<cache>/<stage>/<key>/`, built in `<cache>/work/`
and renamed into place when complete, so an entry that exists is whole. A
lookup is a stat, which is what makes a cached build return at once. Builds
take an exclusive lock on the cache, so two builds never make the same entry
twice; lookups need no lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("/var/cache/stellwerk/images")
# How many entries per stage survive a build; older ones go.
KEEP = 3


def default_dir() -> Path:
    return Path(os.environ.get("STELLWERK_IMAGES_CACHE", str(DEFAULT_DIR)))


def key(inputs: dict[str, Any]) -> str:
    """The digest of `inputs` (JSON-able), stable across runs and dict orderings."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def source_digest(names: Iterable[str], package: str = "stellwerk.images") -> str:
    """Digest of the builder's own files: changing the code that makes an entry changes its key.

    `names` are paths inside the package; a name ending in "/" stands for every
    file below that directory.
    """
    digest = hashlib.sha256()
    root = resources.files(package)
    for name in sorted(names):
        for relative, item in _files(root, name):
            digest.update(relative.encode() + b"\0" + item.read_bytes() + b"\0")
    return digest.hexdigest()


def _files(root: Traversable, name: str) -> Iterator[tuple[str, Traversable]]:
    if not name.endswith("/"):
        yield name, root / name
        return
    directory = root / name.rstrip("/")
    for item in sorted(directory.iterdir(), key=lambda i: i.name):
        if item.is_file() and not item.name.endswith((".pyc", "~")):
            yield f"{name}{item.name}", item


class Cache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def entry(self, stage: str, digest: str) -> Path:
        return self.directory / stage / digest

    def lookup(self, stage: str, digest: str) -> Path | None:
        path = self.entry(stage, digest)
        return path if path.is_dir() else None

    def entries(self, stage: str) -> list[Path]:
        """Complete entries of a stage, newest first."""
        stage_dir = self.directory / stage
        if not stage_dir.is_dir():
            return []
        return sorted((p for p in stage_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def building(self, stage: str, digest: str) -> Iterator[Path]:
        """A fresh work directory; on success its `out/` becomes the entry. Call with the lock held."""
        work_root = self.directory / "work"
        work_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=work_root))
        try:
            (work / "out").mkdir()
            yield work
            target = self.entry(stage, digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            for item in (work / "out").iterdir():
                if item.is_file():
                    # Entries are shared (published files are hard links to them): no writes.
                    item.chmod(item.stat().st_mode & 0o555)
            os.rename(work / "out", target)
        finally:
            remove_tree(work)

    def touch(self, path: Path) -> None:
        """Mark an entry as just used, so pruning keeps it (best effort: a reader may not own the cache)."""
        try:
            os.utime(path)
        except OSError:
            pass

    def prune(self, stage: str, keep: int = KEEP) -> None:
        for old in self.entries(stage)[keep:]:
            shutil.rmtree(old, ignore_errors=True)

    def clean_work(self) -> None:
        """Remove work directories of builds that died (only called with the lock held)."""
        work_root = self.directory / "work"
        if work_root.is_dir():
            for leftover in work_root.iterdir():
                remove_tree(leftover)


def mounts_below(path: Path) -> list[str]:
    """Mount points inside `path`, deepest first."""
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # field 5 is the mount point, with spaces and the like octal-escaped
            mountpoint = line.split()[4].encode().decode("unicode_escape")
            if mountpoint.startswith(prefix):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that never descends into a mount.

    A build interrupted at the wrong moment can leave the host's /dev, /proc
    or /sys mounted inside its chroot; deleting through those would delete the
    host's device nodes. Mounts are detached first, and a tree that still has
    one is left alone.
    """
    if not path.exists():
        return
    for mountpoint in mounts_below(path):
        subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
    if mounts_below(path):
        return
    shutil.rmtree(path, ignore_errors=True)
