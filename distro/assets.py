"""Writing the derived part of an assets directory.

Files whose bytes and mode are already on disk are left alone (same mtime, no
write). Changed files are staged in a temporary directory inside the assets
directory and renamed into place only once every file has been rendered, so a
failure midway leaves the previous assets intact. Files of a
node or component that is gone from the cluster file are removed, and the
report says so. The secret trees (pki/, wireguard/) are never touched here.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Trees whose whole content is derived from the cluster file.
DERIVED_TREES = ("nodes", "manifests", "netboot")
SECRET_TREES = ("pki", "wireguard")


@dataclass(frozen=True)
class AssetFile:
    data: bytes
    mode: int = 0o644


@dataclass
class WriteReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def write_assets(root: Path, files: Iterable[tuple[str, AssetFile]]) -> WriteReport:
    """Write derived files as they come, holding at most one in memory.

    `files` may be a generator: each file is compared with the disk and, if it
    differs, staged right away. Only after the last one are staged files moved
    into place and stale files removed, so an error while rendering leaves the
    previous assets as they were.
    """
    root.mkdir(parents=True, exist_ok=True)
    report = WriteReport()
    wanted: set[str] = set()
    pending: list[str] = []
    made_dirs: set[Path] = set()
    staging: Path | None = None
    try:
        for relative, asset in files:
            _check_relative(relative)
            if relative in wanted:
                raise ValueError(f"asset path {relative!r} was rendered twice")
            wanted.add(relative)
            state = _compare(root / relative, asset)
            if state == "same":
                report.unchanged += 1
                continue
            (report.created if state == "missing" else report.updated).append(relative)
            if staging is None:
                staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
            _stage(staging / relative, asset, made_dirs)
            pending.append(relative)
        stale = _stale_files(root, wanted)
        if staging is not None:
            _move_into_place(staging, root, pending)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    for relative in stale:
        (root / relative).unlink()
        report.removed.append(relative)
    report.created.sort()
    report.updated.sort()
    _remove_empty_dirs(root)
    return report


def _check_relative(relative: str) -> None:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"asset path {relative!r} must be relative and inside the assets directory")
    if path.parts[0] in SECRET_TREES:
        raise ValueError(f"asset path {relative!r} is in a secrets tree, which only the secrets stage writes")


def _compare(path: Path, wanted: AssetFile) -> str:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(info.st_mode) or info.st_size != len(wanted.data) or stat.S_IMODE(info.st_mode) != wanted.mode:
        return "different"
    return "same" if path.read_bytes() == wanted.data else "different"


def _stale_files(root: Path, files: set[str]) -> list[str]:
    stale: list[str] = []
    for tree in DERIVED_TREES:
        base = root / tree
        if not base.is_dir():
            continue
        for directory, _, names in os.walk(base):
            for name in names:
                relative = os.path.relpath(os.path.join(directory, name), root)
                if relative not in files and not name.startswith(".staging-"):
                    stale.append(relative)
    return sorted(stale)


def _move_into_place(staging: Path, root: Path, pending: list[str]) -> None:
    """Rename staged files into the tree; a staged directory the tree lacks moves in one rename.

    On a first render that turns thousands of mkdir and rename calls into a few.
    """
    moved: set[PurePosixPath] = set()
    for relative in pending:
        parts = PurePosixPath(relative).parts
        if any(PurePosixPath(*parts[:depth]) in moved for depth in range(1, len(parts))):
            continue
        for depth in range(1, len(parts)):
            ancestor = PurePosixPath(*parts[:depth])
            if not (root / ancestor).exists():
                os.rename(staging / ancestor, root / ancestor)
                moved.add(ancestor)
                break
        else:
            os.replace(staging / relative, root / relative)


def _make_dir(directory: Path, made: set[Path]) -> None:
    if directory not in made:
        directory.mkdir(parents=True, exist_ok=True)
        made.add(directory)


def _stage(target: Path, asset: AssetFile, made_dirs: set[Path]) -> None:
    _make_dir(target.parent, made_dirs)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, asset.mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(asset.data)
    os.chmod(target, asset.mode)  # the umask may have narrowed the mode


def _remove_empty_dirs(root: Path) -> None:
    for tree in DERIVED_TREES:
        base = root / tree
        if not base.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(base), key=lambda entry: -len(entry[0])):
            if directory != str(base) and not os.listdir(directory):
                os.rmdir(directory)
