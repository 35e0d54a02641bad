"""A writer for "newc" cpio archives, the format the Linux kernel unpacks as an initramfs.

Written here rather than by calling `cpio` so the archive is the same for the
same inputs: entries are sorted, every parent directory comes before its
children, owners are root, every time stamp is one chosen epoch and inode
numbers are handed out in order. Device nodes (the initramfs needs
/dev/console before devtmpfs is mounted) are written as entries, so building
needs no mknod.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One member of the archive. `path` is relative, without a leading slash.

    Exactly one of `source` (a regular file copied from disk), `data` (a
    regular file's bytes) or `target` (a symlink) is set for files; directories
    and device nodes use none.
    """

    path: str
    mode: int
    source: Path | None = None
    data: bytes | None = None
    target: str | None = None
    rdev: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode)


def file_from(path: str, source: Path, mode: int | None = None) -> Entry:
    """A regular file with the content of `source`; its permission bits unless `mode` is given."""
    bits = stat.S_IMODE(source.stat().st_mode) if mode is None else mode
    return Entry(path, stat.S_IFREG | bits, source=source)


def file_data(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data=data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target=target)


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def tree(source: Path, prefix: str) -> list[Entry]:
    """Entries for everything below directory `source`, placed under `prefix` in the archive.

    Regular files, directories and symlinks only: a staging tree for an
    initramfs has nothing else, and anything else is a mistake worth an error.
    """
    entries = []
    for found in sorted(source.rglob("*")):
        name = str(PurePosixPath(prefix) / found.relative_to(source).as_posix())
        info = found.lstat()
        if stat.S_ISLNK(info.st_mode):
            entries.append(symlink(name, str(found.readlink())))
        elif stat.S_ISDIR(info.st_mode):
            entries.append(directory(name, stat.S_IMODE(info.st_mode)))
        elif stat.S_ISREG(info.st_mode):
            entries.append(file_from(name, found))
        else:
            raise ValueError(f"{found}: only files, directories and symlinks can go into the initramfs")
    return entries


def _normalised(entries: Iterable[Entry]) -> list[Entry]:
    """Sorted by path components, with missing parent directories added and duplicates refused."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = str(PurePosixPath(entry.path))
        if path.startswith("/") or path in (".", "") or ".." in PurePosixPath(path).parts:
            raise ValueError(f"cpio entry {entry.path!r}: paths are relative and stay inside the archive")
        entry = replace(entry, path=path)
        existing = by_path.setdefault(path, entry)
        # The same directory named twice is harmless; two different things at one path is a bug.
        if existing != entry and not existing.kind == entry.kind == stat.S_IFDIR:
            raise ValueError(f"cpio entry {path!r} given twice with different contents")
    for path in list(by_path):
        for parent in PurePosixPath(path).parents:
            if str(parent) != ".":
                by_path.setdefault(str(parent), directory(str(parent)))
    for path, entry in by_path.items():
        parent = str(PurePosixPath(path).parent)
        if parent != "." and by_path[parent].kind != stat.S_IFDIR:
            raise ValueError(f"cpio entry {path!r}: its parent {parent!r} is not a directory")
    # Sorting by components (not by string) keeps "a/b" right after "a", before "a-b".
    return [by_path[p] for p in sorted(by_path, key=lambda p: PurePosixPath(p).parts)]


def _header(*, ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    return MAGIC + b"".join(b"%08X" % value for value in fields) + name + b"\0"


def _pad(out: BinaryIO, written: int) -> int:
    padding = -written % 4
    out.write(b"\0" * padding)
    return padding


def write(out: BinaryIO, entries: Iterable[Entry], mtime: int) -> int:
    """Write a complete archive (with trailer) to `out`; returns the number of bytes written."""
    total = 0
    for ino, entry in enumerate(_normalised(entries), start=1):
        body = b""
        size = 0
        if entry.kind == stat.S_IFLNK:
            body = (entry.target or "").encode()
            size = len(body)
        elif entry.kind == stat.S_IFREG:
            if entry.data is not None:
                body = entry.data
                size = len(body)
            elif entry.source is not None:
                size = entry.source.stat().st_size
            if size >= 1 << 32:
                raise ValueError(f"cpio entry {entry.path!r} is larger than newc's 4 GiB limit")
        nlink = 2 if entry.kind == stat.S_IFDIR else 1
        header = _header(ino=ino, mode=entry.mode, nlink=nlink, mtime=mtime, size=size, rdev=entry.rdev,
                         name=entry.path.encode())
        out.write(header)
        total += len(header) + _pad(out, len(header))
        if entry.kind == stat.S_IFREG and entry.source is not None and entry.data is None:
            copied = _copy(entry.source, out)
            if copied != size:
                raise ValueError(f"{entry.source} changed size while it was archived")
        else:
            out.write(body)
        total += size + _pad(out, size)
    trailer = _header(ino=0, mode=0, nlink=1, mtime=0, size=0, rdev=(0, 0), name=TRAILER.encode())
    out.write(trailer)
    total += len(trailer) + _pad(out, len(trailer))
    return total


def _copy(source: Path, out: BinaryIO) -> int:
    copied = 0
    with source.open("rb") as f:
        while chunk := f.read(_CHUNK):
            out.write(chunk)
            copied += len(chunk)
    return copied
