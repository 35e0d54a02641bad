"""Writing the derived part of an assets directory.

Files whose bytes and mode are already on disk are left alone (same mtime, no
write). Changed files are staged in a temporary directory inside the assets
directory and renamed into place only once every file has been rendered, so a
failure midway leaves the previous assets intact.

The writer records what it wrote in `.stellwerk-assets.json`. A file that the
previous render wrote and this one does not (the config of a removed node) is
removed and reported; nothing the writer did not write itself is ever removed.
The secret trees (pki/, wireguard/) are never touched here.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .base.errors import Problem, UserError
from .base.fsutil import make_dirs, replace_file
from .base.types import AssetFile

RECORD = ".stellwerk-assets.json"
SECRET_TREES = ("pki", "wireguard")


@dataclass
class WriteReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def claim_assets_dir(root: Path, cluster: str) -> None:
    """Make sure `root` is this cluster's assets directory, or empty; create it.

    Rendering into another cluster's directory would reuse its CA and replace
    its node configs; rendering into a directory of unrelated files could
    clobber them. Both are refused before anything is written.
    """
    try:
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise UserError(Problem(str(root), None, "", "is not a directory; choose another with -o"))
        if root.is_dir() and any(root.iterdir()):
            owner = _recorded_cluster(root)
            if owner is None:
                raise UserError(Problem(str(root), None, "",
                                        "is not empty and holds no Stellwerk assets; choose an empty or new directory with -o"))
            if owner != cluster:
                raise UserError(Problem(str(root), None, "",
                                        f"holds the assets of cluster {owner!r}; render {cluster!r} into its own directory with -o"))
        make_dirs(root)
        if _read_record(root) is None:
            # Claimed before the secrets stage writes anything, so a render that
            # fails midway still leaves a directory the next render recognizes.
            _write_record(root, cluster, [])
    except OSError as exc:
        raise UserError(Problem(str(root), None, "", f"cannot create the assets directory: {exc.strerror}; choose another with -o")) from None


def write_assets(root: Path, cluster: str, files: Iterable[tuple[str, AssetFile]]) -> WriteReport:
    """Write derived files as they come, holding at most one in memory.

    `files` may be a generator: each file is compared with the disk and, if it
    differs, staged right away. Only after the last one are staged files moved
    into place and stale files removed, so an error while rendering leaves the
    previous assets as they were.
    """
    report = WriteReport()
    wanted: list[str] = []
    seen: set[str] = set()
    pending: list[str] = []
    made_dirs: set[Path] = set()
    staging: Path | None = None
    try:
        for relative, asset in files:
            _check_relative(root, relative)
            if relative in seen:
                raise ValueError(f"asset path {relative!r} was rendered twice")
            seen.add(relative)
            wanted.append(relative)
            state = _compare(root / relative, asset)
            if state == "same":
                report.unchanged += 1
                continue
            (report.created if state == "missing" else report.updated).append(relative)
            if staging is None:
                staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
            _stage(staging / relative, asset, made_dirs)
            pending.append(relative)
        stale = sorted(set(_recorded_files(root)) - seen)
        if staging is not None:
            _move_into_place(staging, root, pending)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    for relative in stale:
        path = root / relative
        # Only regular files this writer wrote; never follow a link out of the tree.
        if not _inside(root, relative) or not path.is_file() or path.is_symlink():
            continue
        path.unlink()
        report.removed.append(relative)
        _remove_empty_parents(root, path.parent)
    _write_record(root, cluster, wanted)
    report.created.sort()
    report.updated.sort()
    return report


def _recorded_cluster(root: Path) -> str | None:
    record = _read_record(root)
    if record is not None:
        return record.get("cluster")
    try:  # assets written before the record existed
        import yaml

        lock = yaml.safe_load((root / "cluster.lock.yaml").read_text())
        return lock["metadata"]["name"]
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None


def _recorded_files(root: Path) -> list[str]:
    record = _read_record(root) or {}
    files = record.get("files", [])
    return [f for f in files if isinstance(f, str)]


def _read_record(root: Path) -> dict | None:
    try:
        record = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(root: Path, cluster: str, files: list[str]) -> None:
    data = (json.dumps({"cluster": cluster, "files": sorted(files)}, indent=1) + "\n").encode()
    path = root / RECORD
    if path.exists() and path.read_bytes() == data:
        return
    replace_file(path, data, 0o644)


def _check_relative(root: Path, relative: str) -> None:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts or relative == RECORD:
        raise ValueError(f"asset path {relative!r} must be relative and inside the assets directory")
    if path.parts[0] in SECRET_TREES:
        raise ValueError(f"asset path {relative!r} is in a secrets tree, which only the secrets stage writes")
    if not _inside(root, relative):
        raise UserError(Problem(str(root / path.parts[0]), None, "",
                                "is a symbolic link; the assets directory must hold its files itself"))


def _inside(root: Path, relative: str) -> bool:
    """True when no existing directory on the way to `relative` is a symbolic link."""
    current = root
    for part in PurePosixPath(relative).parts[:-1]:
        current = current / part
        if current.is_symlink():
            return False
    return True


def _compare(path: Path, wanted: AssetFile) -> str:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(info.st_mode) or info.st_size != len(wanted.data) or stat.S_IMODE(info.st_mode) != wanted.mode:
        return "different"
    return "same" if path.read_bytes() == wanted.data else "different"


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
        make_dirs(directory)  # 0755 whatever the umask: node configs must not be replaceable by others
        made.add(directory)


def _stage(target: Path, asset: AssetFile, made_dirs: set[Path]) -> None:
    _make_dir(target.parent, made_dirs)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), asset.mode)
        handle.write(asset.data)


def _remove_empty_parents(root: Path, directory: Path) -> None:
    while directory != root and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent
